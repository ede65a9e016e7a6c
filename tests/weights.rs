//! Strict checkpoint loading: every key used, every parameter set, every shape checked — and
//! errors that name the key as the official checkpoint spells it.

mod common;

use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::Device;
use common::*;
use segany_model::SamConfig;
use segany_weights::{Contents, TensorMap, WeightsError, from_official_tensors, load_file, read_pytorch, save_burnpack};

fn tiny_tensors() -> (TensorMap, SamConfig) {
    (read_pytorch(&tiny().join("checkpoint.pth")).unwrap(), fixture_config(&tiny()))
}

fn load(map: TensorMap, config: &SamConfig) -> Result<(), WeightsError> {
    from_official_tensors(map, Some(config), None, &Device::flex()).map(|_| ())
}

#[test]
fn the_official_layout_loads_completely() {
    let (map, config) = tiny_tensors();
    assert_eq!(map.len(), 188);
    load(map, &config).unwrap();
}

#[test]
fn a_missing_key_is_named() {
    for key in [
        "image_encoder.blocks.1.attn.rel_pos_w",
        "image_encoder.neck.3.bias",
        "prompt_encoder.no_mask_embed.weight",
        "prompt_encoder.mask_downscaling.4.weight",
        "mask_decoder.transformer.layers.0.norm1.weight",
        "mask_decoder.output_hypernetworks_mlps.2.layers.1.bias",
    ] {
        let (mut map, config) = tiny_tensors();
        map.remove(key).unwrap();
        let err = load(map, &config).unwrap_err();
        assert_eq!(err, WeightsError::MissingKey { key: key.into(), unexpected: None });
        assert!(err.to_string().contains(key));
    }
}

#[test]
fn a_renamed_key_names_both_spellings() {
    let (mut map, config) = tiny_tensors();
    let mut t = map.remove("image_encoder.pos_embed").unwrap();
    t.name = "image_encoder.position_embedding".into();
    map.insert(t.name.clone(), t);
    let msg = load(map, &config).unwrap_err().to_string();
    assert!(msg.contains("'image_encoder.pos_embed'") && msg.contains("'image_encoder.position_embedding'"), "{msg}");
}

#[test]
fn an_extra_key_is_named() {
    let (mut map, config) = tiny_tensors();
    let mut t = map.get("mask_decoder.iou_token.weight").unwrap().clone();
    t.name = "mask_decoder.extra_token.weight".into();
    map.insert(t.name.clone(), t);
    assert_eq!(load(map, &config).unwrap_err(), WeightsError::UnexpectedKey { key: "mask_decoder.extra_token.weight".into() });
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let (mut map, config) = tiny_tensors();
    let key = "image_encoder.blocks.0.attn.rel_pos_h"; // [27, 16]
    let t = map.remove(key).unwrap();
    let bytes = t.to_bytes().unwrap();
    let half = burn::tensor::Bytes::from_bytes_vec(bytes[..bytes.len() / 2].to_vec());
    map.insert(key.into(), PackTensor::new(key.into(), t.dtype, [27, 8], None, half));
    let err = load(map, &config).unwrap_err();
    assert!(matches!(&err, WeightsError::ShapeMismatch { key: k, .. } if k == key), "{err:?}");
    assert!(err.to_string().contains(key));
}

#[test]
fn the_variant_is_detected_only_for_released_sizes() {
    let (map, _) = tiny_tensors();
    let err = from_official_tensors(map, None, None, &Device::flex()).err().unwrap();
    assert!(matches!(err, WeightsError::UnknownVariant { .. }), "{err:?}");
}

#[test]
fn burnpack_conversion_round_trips_in_f32_and_f16() {
    let config = fixture_config(&tiny());
    let dev = Device::flex();
    let original = load_file(&tiny().join("checkpoint.pth"), Some(&config), None, &dev).unwrap();
    let dir = std::env::temp_dir().join(format!("segany-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = segany_predict::decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    let embed = |m: segany_weights::LoadedModel| {
        let mut p = segany_predict::Predictor::new(m, Device::flex());
        p.set_image(&img).unwrap().to_vec()
    };
    let reference = npy::<f32>(&tiny().join("image_embedding.npy")).0;
    for (half, rtol) in [(false, 1e-4), (true, 2e-2)] {
        let path = dir.join(format!("full-{half}.bpk"));
        save_burnpack(&original, Contents::Full, half, &path).unwrap();
        let loaded = load_file(&path, None, None, &dev).unwrap();
        assert_eq!(loaded.config, config);
        assert_eq!(loaded.encoder_digest, original.encoder_digest, "the digest names the source weights");
        assert_close(&format!("embedding after burnpack (f16: {half})"), &embed(loaded), &reference, rtol);

        let path = dir.join(format!("decoder-{half}.bpk"));
        save_burnpack(&original, Contents::DecoderOnly, half, &path).unwrap();
        let decoder = load_file(&path, None, None, &dev).unwrap();
        assert!(decoder.encoder.is_none());
        assert_eq!(decoder.encoder_digest, original.encoder_digest);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < std::fs::metadata(dir.join(format!("full-{half}.bpk"))).unwrap().len());
    }
}

