//! Automatic mask generation against the reference `SamAutomaticMaskGenerator` on the tiny random
//! checkpoint (fixtures from `scripts/make_everything_fixtures.py`): the generated masks, and the
//! pieces the generator is built from (NMS, crop boxes, small-region removal).

mod common;

use std::path::PathBuf;

use burn::tensor::Device;
use common::*;
use segany_predict::everything::{self, EverythingSettings, GeneratedMask, RegionMode};
use segany_predict::masks::Rle;
use segany_predict::{Predictor, decode_image};
use segany_weights::load_file;
use serde_json::Value;

fn dir() -> PathBuf {
    tiny().join("everything")
}

fn cases() -> Value {
    json(&dir().join("cases.json"))
}

fn predictor() -> Predictor {
    let config = fixture_config(&tiny());
    let m = load_file(&tiny().join("checkpoint.pth"), Some(&config), None, &Device::flex()).expect("tiny checkpoint loads");
    Predictor::new(m, Device::flex())
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Pairs each reference mask with a distinct generated one of mask IoU ≥ 0.99 and compares
/// their scores, boxes and areas.
fn assert_same_masks(name: &str, got: &[GeneratedMask], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "{name}: {} masks, the reference has {}", got.len(), want.len());
    let got_masks: Vec<Vec<u8>> = got.iter().map(|m| m.segmentation.decode().unwrap()).collect();
    let mut used = vec![false; got.len()];
    for (k, w) in want.iter().enumerate() {
        let rle: Rle = serde_json::from_value(w["segmentation"].clone()).unwrap();
        let wm = rle.decode().unwrap();
        // Several masks may be (nearly) equal: among those of IoU ≥ 0.99, the closest in score.
        let iou_ref = w["predicted_iou"].as_f64().unwrap();
        let candidates: Vec<(usize, f64)> = (0..got.len())
            .filter(|&i| !used[i] && got[i].segmentation.size == rle.size)
            .map(|i| (i, mask_iou(&got_masks[i], &wm)))
            .collect();
        let best = candidates
            .iter()
            .filter(|c| c.1 >= 0.99)
            .min_by(|a, b| (got[a.0].predicted_iou as f64 - iou_ref).abs().total_cmp(&(got[b.0].predicted_iou as f64 - iou_ref).abs()));
        let Some(&(i, _)) = best else {
            let closest = candidates.iter().map(|c| c.1).fold(0f64, f64::max);
            panic!("{name}: reference mask {k} has no match of mask IoU ≥ 0.99 (closest {closest})")
        };
        used[i] = true;
        let g = &got[i];
        let what = format!("{name}: reference mask {k} (ours {i})");
        assert!((g.predicted_iou as f64 - iou_ref).abs() <= 1e-4 * iou_ref.abs().max(1.0), "{what}: predicted_iou {} vs {iou_ref}", g.predicted_iou);
        let st_ref = w["stability_score"].as_f64().unwrap();
        assert!((g.stability_score as f64 - st_ref).abs() <= 1e-3, "{what}: stability_score {} vs {st_ref}", g.stability_score);
        assert_eq!(g.bbox.map(|v| v as f64).to_vec(), f64s(&w["bbox"]), "{what}: bbox");
        assert_eq!(g.area as f64, w["area"].as_f64().unwrap(), "{what}: area");
        assert_eq!(g.area, g.segmentation.area().unwrap(), "{what}: area of the RLE");
        assert_eq!(g.crop_box.map(|v| v as f64).to_vec(), f64s(&w["crop_box"]), "{what}: crop_box");
        let p = f64s(&w["point_coords"][0]);
        assert!((g.point_coords[0][0] - p[0]).abs() < 1e-9 && (g.point_coords[0][1] - p[1]).abs() < 1e-9, "{what}: point {:?} vs {p:?}", g.point_coords);
    }
}

#[test]
fn generated_masks_match_the_reference_generator() {
    let p = predictor();
    for case in cases()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let settings: EverythingSettings = serde_json::from_value(case["settings"].clone()).unwrap();
        settings.validate().unwrap();
        let image = decode_image(&std::fs::read(dir().join(case["image"].as_str().unwrap())).unwrap()).unwrap();
        let mut calls = Vec::new();
        let got = everything::generate(&p, &image, &settings, &mut |done, total| calls.push((done, total))).unwrap();
        let total = settings.total_points([image.height, image.width]);
        assert_eq!(calls.last(), Some(&(total, total)), "{name}: progress ends at all prompts");
        assert_same_masks(name, &got, case["masks"].as_array().unwrap());
    }
}

