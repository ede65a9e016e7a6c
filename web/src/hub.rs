//! The page's one decoder worker, shared by every client on it (the page's app, or each
//! `<segany-segmenter>` widget): one worker thread and one copy of each model's decoder weights,
//! however many widgets there are. Worker messages go to the client they name; weights are
//! fetched by the first client that wants them while later ones wait for the same load.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker};

use crate::protocol::{get, kind, message};

type Callback = Rc<dyn Fn(JsValue)>;

enum Weights {
    /// A client is downloading them; these clients wait.
    Fetching(Vec<u32>),
    /// The worker is loading them; these clients wait.
    Loading(Vec<u32>),
    /// In the worker, made from the encoder with this digest.
    Loaded(String),
}

struct Hub {
    worker: Worker,
    ready: bool,
    /// Messages posted before the worker could take them, with their transfer lists.
    queue: Vec<(js_sys::Object, Array)>,
    clients: HashMap<u32, Callback>,
    next_client: u32,
    weights: HashMap<String, Weights>,
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

/// The decoder worker, started from a small classic script (a Blob) so that its files may come
/// from another origin than the page's (the widget).
fn spawn_worker(assets: &str) -> Result<Worker, JsValue> {
    let js = serde_json::to_string(&format!("{assets}segany-decoder-worker.js")).expect("string");
    let wasm = serde_json::to_string(&format!("{assets}segany-decoder-worker_bg.wasm")).expect("string");
    let source = format!("importScripts({js});wasm_bindgen({{module_or_path:{wasm}}});");
    let options = BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = Blob::new_with_str_sequence_and_options(&Array::of1(&source.into()), &options)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    Worker::new(&url)
}

/// Registers a client (starting the worker from `assets` for the first); `callback` gets the
/// worker's messages about it. Returns the client's id.
pub fn register(assets: &str, callback: impl Fn(JsValue) + 'static) -> Result<u32, JsValue> {
    let fresh = HUB.with_borrow(|h| h.is_none());
    if fresh {
        let worker = spawn_worker(assets)?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| dispatch(e.data()));
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(|e: web_sys::ErrorEvent| {
            let msg = message("error", &[("stage", "worker".into()), ("message", e.message().into())]);
            dispatch(msg.into());
        });
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
        HUB.set(Some(Hub { worker, ready: false, queue: Vec::new(), clients: HashMap::new(), next_client: 1, weights: HashMap::new() }));
    }
    Ok(HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("started");
        let id = h.next_client;
        h.next_client += 1;
        h.clients.insert(id, Rc::new(callback));
        id
    }))
}

/// Forgets a client and frees its embedding in the worker.
pub fn unregister(client: u32) {
    HUB.with_borrow_mut(|h| {
        if let Some(h) = h {
            h.clients.remove(&client);
        }
    });
    post(message("release", &[("client", client.into())]), Array::new());
}

/// Posts a message to the worker, or queues it until the worker is ready.
pub fn post(msg: js_sys::Object, transfer: Array) {
    HUB.with_borrow_mut(|h| {
        let Some(h) = h else { return };
        if h.ready {
            let _ = h.worker.post_message_with_transfer(&msg, &transfer);
        } else {
            h.queue.push((msg, transfer));
        }
    });
}

pub fn want_weights(client: u32, key: &str) -> WeightsNeed {
    HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("registered");
        match h.weights.get_mut(key) {
            None => {
                h.weights.insert(key.to_string(), Weights::Fetching(vec![client]));
                WeightsNeed::Fetch
            }
            Some(Weights::Fetching(waiting) | Weights::Loading(waiting)) => {
                waiting.push(client);
                WeightsNeed::Wait
            }
            Some(Weights::Loaded(digest)) => WeightsNeed::Loaded(digest.clone()),
        }
    })
}

/// The downloaded weights: hands them to the worker (transferred, not copied).
pub fn weights_fetched(key: &str, bytes: Vec<u8>) {
    HUB.with_borrow_mut(|h| {
        let h = h.as_mut().expect("registered");
        if let Some(Weights::Fetching(waiting)) = h.weights.remove(key) {
            h.weights.insert(key.to_string(), Weights::Loading(waiting));
        }
    });
    let buffer = js_sys::Uint8Array::from(&bytes[..]).buffer();
    post(message("weights", &[("key", key.into()), ("bytes", buffer.clone().into())]), Array::of1(&buffer));
}

/// The download failed: the clients waiting for it are told, and a later want fetches again.
pub fn weights_failed(key: &str, error: &str) {
    let msg = message("error", &[("key", key.into()), ("stage", "weights".into()), ("message", error.into())]);
    dispatch(msg.into());
}

/// A worker message to the clients it concerns.
fn dispatch(data: JsValue) {
    let kind = kind(&data);
    let client = get(&data, "client").as_f64().map(|c| c as u32);
    let key = get(&data, "key").as_string();
    let mut flush = Vec::new();
    let targets: Vec<Callback> = HUB.with_borrow_mut(|h| {
        let Some(h) = h else { return Vec::new() };
        if kind == "ready" {
            h.ready = true;
            flush = std::mem::take(&mut h.queue);
            return Vec::new();
        }
        if let Some(c) = client {
            return h.clients.get(&c).cloned().into_iter().collect();
        }
        let Some(key) = key else {
            return h.clients.values().cloned().collect(); // the worker itself failed
        };
        let waiting = match h.weights.remove(&key) {
            Some(Weights::Fetching(w) | Weights::Loading(w)) => w,
            Some(loaded) => {
                h.weights.insert(key.clone(), loaded);
                Vec::new()
            }
            None => Vec::new(),
        };
        if kind == "weights_loaded" {
            let digest = get(&data, "digest").as_string().unwrap_or_default();
            h.weights.insert(key, Weights::Loaded(digest));
        }
        waiting.iter().filter_map(|c| h.clients.get(c).cloned()).collect()
    });
    for (msg, transfer) in flush {
        post(msg, transfer);
    }
    for callback in targets {
        callback(data.clone());
    }
}
