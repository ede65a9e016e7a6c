//! The predictor's one path, as callers that keep embeddings themselves use it (the server):
//! `embed` + `predict_with` give exactly what `set_image` + `predict` give.

mod common;

use burn::tensor::Device;
use common::*;
use segany_predict::{Point, PredictError, Predictor, Prompt, decode_image};
use segany_weights::load_file;

fn predictor() -> Predictor {
    let dir = tiny();
    let m = load_file(&dir.join("checkpoint.pth"), Some(&fixture_config(&dir)), None, &Device::flex()).unwrap();
    Predictor::new(m, Device::flex())
}

#[test]
fn embed_and_predict_with_equal_set_image_and_predict_for_every_case() {
    let mut p = predictor();
    let image = decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    let emb = p.embed(&image).unwrap();
    assert!(p.embedding().is_none(), "embed keeps nothing");
    let stored = p.set_image(&image).unwrap().to_vec();
    assert_eq!(emb.to_vec(), stored);
    let cases = json(&tiny().join("cases.json"));
    for case in cases["cases"].as_array().unwrap() {
        let prompt = prompt_of(case, &tiny());
        let want = p.predict(&prompt).unwrap();
        let got = p.predict_with(&emb, &prompt).unwrap();
        let name = case["name"].as_str().unwrap();
        assert_eq!(got.masks, want.masks, "{name}");
        assert_eq!(got.iou_predictions, want.iou_predictions, "{name}");
        assert_eq!(got.low_res_logits, want.low_res_logits, "{name}");
        // Rebuilt from its values (as from a cache), the embedding predicts the same.
        let rebuilt = p.embedding_from(emb.to_vec(), emb.meta.clone()).unwrap();
        assert_eq!(p.predict_with(&rebuilt, &prompt).unwrap().masks, want.masks, "{name}");
    }
}

#[test]
fn predict_with_refuses_an_embedding_of_other_weights() {
    let p = predictor();
    let image = decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    let mut emb = p.embed(&image).unwrap();
    emb.meta.encoder_digest = "0".repeat(64);
    let prompt = Prompt { points: vec![Point { x: 10.0, y: 10.0, label: 1 }], ..Default::default() };
    assert!(matches!(p.predict_with(&emb, &prompt), Err(PredictError::EmbeddingMismatch { .. })));
}

#[test]
fn prompt_errors_name_the_field_at_fault() {
    let p = predictor();
    let image = decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    let emb = p.embed(&image).unwrap();
    let field = |prompt: Prompt| p.predict_with(&emb, &prompt).unwrap_err().field();
    let ok = Point { x: 10.0, y: 10.0, label: 1 };
    let outside = Point { x: 10.0, y: 500.0, label: 1 };
    assert_eq!(field(Prompt { points: vec![ok, outside], ..Default::default() }).as_deref(), Some("points[1]"));
    let bad_label = Point { label: 2, ..ok };
    assert_eq!(field(Prompt { points: vec![bad_label], ..Default::default() }).as_deref(), Some("points[0].label"));
    assert_eq!(field(Prompt { bbox: Some([50.0, 10.0, 20.0, 30.0]), ..Default::default() }).as_deref(), Some("box"));
    assert_eq!(field(Prompt { mask_input: Some(vec![0.0; 7]), ..Default::default() }).as_deref(), Some("mask_input"));
}

