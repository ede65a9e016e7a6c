//! The page's workers, shared by every client on it (the page's app, or each
//! `<segany-segmenter>` widget): one decoder worker and, once a client embeds on WebGPU, one
//! encoder worker, with one copy of each model's weights however many widgets there are. Worker
//! messages go to the client they name; weights are fetched by the first client that wants them
//! while later ones wait for the same load.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker, WorkerOptions};

use crate::protocol::{get, kind, message};

type Callback = Rc<dyn Fn(JsValue)>;

/// Which worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Prompt encoder and mask decoder on the CPU (wasm): every client's clicks.
    Decoder,
    /// The image encoder on WebGPU.
    Encoder,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Decoder => "decoder",
            Role::Encoder => "encoder",
        }
    }
}

/// The encoder worker runs this before burn starts: it lets burn's shaders through browsers'
/// WebGPU (see the file).
const WEBGPU_FIXES_JS: &str = include_str!("../../crates/segany-wasm/src/webgpu_fixes.js");

enum Weights {
    /// A client is downloading them; these clients wait.
    Fetching(Vec<u32>),
    /// The worker is loading them; these clients wait.
    Loading(Vec<u32>),
    /// In the worker, made from the encoder with this digest.
    Loaded(String),
}

/// A worker and what waits for it.
struct Channel {
    worker: Worker,
    ready: bool,
    /// Messages posted before the worker could take them, with their transfer lists.
    queue: Vec<(js_sys::Object, Array)>,
}

struct Hub {
    /// Base URL of the workers' files.
    assets: String,
    channels: HashMap<Role, Channel>,
    clients: HashMap<u32, Callback>,
    next_client: u32,
    /// By key (URL), with the worker they go to.
    weights: HashMap<String, (Role, Weights)>,
}

thread_local! {
    static HUB: RefCell<Option<Hub>> = const { RefCell::new(None) };
}

/// What a client wanting decoder weights has to do.
pub enum WeightsNeed {
    /// Download them, then call [`weights_fetched`] (or [`weights_failed`]).
    Fetch,
    /// Nothing: another client's load is under way; `weights_loaded` will come.
    Wait,
    /// Nothing: they are loaded, from the encoder with this digest.
    Loaded(String),
}

/// A worker, started from a small classic script (a Blob) so that its files may come from
/// another origin than the page's (the widget).
fn spawn_worker(assets: &str, role: Role) -> Result<Channel, JsValue> {
    let params = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok());
    let param = |key: &str| params.as_ref().and_then(|p| p.get(key));
    // The decoder worker is built twice: with relaxed SIMD (fused multiply-adds) for browsers
    // that validate it, and plain. `?decoder_simd=plain` on the page's address takes the plain
    // build anyway (to compare the two).
    let relaxed = role == Role::Decoder && param("decoder_simd").as_deref() != Some("plain") && relaxed_simd();
    let name = format!("{assets}segany-{}-worker{}", role.name(), if relaxed { "-relaxed" } else { "" });
    let js = serde_json::to_string(&format!("{name}.js")).expect("string");
    let wasm = serde_json::to_string(&format!("{name}_bg.wasm")).expect("string");
    let prelude = if role == Role::Encoder { WEBGPU_FIXES_JS } else { "" };
    let source = format!("{prelude}\nimportScripts({js});wasm_bindgen({{module_or_path:{wasm}}});");
    let options = BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = Blob::new_with_str_sequence_and_options(&Array::of1(&source.into()), &options)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    // `?decoder_workers=1` on the page's address: the decoder works without its helper (to
    // measure what the second worker brings; see the decoder worker).
    let alone = role == Role::Decoder && param("decoder_workers").as_deref() == Some("1");
    let options = WorkerOptions::new();
    options.set_name(if alone { "segany-decoder-alone" } else { role.name() });
    let worker = Worker::new_with_options(&url, &options)?;
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| dispatch(role, e.data()));
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        let msg = message("error", &[("stage", "worker".into()), ("message", e.message().into())]);
        dispatch(role, msg.into());
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    Ok(Channel { worker, ready: false, queue: Vec::new() })
}

/// Whether this browser's WebAssembly has relaxed SIMD: it validates a module whose one function
/// is `f32x4.relaxed_madd` of three zero vectors.
fn relaxed_simd() -> bool {
    const ZERO: [u8; 18] = [0xfd, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut module = vec![
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // types: () -> v128
        0x03, 0x02, 0x01, 0x00, // functions: one of type 0
        0x0a, 0x3d, 0x01, 0x3b, 0x00, // code: one body of 59 bytes, no locals
    ];
    (0..3).for_each(|_| module.extend_from_slice(&ZERO)); // v128.const 0, three times
    module.extend_from_slice(&[0xfd, 0x85, 0x02, 0x0b]); // f32x4.relaxed_madd, end
    js_sys::WebAssembly::validate(&js_sys::Uint8Array::from(&module[..]).into()).unwrap_or(false)
}

/// Registers a client (starting the worker from `assets` for the first); `callback` gets the
/// worker's messages about it. Returns the client's id.
pub fn register(assets: &str, callback: impl Fn(JsValue) + 'static) -> Result<u32, JsValue> {
    let fresh = HUB.with_borrow(|h| h.is_none());
    if fresh {
        let decoder = spawn_worker(assets, Role::Decoder)?;
        HUB.set(Some(Hub {
            assets: assets.to_string(),
            channels: HashMap::from([(Role::Decoder, decoder)]),
            clients: HashMap::new(),
            next_client: 1,
            weights: HashMap::new(),
        }));
    }
    Ok(HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("started");
        let id = h.next_client;
        h.next_client += 1;
        h.clients.insert(id, Rc::new(callback));
        id
    }))
}

