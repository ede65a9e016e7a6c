//! End to end through the CLI on full-size random checkpoints in the official layout, the variant
//! detected from the file: `vit_b` (375 MB) and MobileSAM's `vit_t` (40 MB), made by
//! `python scripts/make_fixtures.py --config vit_b|vit_t --out fixtures-large/<config>` (git-ignored).
//! Skipped, saying so, when a fixture has not been generated.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> Option<PathBuf> {
    let dir = repo().join("fixtures-large").join(name);
    if dir.join("checkpoint.pth").exists() && dir.join("cases.json").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is missing; generate it with scripts/setup_reference_venv.sh and \
             `python scripts/make_fixtures.py --config {name} --out fixtures-large/{name}`",
            dir.display()
        );
        None
    }
}

#[test]
fn cli_predict_matches_reference_on_full_size_vit_b() {
    check_cli_against_reference("vit_b");
}

#[test]
fn cli_predict_matches_reference_on_full_size_mobile_sam() {
    check_cli_against_reference("vit_t");
}

fn check_cli_against_reference(name: &str) {
    let Some(dir) = fixture(name) else { return };
    let variant = name;
    let cases = json(&dir.join("cases.json"));
    let [h, w] = [cases["original_size"][0].as_u64().unwrap() as usize, cases["original_size"][1].as_u64().unwrap() as usize];
    let n = h * w;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let out = std::env::temp_dir().join(format!("segany-{variant}-{}-{name}", std::process::id()));
        let mut args: Vec<String> = vec![
            "predict".into(),
            "--checkpoint".into(),
            dir.join("checkpoint.pth").display().to_string(),
            "--image".into(),
            dir.join(case["image"].as_str().unwrap()).display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let (Value::Array(p), Value::Array(l)) = (&case["points"], &case["labels"]) {
            for (p, l) in p.iter().zip(l) {
                args.push("--point".into());
                args.push(format!("{},{},{}", p[0], p[1], l));
            }
        }
        if let Value::Array(b) = &case["box"] {
            args.push("--box".into());
            args.push(b.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        }
        if let Some(m) = case["mask_input"].as_str() {
            args.push("--mask-input".into());
            args.push(dir.join(m).display().to_string());
        }
        if !case["multimask"].as_bool().unwrap() {
            args.push("--single-mask".into());
        }
        let o = Command::new(env!("CARGO_BIN_EXE_segany")).args(&args).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));

        let f = |s: &str| dir.join(format!("case_{name}_{s}.npy"));
        let (low, _) = npy::<f32>(&out.join("low_res_logits.npy"));
        assert_close(&format!("{name} low-res logits"), &low, &npy::<f32>(&f("low_res")).0, 1e-4);
        let pred = json(&out.join("prediction.json"));
        let iou: Vec<f32> = pred["iou_predictions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_close(&format!("{name} iou"), &iou, &npy::<f32>(&f("iou")).0, 1e-4);
        let (want, _) = npy::<u8>(&f("masks"));
        for (i, m) in pred["masks"].as_array().unwrap().iter().enumerate() {
            let png = image::open(out.join(m["file"].as_str().unwrap())).unwrap().into_luma8();
            let got: Vec<u8> = png.iter().map(|&v| (v > 0) as u8).collect();
            let iou = mask_iou(&got, &want[i * n..(i + 1) * n]);
            assert!(iou >= 0.999, "{name} mask {i}: IoU {iou}");
        }
        eprintln!("{variant} {name}: matches the reference");
    }
}
