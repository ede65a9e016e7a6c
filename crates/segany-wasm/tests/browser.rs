//! The browser build against the reference fixtures, run in headless Chromium by
//! wasm-bindgen-test (`cargo test -p segany-wasm --target wasm32-unknown-unknown`): the decoder
//! the page's worker runs must give the reference's numbers, as natively.
#![cfg(target_arch = "wasm32")]

use segany_model::SamConfig;
use segany_predict::npy::from_npy;
use segany_predict::wire::{self, Dtype, WireHeader};
use segany_predict::{EmbeddingMeta, Point, Predictor, Prompt, decode_image};
use segany_wasm::{AttentionPartial, Decoder, DecoderSession, Exchange};
use std::future::Future;
use serde_json::Value;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny/", $name)).as_slice()
    };
}

const WEIGHTS: &[u8] = fixture!("checkpoint.safetensors");
const CONFIG: &[u8] = fixture!("sam_config.json");
const CASES: &[u8] = fixture!("cases.json");
const IMAGE: &[u8] = fixture!("image.png");
const EMBEDDING: &[u8] = fixture!("image_embedding.npy");

/// A case's reference outputs, by the file names `cases.json` gives.
fn output(name: &str) -> Vec<f32> {
    let bytes: &[u8] = match name {
        "case_one_point_iou.npy" => fixture!("case_one_point_iou.npy"),
        "case_one_point_low_res.npy" => fixture!("case_one_point_low_res.npy"),
        "case_one_point_masks.npy" => fixture!("case_one_point_masks.npy"),
        "case_two_points_iou.npy" => fixture!("case_two_points_iou.npy"),
        "case_two_points_low_res.npy" => fixture!("case_two_points_low_res.npy"),
        "case_two_points_masks.npy" => fixture!("case_two_points_masks.npy"),
        "case_box_iou.npy" => fixture!("case_box_iou.npy"),
        "case_box_low_res.npy" => fixture!("case_box_low_res.npy"),
        "case_box_masks.npy" => fixture!("case_box_masks.npy"),
        "case_box_point_iou.npy" => fixture!("case_box_point_iou.npy"),
        "case_box_point_low_res.npy" => fixture!("case_box_point_low_res.npy"),
        "case_box_point_masks.npy" => fixture!("case_box_point_masks.npy"),
        "case_mask_input_iou.npy" => fixture!("case_mask_input_iou.npy"),
        "case_mask_input_low_res.npy" => fixture!("case_mask_input_low_res.npy"),
        "case_mask_input_masks.npy" => fixture!("case_mask_input_masks.npy"),
        "case_mask_input_mask_input.npy" => fixture!("case_mask_input_mask_input.npy"),
        "case_three_points_single_iou.npy" => fixture!("case_three_points_single_iou.npy"),
        "case_three_points_single_low_res.npy" => fixture!("case_three_points_single_low_res.npy"),
        "case_three_points_single_masks.npy" => fixture!("case_three_points_single_masks.npy"),
        other => panic!("fixture {other} is not compiled into the test"),
    };
    if let Ok((v, _)) = from_npy::<f32>(bytes) {
        return v;
    }
    let (v, _) = from_npy::<u8>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    v.into_iter().map(f32::from).collect()
}

fn config() -> SamConfig {
    serde_json::from_slice(CONFIG).unwrap()
}

fn cases() -> Vec<Value> {
    let v: Value = serde_json::from_slice(CASES).unwrap();
    v["cases"].as_array().unwrap().iter().filter(|c| c["image"] == "image.png").cloned().collect()
}

