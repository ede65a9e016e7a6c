//! The image encoder on WebGPU (burn's wgpu runtime), for pages that compute embeddings
//! themselves instead of asking the server. Same preprocessing and modules as natively, so the
//! embedding it makes is the server's to float tolerance, in the same wire format.

use burn::tensor::Device;
use segany_predict::wire::{self, Dtype, WireHeader};
use segany_predict::{Predictor, decode_image_limited};
use sha2::{Digest, Sha256};

/// JavaScript to run in the worker (or page) before [`webgpu_device`]: it lets burn's shaders
/// through the browser's WebGPU (see the file's comments). Not run from here, so that a page
/// with a strict Content-Security-Policy need not allow `eval`: the encoder worker's bootstrap
/// script carries it.
pub const WEBGPU_FIXES_JS: &str = include_str!("webgpu_fixes.js");

/// Images larger than this many pixels are refused before decoding (as the server does).
pub const MAX_PIXELS: u64 = 64 << 20;

/// Starts burn's wgpu runtime on the browser's WebGPU adapter, after [`WEBGPU_FIXES_JS`] ran.
/// Call once; clone the device.
///
/// Without `navigator.gpu`, or with no adapter, this fails with a message to show.
pub async fn webgpu_device() -> Result<Device, String> {
    Device::wgpu_options().init_async().await.map_err(|e| format!("WebGPU is not available: {e}"))
}

/// A model with its image encoder on a GPU device.
pub struct EncoderSession {
    predictor: Predictor,
}

impl EncoderSession {
    /// Loads the whole model (`segany convert` burnpack, f16 or f32, or safetensors with the
    /// official keys) onto `device`.
    pub fn from_weights(bytes: Vec<u8>, device: &Device) -> Result<Self, String> {
        let loaded = segany_weights::load_bytes(bytes, None, None, device).map_err(|e| e.to_string())?;
        Self::from_model(loaded, device)
    }

    pub fn from_model(loaded: segany_model::SamModel, device: &Device) -> Result<Self, String> {
        if loaded.encoder.is_none() {
            return Err("these are decoder-only weights: the encoder needs the whole model".into());
        }
        Ok(Self { predictor: Predictor::new(loaded, device.clone()) })
    }

    /// SHA-256 of the encoder weights: the decoder to use with these embeddings must carry it.
    pub fn encoder_digest(&self) -> &str {
        self.predictor.encoder_digest()
    }

    /// Embeds an encoded image (PNG, JPEG, WebP) and returns the embedding in the wire format
    /// (f32), with the image's SHA-256 and `model` (the server's id of the weights) in its
    /// header, as the server would send it.
    pub async fn embed(&self, image_bytes: &[u8], model: &str) -> Result<Vec<u8>, String> {
        let image = decode_image_limited(image_bytes, MAX_PIXELS).map_err(|e| e.to_string())?;
        let embedding = self.predictor.embed(&image).map_err(|e| e.to_string())?;
        let shape = embedding.dims();
        // Reading back is asynchronous on WebGPU: the synchronous `to_data` cannot wait in a browser.
        let data = embedding.tensor.clone().into_data_async().await.map_err(|e| format!("reading the embedding back failed: {e:?}"))?;
        let values: Vec<f32> = data.convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("embedding values: {e:?}"))?;
        let sha = Sha256::digest(image_bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
        let header = WireHeader::new(&embedding.meta, &shape, Dtype::F32, &sha, model);
        Ok(wire::encode(&header, &values))
    }
}
