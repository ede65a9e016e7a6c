//! Parity with the PyTorch reference on a small configuration whose every parameter is random
//! (fixtures from `scripts/make_fixtures.py --config tiny`): each stage, then the whole predictor.

mod common;

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use segany_model::{CpuDecoder, DensePrompt, Projections};
use segany_predict::geometry::{preprocess_shape, resize_rgb_bilinear};
use segany_predict::{Predictor, decode_image};
use segany_weights::load_file;
use serde_json::Value;

const RTOL: f32 = 1e-4;

fn device() -> Device {
    Device::flex()
}

fn predictor() -> Predictor {
    let dir = tiny();
    let config = fixture_config(&dir);
    let m = load_file(&dir.join("checkpoint.pth"), Some(&config), None, &device()).expect("tiny checkpoint loads");
    Predictor::new(m, device())
}

fn read_png(path: &Path) -> segany_predict::RgbImage {
    decode_image(&std::fs::read(path).unwrap()).unwrap()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn tensor<const D: usize>(path: &Path) -> Tensor<D> {
    let (v, shape) = npy::<f32>(path);
    Tensor::from_data(TensorData::new(v, shape), &device())
}

fn cases() -> Vec<Value> {
    json(&tiny().join("cases.json"))["cases"].as_array().unwrap().clone()
}

#[test]
fn resize_matches_pillow_bit_for_bit() {
    for stem in ["image", "image_large", "image_tall"] {
        let img = read_png(&tiny().join(format!("{stem}.png")));
        let want = read_png(&tiny().join(format!("{stem}_resized.png")));
        let size = preprocess_shape([img.height, img.width], 1024);
        assert_eq!(size, [want.height, want.width], "{stem}: resized size");
        let got = resize_rgb_bilinear(&img.data, [img.height, img.width], size);
        let differing = got.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{stem}: {differing} resized values differ from Pillow");
    }
}

#[test]
fn preprocessing_matches_reference_samples() {
    let p = predictor();
    for stem in ["image", "image_large", "image_tall"] {
        let stats = json(&tiny().join(format!("{stem}_input_stats.json")));
        let (input, size) = p.preprocess(&read_png(&tiny().join(format!("{stem}.png"))));
        assert_eq!(size.to_vec(), vec![stats["resized_hw"][0].as_u64().unwrap() as usize, stats["resized_hw"][1].as_u64().unwrap() as usize]);
        let data = to_vec(input);
        for s in stats["samples"].as_array().unwrap() {
            let i: Vec<usize> = s["index"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let at = ((i[0] * 3 + i[1]) * 1024 + i[2]) * 1024 + i[3];
            assert_eq!(data[at], s["value"].as_f64().unwrap() as f32, "{stem} sample {i:?}");
        }
        let sum: f64 = data.iter().map(|&v| v as f64).sum();
        let want = stats["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-6 * stats["abs_sum"].as_f64().unwrap(), "{stem}: sum {sum} vs {want}");
    }
}

#[test]
fn image_encoder_matches_reference() {
    let mut p = predictor();
    for stem in ["image", "image_large"] {
        let emb = p.set_image(&read_png(&tiny().join(format!("{stem}.png")))).unwrap();
        let (want, shape) = npy::<f32>(&tiny().join(format!("{stem}_embedding.npy")));
        assert_eq!(emb.dims().to_vec(), shape);
        assert_close(&format!("{stem} embedding"), &emb.to_vec(), &want, RTOL);
    }
}

#[test]
fn dense_positional_encoding_matches_reference() {
    let p = predictor();
    let got = to_vec(p.decoder().prompt_encoder.dense_pe());
    assert_close("dense_pe", &got, &npy::<f32>(&tiny().join("dense_pe.npy")).0, RTOL);
}

#[test]
fn prompt_encoder_matches_reference() {
    let p = predictor();
    let original = [117, 173];
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let (points, boxes, masks) = p.model_prompt(&prompt_of(&case, &tiny()), original);
        let (sparse, dense) = p.decoder().prompt_encoder.forward(points, boxes, masks);
        let (want, shape) = npy::<f32>(&tiny().join(format!("case_{name}_sparse.npy")));
        assert_eq!(sparse.dims().to_vec(), shape, "{name}: sparse shape");
        assert_close(&format!("{name} sparse"), &to_vec(sparse), &want, RTOL);
        let dense_file = tiny().join(format!("case_{name}_dense.npy"));
        if dense_file.exists() {
            assert_close(&format!("{name} dense"), &to_vec(dense), &npy::<f32>(&dense_file).0, RTOL);
        }
    }
}

#[test]
fn two_way_transformer_matches_reference() {
    let p = predictor();
    for name in ["one_point", "box_point"] {
        let f = |s: &str| tiny().join(format!("case_{name}_tf_{s}.npy"));
        let (hs, keys) = p.decoder().mask_decoder.transformer.forward(tensor(&f("src")), tensor(&tiny().join("dense_pe.npy")), tensor(&f("tokens")));
        assert_close(&format!("{name} queries"), &to_vec(hs), &npy::<f32>(&f("hs")).0, RTOL);
        assert_close(&format!("{name} keys"), &to_vec(keys), &npy::<f32>(&f("keys")).0, RTOL);
    }
}

#[test]
fn mask_decoder_matches_reference_before_selection() {
    let p = predictor();
    let emb = tensor::<4>(&tiny().join("image_embedding.npy"));
    let case = cases().into_iter().find(|c| c["name"] == "one_point").unwrap();
    let (points, boxes, masks) = p.model_prompt(&prompt_of(&case, &tiny()), [117, 173]);
    let (sparse, dense) = p.decoder().prompt_encoder.forward(points, boxes, masks);
    let out = p.decoder().mask_decoder.forward(emb, p.decoder().prompt_encoder.dense_pe(), sparse, dense);
    assert_close("all masks", &to_vec(out.masks), &npy::<f32>(&tiny().join("case_one_point_decoder_all_masks.npy")).0, RTOL);
    assert_close("all iou", &to_vec(out.iou_pred), &npy::<f32>(&tiny().join("case_one_point_decoder_all_iou.npy")).0, RTOL);
}

/// The fused CPU decoder (what the predictor and the page run) against the same fixtures: every
/// way of treating the later blocks' projections (direct, low-rank, folded, and the automatic
/// choice), alone and split into 2 and 3 shards of grid rows (the page's workers; 3 makes
/// unequal bands): every mask token before selection, then every prompt kind after it.
#[test]
fn cpu_decoder_matches_reference_every_way_alone_and_sharded() {
    let p = predictor();
    let emb = npy::<f32>(&tiny().join("image_embedding.npy")).0;
    for projections in [Projections::Direct, Projections::LowRank, Projections::Folded, Projections::Auto] {
        let cpu = CpuDecoder::new(p.decoder(), &p.decoder().prompt_encoder.dense_pe()).with_projections(projections);
        for shards in [1, 2, 3] {
            let ctxs: Vec<_> = (0..shards).map(|i| cpu.prepare_rows(&emb, cpu.band(i, shards))).collect();
            let decode = |sparse: &[f32], dense: DensePrompt<'_>, masks: std::ops::Range<usize>| {
                if shards == 1 { cpu.decode(&ctxs[0], sparse, dense, masks) } else { cpu.decode_sharded_locally(&ctxs, sparse, dense, masks) }
            };
            for case in cases() {
                let name = case["name"].as_str().unwrap();
                let what = format!("{projections:?}, {shards} shard(s), {name}");
                let prompt = prompt_of(&case, &tiny());
                let (points, boxes, _) = p.model_prompt(&prompt, [117, 173]);
                let sparse = to_vec(p.decoder().prompt_encoder.sparse(points, boxes, 1));
                let dense = prompt.mask_input.as_deref().map_or(DensePrompt::NoMask, DensePrompt::Mask);
                let all = tiny().join(format!("case_{name}_decoder_all_masks.npy"));
                if all.exists() {
                    let out = decode(&sparse, dense, 0..cpu.num_mask_tokens());
                    let want_iou = tiny().join(format!("case_{name}_decoder_all_iou.npy"));
                    assert_close(&format!("{what} all masks"), &out.masks, &npy::<f32>(&all).0, RTOL);
                    assert_close(&format!("{what} all iou"), &out.iou_pred, &npy::<f32>(&want_iou).0, RTOL);
                }
                let n = cpu.num_mask_tokens();
                let out = decode(&sparse, dense, if prompt.multimask { 1..n } else { 0..1 });
                let f = |s: &str| tiny().join(format!("case_{name}_{s}.npy"));
                assert_close(&format!("{what} low-res logits"), &out.masks, &npy::<f32>(&f("low_res")).0, RTOL);
                assert_close(&format!("{what} iou"), &out.iou_pred, &npy::<f32>(&f("iou")).0, RTOL);
            }
        }
    }
}

#[test]
fn predictor_matches_reference_for_every_prompt_kind() {
    let mut p = predictor();
    p.set_image(&read_png(&tiny().join("image.png"))).unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let f = |s: &str| tiny().join(format!("case_{name}_{s}.npy"));
        let pred = p.predict(&prompt_of(&case, &tiny())).unwrap();
        let (want_low, low_shape) = npy::<f32>(&f("low_res"));
        assert_eq!(pred.num_masks, low_shape[0], "{name}: number of masks");
        assert_close(&format!("{name} low-res logits"), &pred.low_res_logits, &want_low, RTOL);
        assert_close(&format!("{name} iou"), &pred.iou_predictions, &npy::<f32>(&f("iou")).0, RTOL);
        let (want_logits, _) = npy::<f32>(&f("logits"));
        let (want_masks, mshape) = npy::<u8>(&f("masks"));
        assert_eq!(mshape, vec![pred.num_masks, 117, 173]);
        let n = 117 * 173;
        for i in 0..pred.num_masks {
            assert_close(&format!("{name} logits {i}"), &p.upscaled_logits(&pred, i), &want_logits[i * n..(i + 1) * n], RTOL);
            let iou = mask_iou(pred.mask(i), &want_masks[i * n..(i + 1) * n]);
            assert!(iou >= 0.999, "{name} mask {i}: IoU {iou} with the reference");
        }
    }
}
