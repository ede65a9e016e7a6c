//! `segany serve` as clients see it: the real binary on a loopback port, real HTTP. Embeddings
//! equal the predictor's, caches hit (also after a restart), predictions decode to the predictor's
//! masks, every bad input is a 4xx JSON error, a burst gets only 200s and 503s, and SIGTERM lets
//! a request in flight finish.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use burn::tensor::Device;
use common::*;
use segany_model::SamConfig;
use segany_predict::masks::Rle;
use segany_predict::wire::{self, Dtype};
use segany_predict::{Predictor, decode_image};
use segany_weights::{load_bytes, load_file};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Tiny model's id: the file stem of its checkpoint (an unreleased configuration).
const TINY: &str = "checkpoint";

/// A running `segany serve`, stopped (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[String]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_segany"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("segany serve starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("segany listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("segany serve printed no address (exit: {:?})", child.wait());
            }
        };
        assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "{base}");
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
    }

    /// SIGTERM, then the exit status (within `limit`).
    fn stop(mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit(Duration::from_secs(60))
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn healthy(&self) {
        let r = get(self, "/healthz", &[]);
        assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})), "the server still answers /healthz");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn tiny_args() -> Vec<String> {
    vec!["--checkpoint".into(), s(&tiny().join("checkpoint.pth")), "--config".into(), s(&tiny().join("sam_config.json"))]
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|x| x.to_string()));
    args
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segany-server-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A JSON error: `{"error": "...", "field": ...}`.
    fn error(&self) -> (String, Option<String>) {
        let j = self.json();
        let msg = j["error"].as_str().unwrap_or_else(|| panic!("no error message in {j}")).to_string();
        (msg, j["field"].as_str().map(str::to_string))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .into()
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("an HTTP response");
    let body = r.body_mut().with_config().limit(1 << 30).read_to_vec().expect("the response body");
    Reply { status: r.status().as_u16(), headers: r.headers().clone(), body }
}

fn get(srv: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(srv.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.call())
}

fn post(srv: &Server, path: &str, body: &[u8]) -> Reply {
    reply(agent().post(srv.url(path)).send(body))
}

