//! The image encoder on WebGPU, as the page's encoder worker runs it, in headless Chromium with
//! SwiftShader's WebGPU adapter (`webdriver.json` enables it) against the reference fixtures, for
//! the ViT and the TinyViT test configurations:
//! `cargo test -p segany-web --target wasm32-unknown-unknown --profile web --features encoder`.
//! It lives in this crate, with the worker's features, so that it reuses the worker's build.
#![cfg(all(target_arch = "wasm32", feature = "encoder"))]

use segany_model::SamConfig;
use segany_predict::npy::from_npy;
use segany_predict::wire;
use segany_wasm::encoder::WEBGPU_FIXES_JS;
use segany_wasm::{Device, EncoderSession, webgpu_device};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($dir:literal, $name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/", $dir, "/", $name)).as_slice()
    };
}

/// Embeds the fixture image on `device` and compares with the reference embedding.
async fn check(what: &str, weights: &[u8], config: &[u8], image: &[u8], want: &[u8], device: &Device) {
    let config: SamConfig = serde_json::from_slice(config).unwrap();
    let model = segany_weights::load_bytes(weights.to_vec(), Some(&config), None, device).unwrap();
    let session = EncoderSession::from_model(model, device).unwrap();
    let bytes = session.embed(image, "test").await.unwrap();
    let (header, got) = wire::decode(&bytes).unwrap();
    let (want, shape) = from_npy::<f32>(want).unwrap();
    assert_eq!(header.shape, shape, "{what}");
    assert_eq!(header.encoder_digest, session.encoder_digest(), "{what}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(&want).fold(0f32, |m, (g, w)| if (g - w).is_nan() { f32::INFINITY } else { m.max((g - w).abs()) });
    assert!(worst <= 1e-4 * scale, "{what}: max |Δ| {worst:e} > 1e-4 × {scale}");
}

#[wasm_bindgen_test]
async fn webgpu_embeddings_match_the_reference() {
    js_sys::Function::new_no_args(WEBGPU_FIXES_JS).call0(&JsValue::NULL).unwrap();
    let device = webgpu_device().await.expect("Chromium with --enable-unsafe-webgpu has an adapter");
    check(
        "ViT",
        fixture!("tiny", "checkpoint.safetensors"),
        fixture!("tiny", "sam_config.json"),
        fixture!("tiny", "image.png"),
        fixture!("tiny", "image_embedding.npy"),
        &device,
    )
    .await;
    check(
        "TinyViT",
        fixture!("tiny_vit_t", "checkpoint.safetensors"),
        fixture!("tiny_vit_t", "sam_config.json"),
        fixture!("tiny_vit_t", "image.png"),
        fixture!("tiny_vit_t", "image_embedding.npy"),
        &device,
    )
    .await;
}