fn prompt_of(case: &Value) -> Prompt {
    let points = case["points"]
        .as_array()
        .map(|p| {
            p.iter()
                .zip(case["labels"].as_array().unwrap())
                .map(|(p, l)| Point { x: p[0].as_f64().unwrap(), y: p[1].as_f64().unwrap(), label: l.as_i64().unwrap() as i32 })
                .collect()
        })
        .unwrap_or_default();
    let bbox = case["box"].as_array().map(|b| [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap()));
    let mask_input = case["mask_input"].as_str().map(output);
    Prompt { points, bbox, mask_input, multimask: case["multimask"].as_bool().unwrap() }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, |a, d| if d.is_nan() { f32::INFINITY } else { a.max(d) });
    assert!(worst <= rtol * scale, "{what}: max |Δ| {worst:e} > {rtol:e} × {scale}");
}

fn assert_masks_match(what: &str, got: &[u8], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: mask size");
    let (mut inter, mut union) = (0usize, 0usize);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g != 0, w != 0.0);
        inter += (g && w) as usize;
        union += (g || w) as usize;
    }
    let iou = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
    assert!(iou >= 0.999, "{what}: mask IoU {iou}");
}

fn check_case(predict: impl Fn(&Prompt) -> segany_predict::Prediction, case: &Value) {
    let name = case["name"].as_str().unwrap();
    let p = predict(&prompt_of(case));
    assert_close(&format!("{name} iou"), &p.iou_predictions, &output(&format!("case_{name}_iou.npy")), 1e-4);
    assert_close(&format!("{name} low-res logits"), &p.low_res_logits, &output(&format!("case_{name}_low_res.npy")), 1e-4);
    assert_masks_match(name, &p.masks, &output(&format!("case_{name}_masks.npy")));
}

/// The reference embedding, in the wire format the server sends.
fn reference_embedding_bytes(predictor: &Predictor, dtype: Dtype) -> Vec<u8> {
    let (values, shape) = from_npy::<f32>(EMBEDDING).unwrap();
    let image = decode_image(IMAGE).unwrap();
    let original_size = [image.height, image.width];
    let meta = EmbeddingMeta {
        variant: None,
        encoder_digest: predictor.encoder_digest().to_string(),
        input_size: segany_predict::geometry::preprocess_shape(original_size, 1024),
        original_size,
    };
    wire::encode(&WireHeader::new(&meta, &shape, dtype, "00", "tiny"), &values)
}

#[wasm_bindgen_test]
fn decoder_from_a_wire_embedding_matches_the_reference_for_every_prompt_kind() {
    let model = segany_weights::load_bytes(WEIGHTS.to_vec(), Some(&config()), None, &burn::tensor::Device::flex()).unwrap();
    let predictor = Predictor::new(model, burn::tensor::Device::flex());
    let bytes = reference_embedding_bytes(&predictor, Dtype::F32);
    let mut session = DecoderSession::from_weights_with_config(WEIGHTS.to_vec(), Some(config())).unwrap();
    session.set_embedding_bytes(&bytes).unwrap();
    for case in cases() {
        check_case(|p| session.predict(p).unwrap(), &case);
    }
}

/// Two shards' exchanges in one thread: each posts its share of a round and waits for the other's.
struct Board(std::rc::Rc<std::cell::RefCell<Vec<[Option<AttentionPartial>; 2]>>>, usize, usize);

impl Exchange for Board {
    fn exchange(&mut self, mine: AttentionPartial) -> impl std::future::Future<Output = Option<Vec<AttentionPartial>>> {
        let (board, shard, round) = (self.0.clone(), self.1, self.2);
        self.2 += 1;
        {
            let mut b = board.borrow_mut();
            if b.len() <= round {
                b.push([None, None]);
            }
            b[round][shard] = Some(mine);
        }
        std::future::poll_fn(move |_| match &board.borrow()[round] {
            [Some(a), Some(b)] => std::task::Poll::Ready(Some(vec![a.clone(), b.clone()])),
            _ => std::task::Poll::Pending,
        })
    }
}

