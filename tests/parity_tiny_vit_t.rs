//! MobileSAM parity: a small TinyViT configuration (every parameter, batch-norm statistic and
//! attention bias random; fixtures from `scripts/make_fixtures.py --config tiny_vit_t`).

mod common;

use burn::tensor::Device;
use common::*;
use segany_predict::{Predictor, decode_image};
use segany_weights::load_file;

fn predictor() -> Predictor {
    let dir = tiny_vit_t();
    let config = fixture_config(&dir);
    let m = load_file(&dir.join("checkpoint.pth"), Some(&config), None, &Device::flex()).expect("tiny vit_t loads");
    Predictor::new(m, Device::flex())
}

fn image() -> segany_predict::RgbImage {
    decode_image(&std::fs::read(tiny_vit_t().join("image.png")).unwrap()).unwrap()
}

#[test]
fn tiny_vit_encoder_matches_reference() {
    let mut p = predictor();
    let emb = p.set_image(&image()).unwrap();
    let (want, shape) = npy::<f32>(&tiny_vit_t().join("image_embedding.npy"));
    assert_eq!(emb.dims().to_vec(), shape);
    assert_close("TinyViT embedding", &emb.to_vec(), &want, 1e-4);
}

#[test]
fn mobile_sam_predictor_matches_reference_for_every_prompt_kind() {
    let mut p = predictor();
    p.set_image(&image()).unwrap();
    let cases = json(&tiny_vit_t().join("cases.json"));
    let [h, w] = [cases["original_size"][0].as_u64().unwrap() as usize, cases["original_size"][1].as_u64().unwrap() as usize];
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = prompt_of(case, &tiny_vit_t());
        let pred = p.predict(&prompt).unwrap();
        let f = |s: &str| tiny_vit_t().join(format!("case_{name}_{s}.npy"));
        assert_close(&format!("{name} low-res"), &pred.low_res_logits, &npy::<f32>(&f("low_res")).0, 1e-4);
        assert_close(&format!("{name} iou"), &pred.iou_predictions, &npy::<f32>(&f("iou")).0, 1e-4);
        let (masks, _) = npy::<u8>(&f("masks"));
        for i in 0..pred.num_masks {
            let iou = mask_iou(pred.mask(i), &masks[i * h * w..(i + 1) * h * w]);
            assert!(iou >= 0.999, "{name} mask {i}: IoU {iou}");
        }
    }
}

/// The server, the page's tests and the wasm tests build this model from `sam_config.json`: it
/// must be the configuration the fixtures were made with.
#[test]
fn sam_config_json_is_the_fixture_configuration() {
    for dir in [tiny_vit_t(), tiny()] {
        let written: segany_model::SamConfig =
            serde_json::from_slice(&std::fs::read(dir.join("sam_config.json")).unwrap()).unwrap();
        assert_eq!(written, fixture_config(&dir), "{}", dir.display());
    }
}