/// Forgets a client and frees its embedding in the decoder worker.
pub fn unregister(client: u32) {
    HUB.with_borrow_mut(|h| {
        if let Some(h) = h {
            h.clients.remove(&client);
        }
    });
    post(message("release", &[("client", client.into())]), Array::new());
}

/// Posts a message to the decoder worker, or queues it until the worker is ready.
pub fn post(msg: js_sys::Object, transfer: Array) {
    post_to(Role::Decoder, msg, transfer);
}

/// Posts a message to a worker (starting the encoder worker on its first message), or queues it
/// until the worker is ready.
pub fn post_to(role: Role, msg: js_sys::Object, transfer: Array) {
    HUB.with_borrow_mut(|h| {
        let Some(h) = h else { return };
        if !h.channels.contains_key(&role) {
            match spawn_worker(&h.assets, role) {
                Ok(channel) => {
                    h.channels.insert(role, channel);
                }
                Err(e) => {
                    web_sys::console::error_2(&"segany: cannot start a worker".into(), &e);
                    return;
                }
            }
        }
        let channel = h.channels.get_mut(&role).expect("started");
        if channel.ready {
            let _ = channel.worker.post_message_with_transfer(&msg, &transfer);
        } else {
            channel.queue.push((msg, transfer));
        }
    });
}

/// What `client` must do to have the weights at `key` in `role`'s worker.
pub fn want_weights(client: u32, key: &str, role: Role) -> WeightsNeed {
    HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("registered");
        match h.weights.get_mut(key) {
            None => {
                h.weights.insert(key.to_string(), (role, Weights::Fetching(vec![client])));
                WeightsNeed::Fetch
            }
            Some((_, Weights::Fetching(waiting) | Weights::Loading(waiting))) => {
                waiting.push(client);
                WeightsNeed::Wait
            }
            Some((_, Weights::Loaded(digest))) => WeightsNeed::Loaded(digest.clone()),
        }
    })
}

/// The downloaded weights: hands them to their worker (transferred, not copied).
pub fn weights_fetched(key: &str, bytes: Vec<u8>) {
    let role = HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("registered");
        match h.weights.remove(key) {
            Some((role, Weights::Fetching(waiting))) => {
                h.weights.insert(key.to_string(), (role, Weights::Loading(waiting)));
                role
            }
            Some((role, other)) => {
                h.weights.insert(key.to_string(), (role, other));
                role
            }
            None => Role::Decoder,
        }
    });
    let buffer = js_sys::Uint8Array::from(&bytes[..]).buffer();
    post_to(role, message("weights", &[("key", key.into()), ("bytes", buffer.clone().into())]), Array::of1(&buffer));
}

/// The download failed: the clients waiting for it are told, and a later want fetches again.
pub fn weights_failed(key: &str, error: &str) {
    let msg = message("error", &[("key", key.into()), ("stage", "weights".into()), ("message", error.into())]);
    let role = HUB.with_borrow(|h| h.as_ref().and_then(|h| h.weights.get(key)).map(|(r, _)| *r)).unwrap_or(Role::Decoder);
    dispatch(role, msg.into());
}

/// A worker message to the clients it concerns, with `worker` set to the role of the worker it
/// came from.
fn dispatch(role: Role, data: JsValue) {
    let _ = js_sys::Reflect::set(&data, &"worker".into(), &role.name().into());
    let kind = kind(&data);
    let client = get(&data, "client").as_f64().map(|c| c as u32);
    let key = get(&data, "key").as_string();
    let mut flush = Vec::new();
    let targets: Vec<Callback> = HUB.with_borrow_mut(|h| {
        let Some(h) = h else { return Vec::new() };
        if kind == "ready" {
            if let Some(channel) = h.channels.get_mut(&role) {
                channel.ready = true;
                flush = std::mem::take(&mut channel.queue);
            }
            return Vec::new();
        }
        if let Some(c) = client {
            return h.clients.get(&c).cloned().into_iter().collect();
        }
        let Some(key) = key else {
            // The worker itself failed: forget it and what was loading in it, so that a later
            // request starts afresh.
            if kind == "error" {
                h.channels.remove(&role);
                h.weights.retain(|_, (r, _)| *r != role);
            }
            return h.clients.values().cloned().collect();
        };
        let waiting = match h.weights.remove(&key) {
            Some((_, Weights::Fetching(w) | Weights::Loading(w))) => w,
            Some(loaded) => {
                h.weights.insert(key.clone(), loaded);
                Vec::new()
            }
            None => Vec::new(),
        };
        if kind == "weights_loaded" {
            let digest = get(&data, "digest").as_string().unwrap_or_default();
            h.weights.insert(key, (role, Weights::Loaded(digest)));
        }
        waiting.iter().filter_map(|c| h.clients.get(c).cloned()).collect()
    });
    for (msg, transfer) in flush {
        post_to(role, msg, transfer);
    }
    for callback in targets {
        callback(data.clone());
    }
}