#[test]
fn mobile_sam_checkpoints_load_strictly_and_round_trip_through_burnpack() {
    let dir = tiny_vit_t();
    let config = fixture_config(&dir);
    let dev = Device::flex();
    let map = read_pytorch(&dir.join("checkpoint.pth")).unwrap();
    // Batch-norm step counters are in the file but not used at inference.
    assert!(map.keys().any(|k| k.ends_with("num_batches_tracked")));
    let err = from_official_tensors(map.clone(), None, None, &dev).err().unwrap();
    assert!(err.to_string().contains("TinyViT encoder of widths [8, 16, 24, 32]"), "{err}");
    let mut missing = map.clone();
    missing.remove("image_encoder.layers.1.blocks.0.attn.attention_biases").unwrap();
    assert_eq!(
        load(missing, &config).unwrap_err(),
        WeightsError::MissingKey { key: "image_encoder.layers.1.blocks.0.attn.attention_biases".into(), unexpected: None }
    );
    let mut missing = map;
    missing.remove("image_encoder.layers.0.blocks.1.conv2.bn.running_var").unwrap();
    assert!(load(missing, &config).unwrap_err().to_string().contains("image_encoder.layers.0.blocks.1.conv2.bn.running_var"));

    let original = load_file(&dir.join("checkpoint.pth"), Some(&config), None, &dev).unwrap();
    let path = std::env::temp_dir().join(format!("segany-weights-vit-t-{}.bpk", std::process::id()));
    save_burnpack(&original, Contents::Full, false, &path).unwrap();
    let m = load_file(&path, None, None, &dev).unwrap();
    let img = segany_predict::decode_image(&std::fs::read(dir.join("image.png")).unwrap()).unwrap();
    let mut p = segany_predict::Predictor::new(m, dev);
    let got = p.set_image(&img).unwrap().to_vec();
    assert_close("TinyViT embedding after burnpack", &got, &npy::<f32>(&dir.join("image_embedding.npy")).0, 1e-4);
}

/// Writes tensors as a safetensors file (8-byte header length, JSON header, raw data).
fn to_safetensors(map: &TensorMap) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in map {
        if t.dtype != burn::tensor::DType::F32 {
            continue; // batch-norm step counters (i64) are dropped by the loader anyway
        }
        let bytes = t.to_bytes().unwrap();
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": t.shape.to_vec(), "data_offsets": [start, data.len()] }),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    out
}

#[test]
fn safetensors_with_official_keys_load_from_bytes() {
    for dir in [tiny(), tiny_vit_t()] {
        let config = fixture_config(&dir);
        let bytes = to_safetensors(&read_pytorch(&dir.join("checkpoint.pth")).unwrap());
        let m = segany_weights::load_bytes(bytes, Some(&config), None, &Device::flex()).unwrap();
        let img = segany_predict::decode_image(&std::fs::read(dir.join("image.png")).unwrap()).unwrap();
        let mut p = segany_predict::Predictor::new(m, Device::flex());
        let got = p.set_image(&img).unwrap().to_vec();
        assert_close("embedding from safetensors", &got, &npy::<f32>(&dir.join("image_embedding.npy")).0, 1e-4);
    }
}

#[test]
fn a_decoder_only_model_predicts_from_an_embedding_of_its_own_encoder_only() {
    let dir = tiny();
    let config = fixture_config(&dir);
    let dev = Device::flex();
    let full = load_file(&dir.join("checkpoint.pth"), Some(&config), None, &dev).unwrap();
    let path = std::env::temp_dir().join(format!("segany-decoder-only-{}.bpk", std::process::id()));
    save_burnpack(&full, Contents::DecoderOnly, false, &path).unwrap();

    let img = segany_predict::decode_image(&std::fs::read(dir.join("image.png")).unwrap()).unwrap();
    let mut server = segany_predict::Predictor::new(full, dev.clone());
    let emb = server.set_image(&img).unwrap().clone();
    let prompt = segany_predict::Prompt {
        points: vec![segany_predict::Point { x: 62.5, y: 52.0, label: 1 }],
        ..Default::default()
    };
    let want = server.predict(&prompt).unwrap();

    let mut browser = segany_predict::Predictor::new(load_file(&path, None, None, &dev).unwrap(), dev.clone());
    assert!(!browser.has_encoder());
    assert_eq!(browser.set_image(&img).unwrap_err(), segany_predict::PredictError::NoEncoder);
    browser.set_embedding(emb.to_vec(), emb.meta.clone()).unwrap();
    let got = browser.predict(&prompt).unwrap();
    assert_close("low-res logits via set_embedding", &got.low_res_logits, &want.low_res_logits, 1e-6);
    assert_eq!(got.masks, want.masks);

    // An embedding from other weights, or with inconsistent sizes, is refused.
    let mut foreign = emb.meta.clone();
    foreign.encoder_digest = "0".repeat(64);
    assert!(matches!(browser.set_embedding(emb.to_vec(), foreign), Err(segany_predict::PredictError::EmbeddingMismatch { .. })));
    let mut bad_size = emb.meta.clone();
    bad_size.input_size = [100, 100];
    assert!(browser.set_embedding(emb.to_vec(), bad_size).is_err());
    assert!(browser.set_embedding(vec![0.0; 10], emb.meta.clone()).is_err());
}
