//! segany in the browser: the prompt encoder and mask decoder next to an embedding that came
//! from elsewhere (the server, or the WebGPU encoder). The page's worker drives a
//! [`DecoderSession`] from Rust; [`Decoder`] is the same session for JavaScript callers.
//!
//! This is the only library crate that depends on wasm-bindgen.

#[cfg(feature = "webgpu")]
pub mod encoder;
#[cfg(feature = "webgpu")]
pub use encoder::{EncoderSession, webgpu_device};

pub use burn::tensor::Device;
pub use segany_model::{AttentionPartial, Exchange};
use segany_model::SamConfig;
use segany_predict::wire::{self, WireHeader};
pub use segany_predict::ShardMasks;
use segany_predict::{Prediction, Predictor, Prompt};
use wasm_bindgen::prelude::*;

/// A decoder with the embedding of the current image.
pub struct DecoderSession {
    predictor: Predictor,
    header: Option<WireHeader>,
}

impl DecoderSession {
    /// Loads decoder weights: a burnpack from `segany convert` (decoder-only or whole, f16 or
    /// f32) or safetensors with the official keys.
    pub fn from_weights(bytes: Vec<u8>) -> Result<Self, String> {
        Self::from_weights_with_config(bytes, None)
    }

    /// As [`DecoderSession::from_weights`], for safetensors of an unreleased configuration
    /// (burnpacks carry theirs).
    pub fn from_weights_with_config(bytes: Vec<u8>, config: Option<SamConfig>) -> Result<Self, String> {
        let device = Device::flex();
        let model = segany_weights::load_bytes(bytes, config.as_ref(), None, &device).map_err(|e| e.to_string())?;
        Ok(Self { predictor: Predictor::new(model, device), header: None })
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// SHA-256 of the encoder weights this decoder belongs to: only their embeddings fit.
    pub fn encoder_digest(&self) -> &str {
        self.predictor.encoder_digest()
    }

    /// Takes an embedding in the wire format (`SEGANYE1`, f16 or f32); refused unless it comes
    /// from this decoder's encoder weights.
    pub fn set_embedding_bytes(&mut self, bytes: &[u8]) -> Result<&WireHeader, String> {
        let (header, values) = wire::decode(bytes).map_err(|e| e.to_string())?;
        self.predictor.set_embedding(values, header.meta()).map_err(|e| e.to_string())?;
        Ok(self.header.insert(header))
    }

    /// The header of the current embedding, if any.
    pub fn embedding_header(&self) -> Option<&WireHeader> {
        self.header.as_ref()
    }

    pub fn predict(&self, prompt: &Prompt) -> Result<Prediction, String> {
        self.predictor.predict(prompt).map_err(|e| e.to_string())
    }

    /// Makes this session shard `index` of `count` of a decoder split over workers (see
    /// `segany_model::cpu_decoder`); `(0, 1)` makes it whole again.
    pub fn set_shard(&mut self, index: usize, count: usize) -> Result<(), String> {
        self.predictor.set_shard(index, count)
    }

    /// This shard's band of the low-resolution logits and the IoU predictions for `prompt`;
    /// every shard decodes the same prompt, connected by `exchange`; `Ok(None)` when an exchange
    /// abandoned the decode.
    pub async fn decode_shard(&self, prompt: &Prompt, exchange: &mut impl Exchange) -> Result<Option<(Vec<f32>, Vec<f32>)>, String> {
        self.predictor.decode_shard(prompt, exchange).await.map_err(|e| e.to_string())
    }

    /// The mask rows this shard makes alone from its band of the logits (`decode_shard`'s), while
    /// the other shards make theirs (see `Predictor::shard_masks`).
    pub fn shard_masks(&self, band: &[f32], n: usize) -> Result<ShardMasks, String> {
        self.predictor.shard_masks(band, n).map_err(|e| e.to_string())
    }

    /// The prediction from the shards' bands, joined in shard order, and the mask rows they made
    /// already (`made`; the rows between bands are made here).
    pub fn prediction_from_shards(&self, bands: &[&[f32]], made: &[ShardMasks], iou_predictions: Vec<f32>) -> Result<Prediction, String> {
        let logits = segany_model::join_bands(bands, iou_predictions.len());
        self.predictor.prediction_from_shards(logits, iou_predictions, made).map_err(|e| e.to_string())
    }
}

/// A shard's attention share as a JS object `{max, sum, values}` (Float32Arrays).
pub fn partial_to_js(p: &AttentionPartial) -> js_sys::Object {
    let o = js_sys::Object::new();
    for (k, v) in [("max", &p.max), ("sum", &p.sum), ("values", &p.values)] {
        js_sys::Reflect::set(&o, &k.into(), &js_sys::Float32Array::from(&v[..])).expect("plain object");
    }
    o
}

/// [`partial_to_js`] back, or `None` when `value` is not one.
pub fn partial_from_js(value: &JsValue) -> Option<AttentionPartial> {
    let field = |k: &str| js_sys::Reflect::get(value, &k.into()).ok()?.dyn_into::<js_sys::Float32Array>().ok().map(|a| a.to_vec());
    Some(AttentionPartial { max: field("max")?, sum: field("sum")?, values: field("values")? })
}

/// A prompt from a JS object `{points: [{x, y, label}], box: [x0, y0, x1, y1], multimask,
/// maskInput: Float32Array(256·256)}` (every field optional; original-image pixels).
pub fn prompt_from_js(value: &JsValue) -> Result<Prompt, String> {
    let mut prompt: Prompt = serde_wasm_bindgen::from_value(value.clone()).map_err(|e| format!("bad prompt: {e}"))?;
    let mask = js_sys::Reflect::get(value, &"maskInput".into()).map_err(|_| "bad prompt".to_string())?;
    if !mask.is_undefined() && !mask.is_null() {
        let mask: js_sys::Float32Array = mask.dyn_into().map_err(|_| "maskInput is not a Float32Array".to_string())?;
        prompt.mask_input = Some(mask.to_vec());
    }
    Ok(prompt)
}

/// A prediction as a JS object `{numMasks, width, height, iouPredictions: Float32Array,
/// masks: Uint8Array (numMasks·height·width, 0/1), lowResLogits: Float32Array (numMasks·256·256)}`.
pub fn prediction_to_js(p: &Prediction) -> js_sys::Object {
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        js_sys::Reflect::set(&o, &k.into(), &v).expect("plain object");
    };
    set("numMasks", (p.num_masks as u32).into());
    set("height", (p.size[0] as u32).into());
    set("width", (p.size[1] as u32).into());
    set("iouPredictions", js_sys::Float32Array::from(&p.iou_predictions[..]).into());
    set("masks", js_sys::Uint8Array::from(&p.masks[..]).into());
    set("lowResLogits", js_sys::Float32Array::from(&p.low_res_logits[..]).into());
    o
}

