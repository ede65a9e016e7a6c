//! Messages between the page and its decoder worker: plain JS objects with a `kind`, big arrays
//! as typed arrays whose buffers are transferred, not copied.
//!
//! One worker serves every client on the page (the page itself, or each widget): `client` says
//! whose embedding or decode a message is about, `key` (the weights' URL) which decoder.
//!
//! page → worker: `{kind: "weights", key, bytes}`, `{kind: "embedding", client, key, bytes}`,
//! `{kind: "decode", client, id, prompt}`, `{kind: "cancel", client, id}` (a decode no longer
//! wanted), `{kind: "release", client}`.
//! worker → page: `{kind: "ready"}`, `{kind: "weights_loaded", key, digest, ms}`,
//! `{kind: "embedding_set", client, header}`, `{kind: "decoded", client, id, ms, workers, prediction}`,
//! `{kind: "cancelled", client, id}` (a cancelled decode was dropped or stopped; one that ended
//! first answers `decoded`), `{kind: "error", client?, key?, id?, stage, message}`.

use js_sys::{Array, Float32Array, Object, Reflect, Uint8Array};
use segany_predict::{Prediction, Prompt};
use wasm_bindgen::{JsCast, JsValue};

/// A message object from `(key, value)` pairs.
pub fn message(kind: &str, fields: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    Reflect::set(&o, &"kind".into(), &kind.into()).expect("plain object");
    for (k, v) in fields {
        Reflect::set(&o, &(*k).into(), v).expect("plain object");
    }
    o
}

/// A worker's `error` answer to the message `data`: it names the client, key and id the message
/// did, and the stage (the message's kind).
pub fn error_reply(data: &JsValue, text: String) -> Object {
    let fields = [
        ("client", get(data, "client")),
        ("key", get(data, "key")),
        ("id", get(data, "id")),
        ("stage", kind(data).into()),
        ("message", text.into()),
    ];
    message("error", &fields)
}

/// A message's `bytes` (an ArrayBuffer), copied into wasm memory.
pub fn bytes_field(data: &JsValue) -> Result<Vec<u8>, String> {
    let buffer: js_sys::ArrayBuffer = get(data, "bytes").dyn_into().map_err(|_| "message without bytes".to_string())?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A message's string field.
pub fn string_field(data: &JsValue, field: &str) -> Result<String, String> {
    get(data, field).as_string().ok_or_else(|| format!("message without {field}"))
}

pub fn get(o: &JsValue, key: &str) -> JsValue {
    Reflect::get(o, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

pub fn kind(o: &JsValue) -> String {
    get(o, "kind").as_string().unwrap_or_default()
}

/// A prompt as the worker reads it (`segany_wasm::prompt_from_js`).
pub fn prompt_to_js(prompt: &Prompt) -> JsValue {
    let v = serde_wasm_bindgen::to_value(prompt).expect("prompt serialises");
    if let Some(m) = &prompt.mask_input {
        Reflect::set(&v, &"maskInput".into(), &Float32Array::from(&m[..])).expect("plain object");
    }
    v
}

/// The buffers of a prediction object, to transfer with it.
pub fn prediction_buffers(p: &JsValue) -> Array {
    let list = Array::new();
    for key in ["iouPredictions", "masks", "lowResLogits"] {
        let a = get(p, key);
        if let Some(view) = a.dyn_ref::<js_sys::Object>() {
            list.push(&get(view, "buffer"));
        }
    }
    list
}

/// The prediction `segany_wasm::prediction_to_js` made, back in Rust.
pub fn prediction_from_js(p: &JsValue) -> Result<Prediction, String> {
    let num = |k: &str| get(p, k).as_f64().map(|v| v as usize).ok_or(format!("prediction without {k}"));
    let (n, h, w) = (num("numMasks")?, num("height")?, num("width")?);
    let f32s = |k: &str| get(p, k).dyn_into::<Float32Array>().map(|a| a.to_vec()).map_err(|_| format!("prediction without {k}"));
    let masks = get(p, "masks").dyn_into::<Uint8Array>().map(|a| a.to_vec()).map_err(|_| "prediction without masks")?;
    let prediction = Prediction {
        masks,
        iou_predictions: f32s("iouPredictions")?,
        low_res_logits: f32s("lowResLogits")?,
        num_masks: n,
        size: [h, w],
    };
    if prediction.masks.len() != n * h * w || prediction.iou_predictions.len() != n {
        return Err("prediction arrays do not match its size".into());
    }
    Ok(prediction)
}
