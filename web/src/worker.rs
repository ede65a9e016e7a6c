//! The decoder worker: owns one [`DecoderSession`] per model's decoder weights and the embedding of
//! each client (a page or widget on the stage), and answers the page's messages (see `protocol`).
//! Several widgets on one page share it, so the weights are in memory once. Decoding blocks this
//! worker's thread, never the page's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use segany_wasm::{DecoderSession, prediction_to_js, prompt_from_js};
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{bytes_field, error_reply, get, kind, message, prediction_buffers, string_field};

#[derive(Default)]
struct State {
    /// Decoder weights by key (their URL).
    decoders: HashMap<String, DecoderSession>,
    /// Each client's embedding bytes (wire format) and the key of the decoder they belong to.
    embeddings: HashMap<u32, (String, Vec<u8>)>,
    /// Whose embedding each decoder holds now: switching clients re-reads theirs.
    holder: HashMap<String, u32>,
}

pub fn start() {
    console_error_panic_hook::set_once();
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let state: Rc<RefCell<State>> = Rc::default();
    let reply_scope = scope.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        if let Err(e) = handle(&reply_scope, &mut state.borrow_mut(), &data) {
            let _ = reply_scope.post_message(&error_reply(&data, e));
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let _ = scope.post_message(&message("ready", &[]));
}

fn now(scope: &DedicatedWorkerGlobalScope) -> f64 {
    scope.performance().map_or(0.0, |p| p.now())
}

fn client(data: &JsValue) -> Result<u32, String> {
    get(data, "client").as_f64().map(|c| c as u32).ok_or_else(|| "message without client".to_string())
}

fn post(scope: &DedicatedWorkerGlobalScope, msg: &js_sys::Object) -> Result<(), String> {
    scope.post_message(msg).map_err(|e| format!("{e:?}"))
}

fn handle(scope: &DedicatedWorkerGlobalScope, state: &mut State, data: &JsValue) -> Result<(), String> {
    match kind(data).as_str() {
        "weights" => {
            let key = string_field(data, "key")?;
            let t = now(scope);
            let s = DecoderSession::from_weights(bytes_field(data)?)?;
            let digest = s.encoder_digest().to_string();
            state.decoders.insert(key.clone(), s);
            state.holder.remove(&key);
            let ms = now(scope) - t;
            post(scope, &message("weights_loaded", &[("key", key.into()), ("digest", digest.into()), ("ms", ms.into())]))
        }
        "embedding" => {
            let (client, key) = (client(data)?, string_field(data, "key")?);
            let bytes = bytes_field(data)?;
            let decoder = state.decoders.get_mut(&key).ok_or("no decoder weights for this embedding")?;
            let header = serde_wasm_bindgen::to_value(decoder.set_embedding_bytes(&bytes)?).map_err(|e| e.to_string())?;
            state.holder.insert(key.clone(), client);
            state.embeddings.insert(client, (key, bytes));
            post(scope, &message("embedding_set", &[("client", client.into()), ("header", header)]))
        }
        "decode" => {
            let client = client(data)?;
            let (key, bytes) = state.embeddings.get(&client).ok_or("no embedding yet")?;
            let decoder = state.decoders.get_mut(key).ok_or("no decoder weights yet")?;
            if state.holder.get(key) != Some(&client) {
                decoder.set_embedding_bytes(bytes)?;
                state.holder.insert(key.clone(), client);
            }
            let prompt = prompt_from_js(&get(data, "prompt"))?;
            let t = now(scope);
            let prediction = decoder.predict(&prompt)?;
            let ms = now(scope) - t;
            let p = prediction_to_js(&prediction);
            let transfer = prediction_buffers(&p);
            let fields = [("client", client.into()), ("id", get(data, "id")), ("ms", ms.into()), ("prediction", p.into())];
            scope.post_message_with_transfer(&message("decoded", &fields), &transfer).map_err(|e| format!("{e:?}"))
        }
        "release" => {
            let client = client(data)?;
            state.embeddings.remove(&client);
            state.holder.retain(|_, c| *c != client);
            Ok(())
        }
        other => Err(format!("unknown message kind '{other}'")),
    }
}