/// The decoder for JavaScript: `new Decoder(weightsBytes)`, `setEmbedding(bytes)`,
/// `predict(prompt)`.
#[wasm_bindgen]
pub struct Decoder(DecoderSession);

#[wasm_bindgen]
impl Decoder {
    #[wasm_bindgen(constructor)]
    pub fn new(weights: Vec<u8>) -> Result<Decoder, JsError> {
        DecoderSession::from_weights(weights).map(Decoder).map_err(|e| JsError::new(&e))
    }

    /// Weights of an unreleased configuration, given as the JSON `segany` writes (`SamConfig`).
    #[wasm_bindgen(js_name = withConfig)]
    pub fn new_with_config(weights: Vec<u8>, config_json: &str) -> Result<Decoder, JsError> {
        let config: SamConfig = serde_json::from_str(config_json).map_err(|e| JsError::new(&format!("bad config: {e}")))?;
        DecoderSession::from_weights_with_config(weights, Some(config)).map(Decoder).map_err(|e| JsError::new(&e))
    }

    #[wasm_bindgen(getter, js_name = encoderDigest)]
    pub fn encoder_digest(&self) -> String {
        self.0.encoder_digest().to_string()
    }

    /// Sets the image embedding (wire format); returns its header as an object.
    #[wasm_bindgen(js_name = setEmbedding)]
    pub fn set_embedding(&mut self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let header = self.0.set_embedding_bytes(bytes).map_err(|e| JsError::new(&e))?;
        serde_wasm_bindgen::to_value(header).map_err(|e| JsError::new(&e.to_string()))
    }

    pub fn predict(&self, prompt: JsValue) -> Result<js_sys::Object, JsError> {
        let prompt = prompt_from_js(&prompt).map_err(|e| JsError::new(&e))?;
        let p = self.0.predict(&prompt).map_err(|e| JsError::new(&e))?;
        Ok(prediction_to_js(&p))
    }
}