#[test]
fn nms_keeps_what_torchvision_keeps() {
    for (k, case) in cases()["nms"].as_array().unwrap().iter().enumerate() {
        let boxes: Vec<[i64; 4]> = case["boxes"].as_array().unwrap().iter().map(|b| [0, 1, 2, 3].map(|i| b[i].as_i64().unwrap())).collect();
        let scores: Vec<f32> = f64s(&case["scores"]).iter().map(|&v| v as f32).collect();
        let keep: Vec<usize> = case["keep"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(everything::box_nms(&boxes, &scores, case["iou_threshold"].as_f64().unwrap()), keep, "nms case {k}");
    }
}

#[test]
fn crop_boxes_match_the_reference() {
    for case in cases()["crop_boxes"].as_array().unwrap() {
        let size = f64s(&case["size"]);
        let got = everything::crop_boxes([size[0] as usize, size[1] as usize], case["n_layers"].as_u64().unwrap() as usize, case["overlap_ratio"].as_f64().unwrap());
        let boxes: Vec<Vec<f64>> = case["boxes"].as_array().unwrap().iter().map(f64s).collect();
        let layers: Vec<usize> = case["layers"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(got.iter().map(|(b, _)| b.map(|v| v as f64).to_vec()).collect::<Vec<_>>(), boxes, "{case}");
        assert_eq!(got.iter().map(|&(_, l)| l).collect::<Vec<_>>(), layers, "{case}");
    }
}

#[test]
fn small_region_removal_matches_opencv_components() {
    let r = &cases()["regions"];
    let area = r["area_thresh"].as_u64().unwrap() as usize;
    let (masks, shape) = npy::<u8>(&dir().join("regions_masks.npy"));
    let (holes, _) = npy::<u8>(&dir().join("regions_holes.npy"));
    let (islands, _) = npy::<u8>(&dir().join("regions_islands.npy"));
    let (h, w) = (shape[1], shape[2]);
    for i in 0..shape[0] {
        let at = i * h * w..(i + 1) * h * w;
        let (got, changed) = everything::remove_small_regions(&masks[at.clone()], [h, w], area, RegionMode::Holes);
        assert_eq!(got, holes[at.clone()], "mask {i}: holes");
        assert_eq!(changed, r["holes_changed"][i].as_bool().unwrap(), "mask {i}: holes changed");
        let (got, changed) = everything::remove_small_regions(&masks[at.clone()], [h, w], area, RegionMode::Islands);
        assert_eq!(got, islands[at], "mask {i}: islands");
        assert_eq!(changed, r["islands_changed"][i].as_bool().unwrap(), "mask {i}: islands changed");
    }
}

// --- the CLI -------------------------------------------------------------------------------

fn segany(cmd: &str, extra: &[&str]) -> std::process::Output {
    let t = tiny();
    let mut args = vec![cmd.to_string(), "--checkpoint".into(), s(&t.join("checkpoint.pth")), "--config".into(), s(&t.join("sam_config.json"))];
    args.extend(extra.iter().map(|x| x.to_string()));
    std::process::Command::new(env!("CARGO_BIN_EXE_segany")).args(&args).output().expect("segany runs")
}

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segany-everything-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Settings under which the random model keeps masks (see scripts/make_everything_fixtures.py).
const KEEP_MASKS: [&str; 12] = [
    "--points-per-side", "8", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.3",
    "--stability-score-offset", "0.05", "--box-nms-thresh", "1.0", "--min-mask-region-area", "100",
];

#[test]
fn everything_on_a_photo_writes_coco_rle_that_decodes_to_its_area_and_bbox() {
    let out = tmp("truck");
    let image = repo().join("tests/fixtures/images/truck.jpg");
    let mut args = vec!["--image".to_string(), s(&image), "--out".into(), s(&out)];
    args.extend(KEEP_MASKS.iter().map(|a| a.to_string()));
    let o = segany("everything", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("64/64 prompts (100%)"), "progress on stderr: {}", stderr(&o));
    let doc = json(&out.join("masks.json"));
    assert_eq!(doc["size"], serde_json::json!([1200, 1800]));
    let masks = doc["masks"].as_array().unwrap();
    assert!(masks.len() > 1, "{} masks", masks.len());
    for (i, m) in masks.iter().enumerate() {
        let rle: Rle = serde_json::from_value(m["segmentation"].clone()).unwrap();
        assert!(m["segmentation"]["counts"].is_string(), "compressed counts");
        assert_eq!(rle.size, [1200, 1800]);
        let mask = rle.decode().unwrap();
        let area = mask.iter().map(|&v| v as u64).sum::<u64>();
        assert_eq!(m["area"].as_u64().unwrap(), area, "mask {i}: area");
        let [x0, y0, x1, y1] = everything::mask_box(&mask, [1200, 1800]);
        assert_eq!(f64s(&m["bbox"]), vec![x0 as f64, y0 as f64, (x1 - x0) as f64, (y1 - y0) as f64], "mask {i}: bbox");
        for key in ["predicted_iou", "stability_score", "point_coords", "crop_box"] {
            assert!(!m[key].is_null(), "mask {i}: {key}");
        }
    }
    let overlay = image::open(out.join("overlay.png")).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (1800, 1200));
    // pycocotools itself, where the reference environment exists.
    let python = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/segany/refvenv/bin/python"));
    match python.filter(|p| p.exists()) {
        Some(py) => {
            let o = std::process::Command::new(py).arg(repo().join("scripts/check_coco_rle.py")).arg(out.join("masks.json")).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            if String::from_utf8_lossy(&o.stderr).contains("No module named 'pycocotools'") {
                eprintln!("SKIPPED the pycocotools check: not installed in the reference venv");
            } else {
                assert!(o.status.success(), "{text}{}", stderr(&o));
            }
        }
        None => eprintln!("SKIPPED the pycocotools check: no reference venv (scripts/setup_reference_venv.sh)"),
    }
}

#[test]
fn boxes_proposals_and_edges_write_their_outputs() {
    let image = tiny().join("image.png");
    let out = tmp("boxes");
    let boxes = out.join("boxes.json");
    std::fs::write(&boxes, "[[10, 12, 90, 80], [100.5, 5, 170, 110], [0, 0, 173, 117]]").unwrap();
    let o = segany("boxes", &["--image", &s(&image), "--boxes", &s(&boxes), "--batch", "2", "--out", &s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&out.join("masks.json"));
    assert_eq!(doc["masks"].as_array().unwrap().len(), 3);
    // Batched decoding equals one box at a time.
    let p = predictor();
    let img = decode_image(&std::fs::read(&image).unwrap()).unwrap();
    let mut p1 = p;
    p1.set_image(&img).unwrap();
    let single = p1.predict(&segany_predict::Prompt { points: vec![], bbox: Some([100.5, 5.0, 170.0, 110.0]), mask_input: None, multimask: false }).unwrap();
    let rle: Rle = serde_json::from_value(doc["masks"][1]["segmentation"].clone()).unwrap();
    assert!(mask_iou(&rle.decode().unwrap(), single.mask(0)) > 0.999);
    assert!((doc["masks"][1]["predicted_iou"].as_f64().unwrap() - single.iou_predictions[0] as f64).abs() < 1e-4);

    let bad = out.join("bad.json");
    std::fs::write(&bad, "[[10, 12, 900, 80]]").unwrap();
    let o = segany("boxes", &["--image", &s(&image), "--boxes", &s(&bad), "--out", &s(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("box 0"), "{}", stderr(&o));

    let out = tmp("proposals");
    let mut args = vec!["--image".to_string(), s(&image), "--out".into(), s(&out)];
    args.extend(KEEP_MASKS.iter().map(|a| a.to_string()));
    let o = segany("proposals", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let props = json(&out.join("proposals.json"))["proposals"].as_array().unwrap().clone();
    assert!(!props.is_empty());
    let scores: Vec<f64> = props.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked by score: {scores:?}");
    assert_eq!(props[0]["box"].as_array().unwrap().len(), 4);

    let out = tmp("edges");
    let mut args = vec!["--image".to_string(), s(&image), "--out".into(), s(&out)];
    args.extend(KEEP_MASKS.iter().map(|a| a.to_string()));
    let o = segany("edges", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let edges = image::open(out.join("edges.png")).unwrap().to_luma8();
    assert_eq!((edges.width(), edges.height()), (173, 117));
    assert!(edges.pixels().any(|p| p.0[0] > 0), "some edges");
}

#[test]
fn everything_errors_name_the_problem() {
    let out = tmp("errors");
    let image = tiny().join("image.png");
    let o = segany("everything", &["--image", &s(&image), "--out", &s(&out), "--crop-overlap-ratio", "1.5"]);
    assert!(!o.status.success() && stderr(&o).contains("--crop-overlap-ratio"), "{}", stderr(&o));
    let o = segany("everything", &["--image", &s(&image), "--out", &s(&out), "--points-per-side", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--points-per-side"), "{}", stderr(&o));
    let o = segany("everything", &["--image", &s(&tiny().join("cases.json")), "--out", &s(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("cases.json"), "{}", stderr(&o));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_segany"))
        .args(["everything", "--checkpoint", &s(&tiny().join("image.png")), "--image", &s(&image), "--out", &s(&out)])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("image.png"), "{}", stderr(&o));
}

#[test]
fn tiny_images_with_crop_layers_do_not_fail() {
    let p = predictor();
    for (h, w) in [(1, 1), (2, 3), (5, 1)] {
        let image = segany_predict::RgbImage { height: h, width: w, data: vec![128; h * w * 3] };
        let settings = EverythingSettings { points_per_side: 2, crop_n_layers: 1, min_mask_region_area: 4, ..Default::default() };
        let mut last = (0, 0);
        everything::generate(&p, &image, &settings, &mut |d, t| last = (d, t)).unwrap();
        assert_eq!(last.0, last.1, "{h}×{w}: progress reaches the total");
    }
}
