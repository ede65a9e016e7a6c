//! The `segany` binary as a user runs it: outputs of `predict` and `embed` on the tiny random
//! checkpoint, and clear errors for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn segany(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segany")).args(args).output().expect("segany runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segany-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_args(extra: &[&str]) -> Vec<String> {
    let t = tiny();
    let mut v: Vec<String> = vec![
        "--checkpoint".into(),
        t.join("checkpoint.pth").to_string_lossy().into(),
        "--config".into(),
        t.join("sam_config.json").to_string_lossy().into(),
    ];
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn run(cmd: &str, extra: &[&str]) -> Output {
    let mut args = vec![cmd.to_string()];
    args.extend(tiny_args(extra));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    segany(&refs)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn predict_writes_masks_json_and_logits_matching_the_reference() {
    let out = tmp("predict");
    let image = tiny().join("image.png");
    let o = run("predict", &["--image", s(&image), "--point", "62.5,52", "--point", "134,35.5,0", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = json(&out.join("prediction.json"));
    let ious: Vec<f32> = json["iou_predictions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_close("iou", &ious, &npy::<f32>(&tiny().join("case_two_points_iou.npy")).0, 1e-4);
    let (low, shape) = npy::<f32>(&out.join("low_res_logits.npy"));
    assert_eq!(shape, vec![3, 256, 256]);
    assert_close("low-res logits", &low, &npy::<f32>(&tiny().join("case_two_points_low_res.npy")).0, 1e-4);
    let (want, _) = npy::<u8>(&tiny().join("case_two_points_masks.npy"));
    let n = 117 * 173;
    for (i, m) in json["masks"].as_array().unwrap().iter().enumerate() {
        let png = image::open(out.join(m["file"].as_str().unwrap())).unwrap().into_luma8();
        assert_eq!(png.dimensions(), (173, 117));
        assert!(png.iter().all(|&v| v == 0 || v == 255), "mask {i} is not 0/255");
        let got: Vec<u8> = png.iter().map(|&v| (v > 0) as u8).collect();
        assert_eq!(m["area"].as_u64().unwrap() as usize, got.iter().map(|&v| v as usize).sum::<usize>());
        assert!(mask_iou(&got, &want[i * n..(i + 1) * n]) >= 0.999, "mask {i}");
    }
}

#[test]
fn single_mask_box_prediction_writes_one_mask() {
    let out = tmp("box");
    let o = run("predict", &["--image", s(&tiny().join("image.png")), "--box", "31,25.5,107.5,91", "--single-mask", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (low, shape) = npy::<f32>(&out.join("low_res_logits.npy"));
    assert_eq!(shape, vec![1, 256, 256]);
    assert_close("box logits", &low, &npy::<f32>(&tiny().join("case_box_low_res.npy")).0, 1e-4);
    assert!(out.join("mask_0.png").exists() && !out.join("mask_1.png").exists());
}

#[test]
fn embed_writes_the_embedding_and_its_metadata() {
    let out = tmp("embed").join("emb.npy");
    let o = run("embed", &["--image", s(&tiny().join("image_large.png")), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (got, shape) = npy::<f32>(&out);
    assert_eq!(shape, vec![1, 24, 64, 64]);
    assert_close("embedding", &got, &npy::<f32>(&tiny().join("image_large_embedding.npy")).0, 1e-4);
    let meta = json(&out.with_extension("json"));
    assert_eq!(meta["original_size"], serde_json::json!([683, 1031]));
    assert_eq!(meta["input_size"], serde_json::json!([678, 1024]));
    assert_eq!(meta["encoder_digest"].as_str().unwrap().len(), 64);
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure mentioning {needle:?}");
    let err = stderr(o);
    assert!(err.contains(needle), "stderr does not mention {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panicked instead of a clear error: {err}");
}

#[test]
fn malformed_points_and_boxes_are_named() {
    let out = tmp("bad-args");
    let img = tiny().join("image.png");
    assert_fails_with(&run("predict", &["--image", s(&img), "--point", "12,abc", "--out", s(&out)]), "'abc'");
    assert_fails_with(&run("predict", &["--image", s(&img), "--point", "12", "--out", s(&out)]), "X,Y");
    assert_fails_with(&run("predict", &["--image", s(&img), "--point", "1,2,7", "--out", s(&out)]), "label 7");
    assert_fails_with(&run("predict", &["--image", s(&img), "--box", "1,2,3", "--out", s(&out)]), "X0,Y0,X1,Y1");
    assert_fails_with(&run("predict", &["--image", s(&img), "--out", s(&out)]), "nothing to segment");
}

#[test]
fn prompts_outside_the_image_are_refused() {
    let out = tmp("outside");
    let img = tiny().join("image.png");
    assert_fails_with(&run("predict", &["--image", s(&img), "--point", "500,20", "--out", s(&out)]), "outside the 173×117 image");
    assert_fails_with(&run("predict", &["--image", s(&img), "--box", "10,10,5,50", "--out", s(&out)]), "box");
}

#[test]
fn unreadable_images_are_named() {
    let dir = tmp("bad-image");
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let out = dir.join("out");
    assert_fails_with(&run("predict", &["--image", s(&junk), "--point", "1,1", "--out", s(&out)]), "junk.jpg");
    assert_fails_with(&run("predict", &["--image", s(&dir.join("missing.png")), "--point", "1,1", "--out", s(&out)]), "missing.png");
}

#[test]
fn truncated_and_foreign_checkpoints_are_named() {
    let dir = tmp("bad-ckpt");
    let bytes = std::fs::read(tiny().join("checkpoint.pth")).unwrap();
    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let img = tiny().join("image.png");
    let out = dir.join("out");
    let o = segany(&["predict", "--checkpoint", s(&truncated), "--image", s(&img), "--point", "1,1", "--out", s(&out)]);
    assert_fails_with(&o, "truncated.pth");
    let text = dir.join("notes.pth");
    std::fs::write(&text, b"hello").unwrap();
    let o = segany(&["embed", "--checkpoint", s(&text), "--image", s(&img), "--out", s(&out)]);
    assert_fails_with(&o, "not a PyTorch checkpoint, safetensors or burnpack file");
    // A real SAM checkpoint of an unreleased size, without --config, names what it found.
    let o = segany(&["embed", "--checkpoint", s(&tiny().join("checkpoint.pth")), "--image", s(&img), "--out", s(&out)]);
    assert_fails_with(&o, "width 32 and depth 3");
    let o = segany(&["embed", "--checkpoint", s(&dir.join("absent.pth")), "--image", s(&img), "--out", s(&out)]);
    assert_fails_with(&o, "absent.pth does not exist");
}