/// The page's two decoder workers, in one: two sessions, each shard of a band of grid rows,
/// exchange attention shares and make the mask rows their bands give; with the rows between
/// bands, that is the reference's prediction (and the masks made from the joined logits).
#[wasm_bindgen_test]
fn two_decoder_shards_together_match_the_reference_for_every_prompt_kind() {
    let model = segany_weights::load_bytes(WEIGHTS.to_vec(), Some(&config()), None, &burn::tensor::Device::flex()).unwrap();
    let bytes = reference_embedding_bytes(&Predictor::new(model, burn::tensor::Device::flex()), Dtype::F32);
    let sessions: Vec<DecoderSession> = (0..2)
        .map(|i| {
            let mut s = DecoderSession::from_weights_with_config(WEIGHTS.to_vec(), Some(config())).unwrap();
            s.set_embedding_bytes(&bytes).unwrap();
            s.set_shard(i, 2).unwrap();
            s
        })
        .collect();
    for case in cases() {
        check_case(
            |prompt| {
                let board = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                let mut ex = [Board(board.clone(), 0, 0), Board(board, 1, 0)];
                let [e0, e1] = &mut ex;
                let mut f0 = std::pin::pin!(sessions[0].decode_shard(prompt, e0));
                let mut f1 = std::pin::pin!(sessions[1].decode_shard(prompt, e1));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let (mut r0, mut r1) = (None, None);
                for _turn in 0..8 {
                    if r0.is_none() && let std::task::Poll::Ready(r) = f0.as_mut().poll(&mut cx) {
                        r0 = Some(r.unwrap().expect("never abandoned"));
                    }
                    if r1.is_none() && let std::task::Poll::Ready(r) = f1.as_mut().poll(&mut cx) {
                        r1 = Some(r.unwrap().expect("never abandoned"));
                    }
                }
                let ((m0, iou0), (m1, iou1)) = (r0.expect("shard 0 finished"), r1.expect("shard 1 finished"));
                assert_eq!(iou0, iou1, "both shards predict the same IoU");
                // Each shard makes the mask rows its band alone gives; the rows between, at the end.
                let made = [sessions[0].shard_masks(&m0, iou0.len()).unwrap(), sessions[1].shard_masks(&m1, iou1.len()).unwrap()];
                assert!(made[0].rows.end <= made[1].rows.start && !made[0].rows.is_empty() && !made[1].rows.is_empty(), "{:?}", made.each_ref().map(|m| &m.rows));
                let joined = sessions[0].prediction_from_shards(&[&m0, &m1], &made, iou0.clone()).unwrap();
                assert_eq!(joined.masks, sessions[0].prediction_from_shards(&[&m0, &m1], &[], iou0).unwrap().masks, "the shards' mask rows");
                joined
            },
            &case,
        );
    }
}

#[wasm_bindgen_test]
fn embedding_and_predictions_computed_in_wasm_match_the_reference() {
    let device = burn::tensor::Device::flex();
    let model = segany_weights::load_bytes(WEIGHTS.to_vec(), Some(&config()), None, &device).unwrap();
    let mut predictor = Predictor::new(model, device);
    let image = decode_image(IMAGE).unwrap();
    let embedding = predictor.set_image(&image).unwrap().to_vec();
    assert_close("embedding", &embedding, &from_npy::<f32>(EMBEDDING).unwrap().0, 1e-4);
    for case in cases() {
        check_case(|p| predictor.predict(p).unwrap(), &case);
    }
}