/// The page's sharded postprocessing: each shard makes the mask rows its band of the
/// low-resolution logits alone gives; with the rows between bands made from the joined logits,
/// the masks are `predict`'s. Checked on `predict`'s own logits, cut into the shards' bands.
#[test]
fn shard_mask_rows_and_the_rows_between_equal_predict() {
    let mut whole = predictor();
    let image = decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    let emb = whole.set_image(&image).unwrap().clone();
    let [h, w] = emb.meta.original_size;
    for count in [2, 3] {
        let shards: Vec<Predictor> = (0..count)
            .map(|i| {
                let mut p = predictor();
                p.set_shard(i, count).unwrap();
                p.set_embedding(emb.to_vec(), emb.meta.clone()).unwrap();
                p
            })
            .collect();
        let cases = json(&tiny().join("cases.json"));
        for case in cases["cases"].as_array().unwrap() {
            let want = whole.predict(&prompt_of(case, &tiny())).unwrap();
            let n = want.num_masks;
            let mut made = Vec::new();
            for (i, p) in shards.iter().enumerate() {
                // Shard i's band: low-res rows of grid rows i·64/count.. (4 per grid row).
                let band_rows = 4 * (i * 64 / count)..4 * ((i + 1) * 64 / count);
                let band: Vec<f32> = (0..n).flat_map(|m| want.low_res(m)[band_rows.start * 256..band_rows.end * 256].to_vec()).collect();
                let m = p.shard_masks(&band, n).unwrap();
                for k in 0..n {
                    let rows = &m.masks[k * m.rows.len() * w..(k + 1) * m.rows.len() * w];
                    assert_eq!(rows, &want.mask(k)[m.rows.start * w..m.rows.end * w], "shard {i} of {count}, mask {k}");
                }
                made.push(m);
            }
            // All rows but those near where bands meet: within two low-res rows of it.
            let covered: usize = made.iter().map(|m| m.rows.len()).sum();
            let per_low_row = (4 * h).div_ceil(emb.meta.input_size[0]);
            assert!(h - covered <= (count - 1) * 2 * (per_low_row + 1), "{count} shards make {covered} of {h} rows");
            let joined = whole.prediction_from_shards(want.low_res_logits.clone(), want.iou_predictions.clone(), &made).unwrap();
            assert_eq!(joined.masks, want.masks, "{count} shards, case {}", case["name"]);
            // Rows that do not fit are made again, not trusted.
            let mut bad = made.clone();
            bad[0].masks.pop();
            let again = whole.prediction_from_shards(want.low_res_logits.clone(), want.iou_predictions.clone(), &bad).unwrap();
            assert_eq!(again.masks, want.masks);
        }
    }
}

/// The exchange of a shard that holds every grid row (the predictor's default), whose decode
/// is abandoned at round `quit` (as when a peer fails or the decode is cancelled); until then
/// its share is the whole.
struct QuitsAt {
    quit: usize,
    rounds: usize,
}

impl segany_model::Exchange for QuitsAt {
    fn exchange(&mut self, mine: segany_model::AttentionPartial) -> impl Future<Output = Option<Vec<segany_model::AttentionPartial>>> {
        self.rounds += 1;
        std::future::ready((self.rounds <= self.quit).then(|| vec![mine]))
    }
}

/// A decode that an exchange abandons stops at that exchange (no later exchange, no masks); one
/// that is never abandoned runs to its end.
#[test]
fn a_shard_stops_at_the_exchange_that_abandons_the_decode() {
    let mut p = predictor();
    let image = decode_image(&std::fs::read(tiny().join("image.png")).unwrap()).unwrap();
    p.set_image(&image).unwrap();
    let prompt = Prompt { points: vec![Point { x: 20.0, y: 30.0, label: 1 }], ..Default::default() };
    let poll = |ex: &mut QuitsAt| {
        let mut f = std::pin::pin!(p.decode_shard(&prompt, ex));
        match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(out) => out.unwrap(),
            std::task::Poll::Pending => panic!("ready exchanges never wait"),
        }
    };
    for quit in 0..3 {
        let mut ex = QuitsAt { quit, rounds: 0 };
        assert!(poll(&mut ex).is_none(), "abandoned at round {quit}");
        assert_eq!(ex.rounds, quit + 1, "no exchange after the one that abandoned");
    }
    let mut ex = QuitsAt { quit: usize::MAX, rounds: 0 };
    let (masks, iou) = poll(&mut ex).expect("never abandoned");
    assert_eq!(ex.rounds, 3, "three exchanges a decode");
    assert_eq!(iou, p.predict(&prompt).unwrap().iou_predictions, "alone, its share is the whole");
    assert!(!masks.is_empty());
}
