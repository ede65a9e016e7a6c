//! Shared helpers for the cross-crate tests: fixture loading and tolerance checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use segany_model::{DecoderConfig, EncoderConfig, SamConfig, TinyVitConfig, VitConfig};
use segany_predict::npy::{NpyElement, from_npy};
use segany_predict::{Point, Prompt};
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny() -> PathBuf {
    repo().join("tests/fixtures/tiny")
}

pub fn tiny_vit_t() -> PathBuf {
    repo().join("tests/fixtures/tiny_vit_t")
}

pub fn npy<T: NpyElement>(path: &Path) -> (Vec<T>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    from_npy(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The model configuration the fixture generator wrote (`config.json`).
pub fn fixture_config(dir: &Path) -> SamConfig {
    let c = json(&dir.join("config.json"));
    let e = &c["encoder"];
    let d = &c["decoder"];
    let u = |v: &Value| v.as_u64().expect("integer") as usize;
    let list = |v: &Value| -> Vec<usize> { v.as_array().unwrap().iter().map(u).collect() };
    let encoder = match e["type"].as_str().unwrap() {
        "vit" => EncoderConfig::Vit(VitConfig {
            img_size: u(&e["img_size"]),
            patch_size: u(&e["patch_size"]),
            embed_dim: u(&e["embed_dim"]),
            depth: u(&e["depth"]),
            num_heads: u(&e["num_heads"]),
            mlp_ratio: e["mlp_ratio"].as_f64().unwrap() as usize,
            out_chans: u(&e["out_chans"]),
            window_size: u(&e["window_size"]),
            global_attn_indexes: list(&e["global_attn_indexes"]),
        }),
        "tiny_vit" => EncoderConfig::TinyVit(TinyVitConfig {
            img_size: u(&e["img_size"]),
            embed_dims: list(&e["embed_dims"]),
            depths: list(&e["depths"]),
            num_heads: list(&e["num_heads"]),
            window_sizes: list(&e["window_sizes"]),
            mlp_ratio: e["mlp_ratio"].as_f64().unwrap() as usize,
            mbconv_expand_ratio: e["mbconv_expand_ratio"].as_f64().unwrap() as usize,
            merge_strides: list(&e["patch_merging_strides"]),
            num_classes: u(&e["num_classes"]),
            out_chans: u(&e["out_chans"]),
        }),
        other => panic!("unknown encoder type {other}"),
    };
    SamConfig {
        encoder,
        prompt_embed_dim: u(&c["prompt_embed_dim"]),
        image_size: u(&c["input_image_size"][0]),
        mask_in_chans: u(&c["mask_in_chans"]),
        decoder: DecoderConfig {
            depth: u(&d["transformer_depth"]),
            mlp_dim: u(&d["transformer_mlp_dim"]),
            num_heads: u(&d["transformer_num_heads"]),
            iou_head_depth: u(&d["iou_head_depth"]),
            iou_head_hidden_dim: u(&d["iou_head_hidden_dim"]),
            num_multimask_outputs: u(&d["num_multimask_outputs"]),
        },
    }
}

/// `max |got - want| ≤ rtol · max |want|`: f32 agreement relative to the reference's magnitude.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, reference has {}", got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d.is_nan() || d > worst {
            worst = if d.is_nan() { f32::INFINITY } else { d };
            at = i;
        }
    }
    assert!(
        worst <= rtol * scale,
        "{what}: max |diff| {worst:e} at {at} (got {}, want {}) exceeds {rtol:e} × {scale:e}",
        got[at],
        want[at]
    );
}

/// Intersection over union of two 0/1 masks.
pub fn mask_iou(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        inter += (x != 0 && y != 0) as usize;
        union += (x != 0 || y != 0) as usize;
    }
    if union == 0 { 1.0 } else { inter as f64 / union as f64 }
}

/// The prompt of a `cases.json` entry; a mask input is read from the fixture directory `dir`.
pub fn prompt_of(case: &Value, dir: &Path) -> Prompt {
    let points = match (&case["points"], &case["labels"]) {
        (Value::Array(p), Value::Array(l)) => p
            .iter()
            .zip(l)
            .map(|(p, l)| Point { x: p[0].as_f64().unwrap(), y: p[1].as_f64().unwrap(), label: l.as_i64().unwrap() as i32 })
            .collect(),
        _ => vec![],
    };
    let bbox = case["box"].as_array().map(|b| [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap()));
    let mask_input = case["mask_input"].as_str().map(|f| npy::<f32>(&dir.join(f)).0);
    Prompt { points, bbox, mask_input, multimask: case["multimask"].as_bool().unwrap() }
}