#[wasm_bindgen_test]
fn js_decoder_refuses_an_embedding_of_other_weights_and_predicts_from_a_js_prompt() {
    let mut decoder = Decoder::new_with_config(WEIGHTS.to_vec(), &String::from_utf8(CONFIG.to_vec()).unwrap()).unwrap();
    let model = segany_weights::load_bytes(WEIGHTS.to_vec(), Some(&config()), None, &burn::tensor::Device::flex()).unwrap();
    let predictor = Predictor::new(model, burn::tensor::Device::flex());
    let mut foreign = wire::decode(&reference_embedding_bytes(&predictor, Dtype::F16)).unwrap().0;
    foreign.encoder_digest = "ff".repeat(32);
    let (_, values) = wire::decode(&reference_embedding_bytes(&predictor, Dtype::F16)).unwrap();
    assert!(decoder.set_embedding(&wire::encode(&foreign, &values)).is_err(), "foreign embedding accepted");

    // f16 on the wire, as the server sends by default: within f16 rounding of the reference.
    decoder.set_embedding(&reference_embedding_bytes(&predictor, Dtype::F16)).unwrap();
    let case = &cases()[0];
    let prompt = js_sys::JSON::parse(&serde_json::json!({
        "points": case["points"].as_array().unwrap().iter().zip(case["labels"].as_array().unwrap())
            .map(|(p, l)| serde_json::json!({"x": p[0], "y": p[1], "label": l})).collect::<Vec<_>>(),
        "multimask": true,
    }).to_string()).unwrap();
    let out = decoder.predict(prompt).unwrap();
    let get = |k: &str| js_sys::Reflect::get(&out, &JsValue::from_str(k)).unwrap();
    let ious = js_sys::Float32Array::from(get("iouPredictions")).to_vec();
    let name = case["name"].as_str().unwrap();
    assert_close("iou from f16 embedding", &ious, &output(&format!("case_{name}_iou.npy")), 1e-2);
    assert_eq!(get("numMasks").as_f64(), Some(3.0));
}

/// The decoder's wasm GEMM (plain or relaxed SIMD, as this test is built) against a plain
/// double-precision product, for every path it takes: `b` row-major (ragged row blocks and
/// column panels, inner products longer than one slice), `b` transposed (dot-product tiles, a
/// ragged inner dimension; a short one copied row-major), other strides, accumulate and scale.
#[wasm_bindgen_test]
fn wasm_gemm_equals_a_plain_product_for_every_layout() {
    use segany_model::wasm_gemm::gemm;
    let mut seed = 7u32;
    let mut random = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    // (m, n, k), with padding on each row of a and c.
    let shapes = [(1, 1, 1), (4, 8, 16), (5, 9, 3), (13, 17, 40), (3, 29, 600), (56, 203, 257), (67, 5, 33), (2, 64, 31), (9, 3, 513)];
    for (m, n, k) in shapes {
        let (lda, ldc) = (k + 3, n + 2);
        let a: Vec<f32> = (0..m * lda).map(|_| random()).collect();
        // (b_rs, b_cs): row-major, transposed, and neither (every other element of a wider store).
        for (b_rs, b_cs) in [(n, 1), (1, k), (2 * n, 2)] {
            let b: Vec<f32> = (0..(k - 1) * b_rs + (n - 1) * b_cs + 1).map(|_| random()).collect();
            for (accumulate, scale) in [(false, 1.0), (true, 0.25)] {
                let c0: Vec<f32> = (0..m * ldc).map(|_| random()).collect();
                let mut c = c0.clone();
                gemm(m, n, k, &a, lda, &b, (b_rs, b_cs), &mut c, ldc, accumulate, scale);
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j >= n {
                            assert_eq!(got, c0[i * ldc + j], "({m}, {n}, {k}) strides ({b_rs}, {b_cs}): padding at ({i}, {j}) written");
                            continue;
                        }
                        let dot: f64 = (0..k).map(|p| f64::from(a[i * lda + p]) * f64::from(b[p * b_rs + j * b_cs])).sum();
                        let want = f64::from(scale) * dot + if accumulate { f64::from(c0[i * ldc + j]) } else { 0.0 };
                        let bound = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-6;
                        assert!(
                            (f64::from(got) - want).abs() <= bound,
                            "({m}, {n}, {k}) strides ({b_rs}, {b_cs}) accumulate {accumulate}: ({i}, {j}) = {got}, want {want}"
                        );
                    }
                }
            }
        }
    }
}