fn post_json(srv: &Server, body: &Value) -> Reply {
    reply(agent().post(srv.url("/api/v1/predict")).content_type("application/json").send(body.to_string()))
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn tiny_image() -> Vec<u8> {
    std::fs::read(tiny().join("image.png")).unwrap()
}

fn tiny_config() -> SamConfig {
    serde_json::from_slice(&std::fs::read(tiny().join("sam_config.json")).unwrap()).unwrap()
}

fn tiny_predictor() -> Predictor {
    let m = load_file(&tiny().join("checkpoint.pth"), Some(&tiny_config()), None, &Device::flex()).unwrap();
    Predictor::new(m, Device::flex())
}

/// A small PNG, different for every `seed`.
fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 36, |x, y| {
        image::Rgb([(x * 5 + seed) as u8, (y * 7 + seed / 256) as u8, (x * y + seed * 13) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

#[test]
fn models_list_ids_digests_and_decoder_urls() {
    // Two models: the tiny ViT and the tiny TinyViT, copied to names that become their ids.
    let dir = tmp("models");
    std::fs::copy(tiny_vit_t().join("checkpoint.pth"), dir.join("tiny_vit_t.pth")).unwrap();
    std::fs::write(dir.join("tiny_vit_t.json"), serde_json::to_string(&fixture_config(&tiny_vit_t())).unwrap()).unwrap();
    let args = with(tiny_args(), &["--checkpoint", &s(&dir.join("tiny_vit_t.pth")), "--config", &s(&dir.join("tiny_vit_t.json"))]);
    let srv = Server::start(&args);
    let r = get(&srv, "/api/v1/models", &[]);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["default"], TINY, "the first checkpoint is the default");
    let models = j["models"].as_array().unwrap();
    assert_eq!(models.iter().map(|m| m["id"].as_str().unwrap()).collect::<Vec<_>>(), [TINY, "tiny_vit_t"]);
    let tiny_digest = tiny_predictor().encoder_digest().to_string();
    assert_eq!(models[0]["encoder_digest"], tiny_digest.as_str());
    assert_eq!(models[0]["variant"], Value::Null);
    assert_eq!(models[0]["embedding_shape"], json!([1, 24, 64, 64]));
    assert_ne!(models[1]["encoder_digest"], models[0]["encoder_digest"]);
    for m in models {
        for dtype in ["f16", "f32"] {
            let d = &m["decoder"][dtype];
            let url = d["url"].as_str().unwrap();
            assert!(url.starts_with(&format!("/api/v1/models/{}/decoder?dtype={dtype}&sha256=", m["id"].as_str().unwrap())));
            let r = get(&srv, url, &[]);
            assert_eq!(r.status, 200, "{url}");
            assert_eq!(sha_hex(&r.body), d["sha256"].as_str().unwrap());
            assert_eq!(r.body.len() as u64, d["bytes"].as_u64().unwrap());
        }
    }
    srv.healthy();
}

#[test]
fn decoder_weights_load_in_f16_and_f32_and_revalidate_by_etag() {
    let srv = Server::start(&tiny_args());
    let digest = tiny_predictor().encoder_digest().to_string();
    let listed = get(&srv, "/api/v1/models", &[]).json();
    let mut sizes = Vec::new();
    for dtype in ["f16", "f32"] {
        let url = listed["models"][0]["decoder"][dtype]["url"].as_str().unwrap().to_string();
        let r = get(&srv, &url, &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"), "the listed URL pins the bytes");
        let etag = r.header("etag").unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", sha_hex(&r.body)));
        let model = load_bytes(r.body.clone(), None, None, &Device::flex()).expect("decoder weights load");
        assert!(model.encoder.is_none(), "decoder only");
        assert_eq!(model.encoder_digest, digest, "{dtype} weights carry the encoder digest");
        assert_eq!(model.config, tiny_config());
        sizes.push(r.body.len());

        let again = get(&srv, &url, &[("If-None-Match", &etag)]);
        assert_eq!((again.status, again.body.len()), (304, 0), "a cached copy is still good");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let other = get(&srv, &url, &[("If-None-Match", "\"something-else\"")]);
        assert_eq!(other.status, 200);

        // Without the pinned digest the client must revalidate.
        let plain = get(&srv, &format!("/api/v1/models/{TINY}/decoder?dtype={dtype}"), &[]);
        assert_eq!((plain.status, plain.header("cache-control")), (200, Some("no-cache")));
        assert_eq!(plain.body, r.body);
    }
    assert!(sizes[0] < sizes[1], "f16 is smaller than f32: {sizes:?}");
    let default = get(&srv, &format!("/api/v1/models/{TINY}/decoder"), &[]);
    assert_eq!(default.body.len(), sizes[0], "f16 by default");

    let stale = get(&srv, &format!("/api/v1/models/{TINY}/decoder?sha256={}", "0".repeat(64)), &[]);
    assert_eq!(stale.status, 404);
    assert_eq!(stale.error().1.as_deref(), Some("sha256"));
    let bad = get(&srv, &format!("/api/v1/models/{TINY}/decoder?dtype=f64"), &[]);
    assert_eq!((bad.status, bad.error().1.as_deref()), (400, Some("dtype")));
    let unknown = get(&srv, "/api/v1/models/vit_q/decoder", &[]);
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().0.contains("vit_q"));
}

/// The whole model for the page's WebGPU encoder: made on the first request, loadable with the
/// encoder, its embedding the server's, pinned by the encoder digest (and the server's version).
#[test]
fn whole_model_weights_for_webgpu_load_and_embed_as_the_server() {
    let srv = Server::start(&tiny_args());
    let want = tiny_predictor().embed(&decode_image(&tiny_image()).unwrap()).unwrap();
    let digest = tiny_predictor().encoder_digest().to_string();
    let listed = get(&srv, "/api/v1/models", &[]).json();
    let mut sizes = Vec::new();
    for dtype in ["f16", "f32"] {
        let url = listed["models"][0]["weights"][dtype]["url"].as_str().unwrap().to_string();
        assert!(url.contains(&format!("digest={digest}")), "{url}");
        let r = get(&srv, &url, &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
        let etag = r.header("etag").unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", sha_hex(&r.body)));
        assert_eq!(get(&srv, &url, &[("If-None-Match", &etag)]).status, 304);
        assert_eq!(get(&srv, &url, &[]).body, r.body, "made once, the same bytes after");
        let model = load_bytes(r.body.clone(), None, None, &Device::flex()).expect("whole model loads");
        assert!(model.encoder.is_some(), "with the image encoder");
        assert_eq!(model.encoder_digest, digest);
        let got = Predictor::new(model, Device::flex()).embed(&decode_image(&tiny_image()).unwrap()).unwrap();
        let scale = want.to_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        let tol = if dtype == "f32" { 1e-6 } else { 2e-2 } * scale;
        for (a, b) in got.to_vec().iter().zip(want.to_vec()) {
            assert!((a - b).abs() <= tol, "{dtype}: {a} vs {b}");
        }
        sizes.push(r.body.len());
    }
    assert!(sizes[0] < sizes[1], "f16 is smaller: {sizes:?}");
    let stale = get(&srv, &format!("/api/v1/models/{TINY}/weights?digest={}", "0".repeat(64)), &[]);
    assert_eq!((stale.status, stale.error().1.as_deref()), (404, Some("digest")));
    let unpinned = get(&srv, &format!("/api/v1/models/{TINY}/weights?dtype=f32"), &[]);
    assert_eq!((unpinned.status, unpinned.header("cache-control")), (200, Some("no-cache")));
    let bad = get(&srv, &format!("/api/v1/models/{TINY}/weights?dtype=bf16"), &[]);
    assert_eq!((bad.status, bad.error().1.as_deref()), (400, Some("dtype")));
    let extra = get(&srv, &format!("/api/v1/models/{TINY}/weights?size=big"), &[]);
    assert_eq!(extra.status, 400);
}

#[test]
fn embedding_equals_the_predictors_and_a_repeat_is_a_cache_hit() {
    let srv = Server::start(&tiny_args());
    let image = tiny_image();
    let want = tiny_predictor().embed(&decode_image(&image).unwrap()).unwrap();

    let first = post(&srv, "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.header("content-type"), Some(wire::CONTENT_TYPE));
    assert_eq!(first.header("x-segany-cache"), Some("miss"));
    let (header, values) = wire::decode(&first.body).unwrap();
    assert_eq!(values, want.to_vec(), "f32 is the predictor's embedding, bit for bit");
    assert_eq!(header.dtype, Dtype::F32);
    assert_eq!(header.shape, vec![1, 24, 64, 64]);
    assert_eq!(header.meta(), want.meta);
    assert_eq!((header.original_size, header.input_size), ([117, 173], [693, 1024]));
    assert_eq!(header.image_sha256, sha_hex(&image));
    assert_eq!(header.model, TINY);
    let meta: Value = serde_json::from_str(first.header("x-segany-meta").unwrap()).unwrap();
    assert_eq!(meta, serde_json::to_value(&header).unwrap(), "X-Segany-Meta is the body's header");

    let second = post(&srv, "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!((second.status, second.header("x-segany-cache")), (200, Some("hit")));
    assert_eq!(second.body, first.body, "a hit returns the same bytes");

    let half = post(&srv, &format!("/api/v1/embeddings?model={TINY}"), &image);
    assert_eq!((half.status, half.header("x-segany-cache")), (200, Some("hit")), "f16 comes from the same cached embedding");
    let (h16, v16) = wire::decode(&half.body).unwrap();
    assert_eq!(h16.dtype, Dtype::F16, "f16 by default");
    assert!(half.body.len() < first.body.len());
    for (a, b) in v16.iter().zip(want.to_vec()) {
        // f16 keeps 11 significant bits; below 2^-14 it is subnormal with a fixed step of 2^-24.
        assert!((a - b).abs() <= (b.abs() * 2f32.powi(-11)).max(2f32.powi(-24)), "{a} vs {b}");
    }

    let metrics = String::from_utf8(get(&srv, "/metrics", &[]).body).unwrap();
    assert_eq!(metric(&metrics, r#"segany_embedding_cache_total{result="miss"}"#), 1.0);
    assert_eq!(metric(&metrics, r#"segany_embedding_cache_total{result="memory_hit"}"#), 2.0);
}

#[test]
fn identical_concurrent_requests_are_computed_once() {
    let srv = Server::start(&tiny_args());
    let image = png(4242);
    let barrier = std::sync::Barrier::new(4);
    let bodies: Vec<Reply> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    barrier.wait();
                    post(&srv, "/api/v1/embeddings?dtype=f32", &image)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &bodies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, bodies[0].body);
    }
    let metrics = String::from_utf8(get(&srv, "/metrics", &[]).body).unwrap();
    assert_eq!(metric(&metrics, r#"segany_embedding_cache_total{result="miss"}"#), 1.0, "one encoder run for four requests");
}

#[test]
fn the_disk_cache_survives_a_restart_and_a_corrupt_file_is_recomputed() {
    let dir = tmp("disk-cache");
    let args = with(tiny_args(), &["--cache-dir", &s(&dir)]);
    let image = tiny_image();
    let sha = sha_hex(&image);

    let srv = Server::start(&args);
    let first = post(&srv, "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!((first.status, first.header("x-segany-cache")), (200, Some("miss")));
    assert!(srv.stop().success(), "a clean exit on SIGTERM");
    let file = dir.join(TINY).join(format!("{sha}.segemb"));
    assert!(file.is_file(), "{} written", file.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir.join(TINY)).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");

    let srv = Server::start(&args);
    let again = post(&srv, "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!((again.status, again.header("x-segany-cache")), (200, Some("hit")), "read back after the restart");
    assert_eq!(again.body, first.body);
    let metrics = String::from_utf8(get(&srv, "/metrics", &[]).body).unwrap();
    assert_eq!(metric(&metrics, r#"segany_embedding_cache_total{result="disk_hit"}"#), 1.0);
    assert!(srv.stop().success());

    // A prediction by hash also finds the embedding on disk after a restart.
    let srv = Server::start(&args);
    let p = post_json(&srv, &json!({"image_sha256": sha, "points": [{"x": 62.5, "y": 52.0, "label": 1}]}));
    assert_eq!((p.status, p.header("x-segany-cache")), (200, Some("hit")));
    assert!(srv.stop().success());

    // Truncated, then garbage: ignored, recomputed, rewritten; never a crash.
    for corrupt in [first.body[..first.body.len() / 2].to_vec(), b"not an embedding at all".to_vec()] {
        std::fs::write(&file, &corrupt).unwrap();
        let srv = Server::start(&args);
        let r = post(&srv, "/api/v1/embeddings?dtype=f32", &image);
        assert_eq!((r.status, r.header("x-segany-cache")), (200, Some("miss")), "recomputed");
        assert_eq!(r.body, first.body);
        let metrics = String::from_utf8(get(&srv, "/metrics", &[]).body).unwrap();
        assert_eq!(metric(&metrics, "segany_disk_cache_errors_total"), 1.0);
        srv.healthy();
        assert!(srv.stop().success());
        assert_eq!(std::fs::read(&file).unwrap(), first.body, "the file is rewritten whole");
    }
}

/// The JSON prompt of a `cases.json` entry.
fn prompt_json(case: &Value) -> Value {
    let mut j = json!({ "multimask": case["multimask"] });
    if let (Value::Array(p), Value::Array(l)) = (&case["points"], &case["labels"]) {
        j["points"] = p.iter().zip(l).map(|(p, l)| json!({"x": p[0], "y": p[1], "label": l})).collect();
    }
    if !case["box"].is_null() {
        j["box"] = case["box"].clone();
    }
    if let Some(f) = case["mask_input"].as_str() {
        let bytes: Vec<u8> = npy::<f32>(&tiny().join(f)).0.iter().flat_map(|v| v.to_le_bytes()).collect();
        j["mask_input"] = BASE64.encode(bytes).into();
    }
    j
}

#[test]
fn predictions_by_hash_and_by_bytes_decode_to_the_predictors_masks() {
    let srv = Server::start(&tiny_args());
    let image = tiny_image();
    let sha = sha_hex(&image);
    let mut predictor = tiny_predictor();
    predictor.set_image(&decode_image(&image).unwrap()).unwrap();

    // By hash before the image was embedded: 404 saying what to do.
    let early = post_json(&srv, &json!({"image_sha256": sha, "points": [{"x": 1, "y": 1, "label": 1}]}));
    assert_eq!(early.status, 404);
    let (msg, field) = early.error();
    assert!(msg.contains("POST the image"), "{msg}");
    assert_eq!(field.as_deref(), Some("image_sha256"));

    let cases = json(&tiny().join("cases.json"));
    let mut first = true;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let want = predictor.predict(&prompt_of(case, &tiny())).unwrap();
        let mut by_bytes = prompt_json(case);
        by_bytes["image"] = BASE64.encode(&image).into();
        by_bytes["return_logits"] = true.into();
        let mut by_hash = prompt_json(case);
        by_hash["image_sha256"] = sha.clone().into();
        by_hash["model"] = TINY.into();
        // The first by-bytes request embeds the image; by hash then finds it.
        for (how, body) in [("bytes", by_bytes), ("hash", by_hash)] {
            let r = post_json(&srv, &body);
            assert_eq!(r.status, 200, "{name} by {how}: {}", String::from_utf8_lossy(&r.body));
            let expected_cache = if first { "miss" } else { "hit" };
            first = false;
            assert_eq!(r.header("x-segany-cache"), Some(expected_cache), "{name} by {how}");
            let j = r.json();
            assert_eq!((j["model"].as_str(), j["image_sha256"].as_str()), (Some(TINY), Some(sha.as_str())));
            assert_eq!(j["size"], json!([117, 173]));
            let ious: Vec<f32> = j["iou_predictions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(ious, want.iou_predictions, "{name} by {how}: IoUs");
            let masks = j["masks"].as_array().unwrap();
            assert_eq!(masks.len(), want.num_masks, "{name}");
            for (i, m) in masks.iter().enumerate() {
                let rle: Rle = serde_json::from_value(m["segmentation"].clone()).unwrap();
                assert_eq!(rle.size, [117, 173]);
                assert_eq!(rle.decode().unwrap(), want.mask(i), "{name} by {how}: mask {i}");
                assert_eq!(m["area"].as_u64().unwrap() as usize, want.area(i));
                assert_eq!(m["bbox"], json!(rle.bbox().unwrap()));
                assert_eq!(m["predicted_iou"].as_f64().unwrap() as f32, want.iou_predictions[i]);
            }
            if how == "bytes" {
                let logits: Vec<f32> = BASE64
                    .decode(j["low_res_logits"].as_str().unwrap())
                    .unwrap()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(logits, want.low_res_logits, "{name}: low-res logits");
                assert_eq!(j["low_res_shape"], json!([want.num_masks, 256, 256]));
            } else {
                assert!(j.get("low_res_logits").is_none(), "logits only on request");
            }
        }
    }
    srv.healthy();
}

/// Settings under which the random tiny model keeps several masks (see
/// scripts/make_everything_fixtures.py).
const KEEP_MASKS: &str =
    "points_per_side=8&pred_iou_thresh=0.5&stability_score_thresh=0.3&stability_score_offset=0.05&box_nms_thresh=1.0";

/// The same masks in the same order: equal RLE, boxes and points, scores to f32 tolerance
/// (the server's decoder batches run on other threads).
fn assert_same_masks(got: &Value, want: &Value) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "number of masks");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for key in ["segmentation", "area", "bbox", "point_coords", "crop_box"] {
            assert_eq!(g[key], w[key], "mask {i}: {key}");
        }
        for key in ["predicted_iou", "stability_score"] {
            let (a, b) = (g[key].as_f64().unwrap(), w[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5, "mask {i}: {key} {a} vs {b}");
        }
    }
}

fn post_everything(srv: &Server, query: &str, body: &[u8], json_body: bool) -> Reply {
    let req = agent().post(srv.url(&format!("/api/v1/everything{query}")));
    let req = if json_body { req.content_type("application/json") } else { req };
    reply(req.send(body))
}

#[test]
fn everything_by_bytes_and_by_hash_equals_the_generator_and_bad_settings_name_the_field() {
    use segany_predict::everything::{self, EverythingSettings};
    let srv = Server::start(&tiny_args());
    let image = tiny_image();
    let sha = sha_hex(&image);
    let settings = EverythingSettings {
        points_per_side: 8,
        pred_iou_thresh: 0.5,
        stability_score_thresh: 0.3,
        stability_score_offset: 0.05,
        box_nms_thresh: 1.0,
        ..Default::default()
    };
    let want = everything::generate(&tiny_predictor(), &decode_image(&image).unwrap(), &settings, &mut |_, _| {}).unwrap();
    assert!(want.len() > 1);
    let want = serde_json::to_value(&want).unwrap();

    let r = post_everything(&srv, &format!("?model={TINY}&{KEEP_MASKS}"), &image, false);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!((j["model"].as_str(), j["image_sha256"].as_str()), (Some(TINY), Some(sha.as_str())));
    assert_eq!(j["size"], json!([117, 173]));
    assert_same_masks(&j["masks"], &want);
    let counts = j["masks"][0]["segmentation"]["counts"].as_str().expect("compressed COCO counts");
    let rle: Rle = serde_json::from_value(j["masks"][0]["segmentation"].clone()).unwrap();
    assert_eq!(rle.area().unwrap(), j["masks"][0]["area"].as_u64().unwrap(), "{counts}");

    // The image is now embedded: by hash, settings in JSON; a repeat is a cache hit.
    let body = json!({"image_sha256": sha, "settings": serde_json::to_value(&settings).unwrap()});
    let r = post_everything(&srv, "", body.to_string().as_bytes(), true);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_same_masks(&r.json()["masks"], &want);
    assert_eq!(r.header("x-segany-cache"), Some("hit"));
    // And by base64 bytes.
    let body = json!({"image": BASE64.encode(&image), "settings": {"points_per_side": 8, "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.3, "stability_score_offset": 0.05, "box_nms_thresh": 1.0}});
    let r = post_everything(&srv, "", body.to_string().as_bytes(), true);
    assert_eq!(r.status, 200);
    assert_same_masks(&r.json()["masks"], &want);

    let bad = |query: &str, body: &[u8], json_body: bool, field: &str| {
        let r = post_everything(&srv, query, body, json_body);
        assert_eq!(r.status, 400, "{query}: {}", String::from_utf8_lossy(&r.body));
        let (msg, f) = r.error();
        assert_eq!(f.as_deref(), Some(field), "{query}: {msg}");
    };
    bad("?points_per_side=abc", &image, false, "points_per_side");
    bad("?points_per_side=0", &image, false, "points_per_side");
    bad("?points_per_side=2.5", &image, false, "points_per_side");
    bad("?crop_overlap_ratio=1.5", &image, false, "crop_overlap_ratio");
    bad("?pred_iou_thresh=-1", &image, false, "pred_iou_thresh");
    bad("?points_per_sidе=8", &image, false, "points_per_sidе");
    bad("", br#"{"image_sha256": "00", "settings": {}}"#, true, "image_sha256");
    bad("", format!(r#"{{"image_sha256": "{sha}", "settings": {{"points_per_side": -1}}}}"#).as_bytes(), true, "settings.points_per_side");
    bad("", format!(r#"{{"image_sha256": "{sha}", "settings": {{"box_nms": 0.5}}}}"#).as_bytes(), true, "settings.box_nms");
    bad("", format!(r#"{{"image_sha256": "{sha}", "settings": {{"crop_n_layers": 1}}}}"#).as_bytes(), true, "settings.crop_n_layers");
    bad("", br#"{"settings": {}}"#, true, "image");
    let r = post_everything(&srv, "", b"not an image", false);
    assert_eq!(r.status, 400);
    assert!(r.error().0.contains("unknown format"), "{}", r.error().0);
    let r = post_everything(&srv, "?model=nope", &image, false);
    assert_eq!((r.status, r.error().1.as_deref()), (404, Some("model")));
    srv.healthy();
}

/// A PNG whose header claims `w × h` pixels (the file itself stays tiny).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png(1);
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = !0u32;
    for &b in &png[12..29] {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[test]
fn bad_inputs_get_a_4xx_json_error_and_the_server_keeps_serving() {
    let limit = 300_000;
    let srv = Server::start(&with(tiny_args(), &["--max-body-bytes", &limit.to_string()]));
    let image = tiny_image();
    let sha = sha_hex(&image);
    assert_eq!(post(&srv, "/api/v1/embeddings", &image).status, 200);
    let jpeg = jpeg();
    assert_eq!(post(&srv, "/api/v1/embeddings", &jpeg).status, 200, "a whole JPEG is fine");
    let emb = "/api/v1/embeddings";
    let point = json!([{"x": 62.5, "y": 52, "label": 1}]);
    let over_limit = format!("limit of {limit} bytes");

    // (what, status, field, words in the message, the request)
    type Req<'a> = Box<dyn Fn() -> Reply + 'a>;
    let cases: Vec<(&str, u16, Option<&str>, &str, Req)> = vec![
        ("empty body", 400, None, "empty body", Box::new(|| post(&srv, emb, b""))),
        ("not an image", 400, None, "unknown format", Box::new(|| post(&srv, emb, b"hello, this is text"))),
        ("truncated PNG", 400, None, "cannot read image", Box::new(|| post(&srv, emb, &image[..image.len() / 2]))),
        ("truncated JPEG", 400, None, "cannot read image", Box::new(|| post(&srv, emb, &jpeg[..jpeg.len() / 2]))),
        ("GIF", 415, None, "GIF images are not supported", Box::new(|| post(&srv, emb, b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0"))),
        ("BMP", 415, None, "BMP images are not supported", Box::new(|| post(&srv, emb, b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0"))),
        ("over the body limit", 413, None, &over_limit, Box::new(|| post(&srv, emb, &vec![7u8; limit + 1]))),
        ("decompression bomb", 413, None, "12000×12000", Box::new(|| post(&srv, emb, &png_claiming(12_000, 12_000)))),
        ("over the side limit", 413, None, "limit", Box::new(|| post(&srv, emb, &png_claiming(100_000, 10)))),
        ("unknown model", 404, Some("model"), "unknown model 'vit_zz'", Box::new(|| post(&srv, "/api/v1/embeddings?model=vit_zz", &image))),
        ("bad dtype", 400, Some("dtype"), "f64", Box::new(|| post(&srv, "/api/v1/embeddings?dtype=f64", &image))),
        ("misspelt parameter", 400, Some("modle"), "unknown query parameter", Box::new(|| post(&srv, "/api/v1/embeddings?modle=x", &image))),
        ("wrong method", 405, None, "GET is not allowed", Box::new(|| get(&srv, emb, &[]))),
        ("no such route", 404, None, "/api/v2/x", Box::new(|| get(&srv, "/api/v2/x", &[]))),
        ("malformed JSON", 400, None, "malformed JSON", Box::new(|| post(&srv, "/api/v1/predict", b"{points: []}"))),
        ("JSON cut short", 400, Some("points"), "EOF while parsing", Box::new(|| post(&srv, "/api/v1/predict", b"{\"points\": ["))),
        ("empty prediction body", 400, None, "empty body", Box::new(|| post(&srv, "/api/v1/predict", b""))),
        ("wrong type", 400, Some("points[0].x"), "invalid type", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "points": [{"x": "left", "y": 1, "label": 1}]})))),
        ("misspelt field", 400, Some("pointz"), "unknown field `pointz`", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "pointz": []})))),
        ("point outside", 400, Some("points[1]"), "outside the 173×117 image", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "points": [{"x": 1, "y": 1, "label": 1}, {"x": 500, "y": 1, "label": 1}]})))),
        ("bad label", 400, Some("points[0].label"), "label 5", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "points": [{"x": 1, "y": 1, "label": 5}]})))),
        ("inverted box", 400, Some("box"), "box", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "box": [100, 10, 20, 50]})))),
        ("box of 3", 400, Some("box"), "malformed JSON", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "box": [1, 2, 3]})))),
        ("short mask input", 400, Some("mask_input"), "65536", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "points": point, "mask_input": BASE64.encode([0u8; 16])})))),
        ("mask input not base64", 400, Some("mask_input"), "base64", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "points": point, "mask_input": "%%%"})))),
        ("nothing to segment", 400, Some("points"), "nothing to segment", Box::new(|| post_json(&srv, &json!({"image_sha256": sha})))),
        ("no image", 400, Some("image"), "image_sha256", Box::new(|| post_json(&srv, &json!({"points": point})))),
        ("both images", 400, Some("image"), "exactly one", Box::new(|| post_json(&srv, &json!({"image_sha256": sha, "image": "AAAA", "points": point})))),
        ("bad hash", 400, Some("image_sha256"), "64 hexadecimal", Box::new(|| post_json(&srv, &json!({"image_sha256": "abc", "points": point})))),
        ("unknown hash", 404, Some("image_sha256"), "POST the image", Box::new(|| post_json(&srv, &json!({"image_sha256": "ab".repeat(32), "points": point})))),
        ("unknown model to predict", 404, Some("model"), "vit_zz", Box::new(|| post_json(&srv, &json!({"model": "vit_zz", "image_sha256": sha, "points": point})))),
        ("image not base64", 400, Some("image"), "base64", Box::new(|| post_json(&srv, &json!({"image": "@@@", "points": point})))),
        ("image not an image", 400, Some("image"), "unknown format", Box::new(|| post_json(&srv, &json!({"image": BASE64.encode("text"), "points": point})))),
        ("image in GIF", 415, Some("image"), "GIF", Box::new(|| post_json(&srv, &json!({"image": BASE64.encode(b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0"), "points": point})))),
        ("truncated image", 400, Some("image"), "cannot read image", Box::new(|| post_json(&srv, &json!({"image": BASE64.encode(&image[..image.len() / 3]), "points": point})))),
    ];
    for (what, status, field, words, request) in &cases {
        let r = request();
        assert_eq!(r.status, *status, "{what}: {}", String::from_utf8_lossy(&r.body));
        let (msg, got_field) = r.error();
        assert!(msg.to_lowercase().contains(&words.to_lowercase()), "{what}: {msg:?} does not mention {words:?}");
        assert_eq!(got_field.as_deref(), *field, "{what}: field of {msg:?}");
        srv.healthy();
    }
    // Still computing after all that.
    assert_eq!(post(&srv, "/api/v1/embeddings", &png(77)).status, 200);
    let p = post_json(&srv, &json!({"image_sha256": sha, "points": point}));
    assert_eq!(p.status, 200);
}

#[test]
fn a_body_announced_over_the_limit_is_refused_with_413_before_the_rest_arrives() {
    let srv = Server::start(&with(tiny_args(), &["--max-body-bytes", "1000"]));
    let mut tcp = TcpStream::connect(srv.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Announce 50 MB, send only the headers and a little: the answer must not wait for the rest.
    write!(tcp, "POST /api/v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n").unwrap();
    tcp.write_all(&[0u8; 2000]).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
        let n = tcp.read(&mut buf).expect("a response before the body is sent");
        assert!(n > 0, "connection closed without a response");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    srv.healthy();
}

#[test]
fn a_burst_of_64_embeddings_gets_only_200s_and_503s_and_the_server_survives() {
    let srv = Server::start(&with(tiny_args(), &["--workers", "1", "--queue", "2"]));
    let images: Vec<Vec<u8>> = (0..64).map(png).collect();
    let barrier = std::sync::Barrier::new(64);
    let start = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|sc| {
        let handles: Vec<_> = images
            .iter()
            .map(|img| {
                let (srv, barrier) = (&srv, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    post(srv, "/api/v1/embeddings?dtype=f32", img)
                })
            })
            .collect();
        // A lost or hung request fails here: the client's timeout turns it into a panic.
        handles.into_iter().map(|h| h.join().expect("every request gets a response")).collect()
    });
    let elapsed = start.elapsed();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy = replies.iter().filter(|r| r.status == 503).count();
    assert_eq!(ok + busy, 64, "only 200 and 503: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(ok >= 1 && busy >= 1, "{ok} ok, {busy} busy");
    for (img, r) in images.iter().zip(&replies) {
        if r.status == 200 {
            let (h, v) = wire::decode(&r.body).unwrap();
            assert_eq!((h.image_sha256.as_str(), v.len()), (sha_hex(img).as_str(), 24 * 64 * 64), "each its own embedding");
        } else {
            let secs: u64 = r.header("retry-after").expect("503 carries Retry-After").parse().unwrap();
            assert!(secs >= 1);
            assert!(r.error().0.contains("queue is full"));
        }
    }
    eprintln!("burst: {ok} × 200, {busy} × 503 in {elapsed:.2?}");
    srv.healthy();
    let metrics = String::from_utf8(get(&srv, "/metrics", &[]).body).unwrap();
    assert_eq!(metric(&metrics, r#"segany_rejected_total{pool="encoder"}"#), busy as f64);
    assert_eq!(metric(&metrics, r#"segany_queue_depth{pool="encoder"}"#), 0.0);
    assert_eq!(metric(&metrics, r#"segany_workers_busy{pool="encoder"}"#), 0.0);
    assert_eq!(metric(&metrics, r#"segany_requests_total{route="/api/v1/embeddings",method="POST",status="503"}"#), busy as f64);
    // Refused images are not cached as failures: they compute when asked again.
    let refused = replies.iter().position(|r| r.status == 503).unwrap();
    assert_eq!(post(&srv, "/api/v1/embeddings", &images[refused]).status, 200);
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let mut srv = Server::start(&tiny_args());
    let image = tiny_image();
    let mut tcp = TcpStream::connect(srv.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(tcp, "POST /api/v1/embeddings?dtype=f32 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", image.len()).unwrap();
    let half = image.len() / 2;
    tcp.write_all(&image[..half]).unwrap();
    tcp.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    srv.sigterm();
    std::thread::sleep(Duration::from_millis(500));
    assert!(srv.child.try_wait().unwrap().is_none(), "still running: a request is in flight");
    // No new connections once shutting down.
    let refused = TcpStream::connect_timeout(&srv.addr().parse().unwrap(), Duration::from_secs(2));
    assert!(refused.is_err(), "the listener is closed");
    tcp.write_all(&image[half..]).unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).expect("the response, then the connection closes");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a full response head") + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (header, values) = wire::decode(&response[split..]).expect("the whole embedding");
    assert_eq!(header.image_sha256, sha_hex(&image));
    assert_eq!(values.len(), 24 * 64 * 64);
    assert!(srv.wait_exit(Duration::from_secs(30)).success(), "exits cleanly after the request");
}

#[test]
fn the_page_health_and_metrics_are_served() {
    let srv = Server::start(&tiny_args());
    let page = get(&srv, "/", &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(&srv, "/index.html", &[]).body, page.body);
    let html = String::from_utf8_lossy(&page.body).to_string();
    if html.contains("segany-app.js") {
        // The page trunk built (test.sh builds it first): its files, revalidated by ETag.
        for (file, mime) in [
            ("/segany-app.js", "text/javascript; charset=utf-8"),
            ("/segany-app_bg.wasm", "application/wasm"),
            ("/segany-decoder-worker.js", "text/javascript; charset=utf-8"),
            ("/segany-decoder-worker_bg.wasm", "application/wasm"),
            ("/segany-encoder-worker.js", "text/javascript; charset=utf-8"),
            ("/segany-encoder-worker_bg.wasm", "application/wasm"),
            ("/segany-segmenter.js", "text/javascript; charset=utf-8"),
        ] {
            let r = get(&srv, file, &[]);
            assert_eq!((r.status, r.header("content-type")), (200, Some(mime)), "{file}");
            let etag = r.header("etag").expect("an ETag").to_string();
            assert_eq!(get(&srv, file, &[("if-none-match", &etag)]).status, 304, "{file}");
        }
    } else {
        // Built without dist/: the placeholder says how to build the page.
        assert!(html.contains("/api/v1/models"));
    }
    srv.healthy();
    let m = get(&srv, "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.body).unwrap();
    assert!(metric(&text, r#"segany_requests_total{route="/healthz",method="GET",status="200"}"#) >= 1.0);
    assert!(metric(&text, r#"segany_request_duration_seconds_count{route="/healthz"}"#) >= 1.0);
    for name in [
        r#"segany_queue_depth{pool="encoder"}"#,
        r#"segany_queue_depth{pool="decoder"}"#,
        r#"segany_workers_busy{pool="encoder"}"#,
        r#"segany_embedding_cache_total{result="memory_hit"}"#,
        r#"segany_embedding_cache_total{result="disk_hit"}"#,
        "segany_requests_in_flight",
    ] {
        metric(&text, name);
    }
}

#[test]
fn any_origin_may_call_the_api_and_load_the_files() {
    let srv = Server::start(&tiny_args());
    let preflight = reply(
        agent()
            .options(srv.url("/api/v1/embeddings"))
            .header("origin", "https://labels.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .call(),
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(preflight.header("access-control-allow-headers").unwrap().contains("content-type"));
    let models = get(&srv, "/api/v1/models", &[("origin", "https://labels.example")]);
    assert_eq!(models.status, 200);
    assert_eq!(models.header("access-control-allow-origin"), Some("*"));
    let embedding = reply(agent().post(srv.url("/api/v1/embeddings")).header("origin", "https://labels.example").send(&tiny_image()[..]));
    assert_eq!(embedding.status, 200);
    assert!(embedding.header("access-control-expose-headers").unwrap().contains("x-segany-meta"));
    let page = get(&srv, "/", &[("origin", "https://labels.example")]);
    assert_eq!(page.header("access-control-allow-origin"), Some("*"));
    assert_eq!(page.header("cross-origin-resource-policy"), Some("cross-origin"));
    // Errors too, so that a page on another origin can read their message.
    let missing = get(&srv, "/api/v1/models/nope/decoder", &[("origin", "https://labels.example")]);
    assert_eq!((missing.status, missing.header("access-control-allow-origin")), (404, Some("*")));
    srv.healthy();
}

#[test]
fn unusable_serve_options_fail_with_a_clear_message() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_segany")).arg("serve").args(args).output().unwrap();
    let ckpt = s(&tiny().join("checkpoint.pth"));
    let cfg = s(&tiny().join("sam_config.json"));
    let o = run(&["--config", &cfg, "--checkpoint", &ckpt, "--addr", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("comes before any --checkpoint"));
    // The same checkpoint twice would be two models with one id.
    let o = run(&["--checkpoint", &ckpt, "--config", &cfg, "--checkpoint", &ckpt, "--config", &cfg, "--addr", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("would both be served as model 'checkpoint'"));
    let o = run(&["--checkpoint", "/nonexistent.pth", "--addr", "127.0.0.1:0"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.pth does not exist"));
}
