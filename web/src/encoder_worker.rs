//! The encoder worker: the image encoder on WebGPU (burn's wgpu runtime), shared by every client
//! on the page as the decoder worker is. It starts the GPU device on the first weights, keeps one
//! [`EncoderSession`] per model's weights, and embeds images one at a time (the GPU queue would
//! serialise them anyway), answering with the embedding in the wire format the server sends.
//!
//! page → worker: `{kind: "weights", key, bytes}`, `{kind: "encode", client, key, id, model, bytes}`.
//! worker → page: `{kind: "ready"}`, `{kind: "weights_loaded", key, digest, ms}`,
//! `{kind: "encoded", client, id, ms, bytes}`, `{kind: "error", client?, key?, id?, stage, message}`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use segany_wasm::{Device, EncoderSession};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{bytes_field, error_reply, get, kind, message, string_field};

#[derive(Default)]
struct State {
    device: Option<Device>,
    sessions: HashMap<String, Rc<EncoderSession>>,
    /// Messages wait here while one is being handled (device start, weights, an embedding).
    queue: Vec<JsValue>,
    busy: bool,
}

type Shared = Rc<RefCell<State>>;

pub fn start() {
    console_error_panic_hook::set_once();
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let state: Shared = Rc::default();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        state.borrow_mut().queue.push(event.data());
        pump(&state);
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let _ = scope.post_message(&message("ready", &[]));
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now() -> f64 {
    scope().performance().map_or(0.0, |p| p.now())
}

/// Handles the queued messages in order, one at a time.
fn pump(state: &Shared) {
    let data = {
        let mut s = state.borrow_mut();
        if s.busy || s.queue.is_empty() {
            return;
        }
        s.busy = true;
        s.queue.remove(0)
    };
    let state = state.clone();
    spawn_local(async move {
        if let Err(e) = handle(&state, &data).await {
            let _ = scope().post_message(&error_reply(&data, e));
        }
        state.borrow_mut().busy = false;
        pump(&state);
    });
}

async fn device(state: &Shared) -> Result<Device, String> {
    if let Some(d) = state.borrow().device.clone() {
        return Ok(d);
    }
    let d = segany_wasm::webgpu_device().await?;
    state.borrow_mut().device = Some(d.clone());
    Ok(d)
}

async fn handle(state: &Shared, data: &JsValue) -> Result<(), String> {
    match kind(data).as_str() {
        "weights" => {
            let key = string_field(data, "key")?;
            let t = now();
            let device = device(state).await?;
            let session = EncoderSession::from_weights(bytes_field(data)?, &device)?;
            let digest = session.encoder_digest().to_string();
            state.borrow_mut().sessions.insert(key.clone(), Rc::new(session));
            let ms = now() - t;
            let msg = message("weights_loaded", &[("key", key.into()), ("digest", digest.into()), ("ms", ms.into())]);
            scope().post_message(&msg).map_err(|e| format!("{e:?}"))
        }
        "encode" => {
            let key = string_field(data, "key")?;
            let model = string_field(data, "model")?;
            let session = state.borrow().sessions.get(&key).cloned().ok_or("no encoder weights for this image")?;
            let t = now();
            let wire = session.embed(&bytes_field(data)?, &model).await?;
            let ms = now() - t;
            let buffer = Uint8Array::from(&wire[..]).buffer();
            let fields = [("client", get(data, "client")), ("id", get(data, "id")), ("ms", ms.into()), ("bytes", buffer.clone().into())];
            scope().post_message_with_transfer(&message("encoded", &fields), &Array::of1(&buffer)).map_err(|e| format!("{e:?}"))
        }
        other => Err(format!("unknown message kind '{other}'")),
    }
}
