//! The HTTP API (`/api/v1/…`), health, metrics and static files. Every error is JSON
//! `{"error": "...", "field": "..."}` (see [`ApiError`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use segany_predict::masks::Rle;
use segany_predict::wire::{self, Dtype};
use segany_predict::everything::{EverythingInput, EverythingSettings, generate_with};
use segany_predict::{Point, Prompt, image_io};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::models::hex;
use crate::pool::PoolError;
use crate::state::AppState;
use crate::static_files;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/{id}/decoder", get(decoder))
        .route("/api/v1/models/{id}/weights", get(full_weights))
        .route("/api/v1/embeddings", post(embeddings))
        .route("/api/v1/predict", post(predict))
        .route("/api/v1/everything", post(everything))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn(cors))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// CORS for every origin: the widget loads the page's files and calls the API from labeling sites
/// on other origins. No cookies or credentials are involved, so `*` is enough; preflights are
/// answered here, before routing.
async fn cors(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, if-none-match"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-segany-meta, x-segany-cache, etag, retry-after, content-length"),
    );
    // Loadable by hosts that isolate themselves (COEP: require-corp).
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response
}

/// Counts every request by route, method and status, and times it.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("fallback", |p| p.as_str()).to_string();
    // Only known methods become labels, so that clients cannot grow the metrics without bound.
    let method = match *req.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::OPTIONS | Method::PATCH => {
            req.method().as_str().to_string()
        }
        _ => "other".into(),
    };
    let _in_flight = state.metrics.start();
    let start = Instant::now();
    let response = next.run(req).await;
    state.metrics.record(&route, &method, response.status().as_u16(), start.elapsed());
    response
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = state.metrics.render(&[&state.encoder_pool, &state.decoder_pool], state.memory_usage());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

fn decoder_url(id: &str, dtype: Dtype, sha256: &str) -> String {
    format!("/api/v1/models/{id}/decoder?dtype={}&sha256={sha256}", dtype.name())
}

/// The whole model's URL names what its bytes are a function of (the encoder weights' digest and
/// this server's version), since their own SHA-256 is known only once they are made.
fn weights_url(id: &str, dtype: Dtype, digest: &str) -> String {
    format!("/api/v1/models/{id}/weights?dtype={}&digest={digest}&build={}", dtype.name(), env!("CARGO_PKG_VERSION"))
}

async fn models(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let models: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            let decoder = |dtype: Dtype| {
                let d = m.decoder(dtype);
                json!({ "url": decoder_url(&m.id, dtype, &d.sha256), "sha256": d.sha256, "bytes": d.bytes.len() })
            };
            json!({
                "id": m.id,
                "variant": m.variant.map(|v| v.name()),
                "checkpoint": m.checkpoint.file_name().map(|f| f.to_string_lossy()),
                "encoder_digest": m.encoder_digest,
                "embedding_shape": m.embedding_shape,
                "decoder": { "f16": decoder(Dtype::F16), "f32": decoder(Dtype::F32) },
                "weights": {
                    "f16": { "url": weights_url(&m.id, Dtype::F16, &m.encoder_digest) },
                    "f32": { "url": weights_url(&m.id, Dtype::F32, &m.encoder_digest) },
                },
            })
        })
        .collect();
    axum::Json(json!({ "default": state.models.first().map(|m| &m.id), "models": models }))
}

/// Decoder weights (burnpack). The URL listed by `/api/v1/models` names the weights' SHA-256, so
/// its bytes never change: cached for a year. Without `sha256` the client must revalidate.
async fn decoder(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q.as_deref(), &["dtype", "sha256"])?;
    let dtype = dtype(&q)?;
    let model = state.model(Some(&id), "id")?;
    let weights = model.decoder(dtype);
    let pinned = match q.get("sha256") {
        Some(sha) if *sha != weights.sha256 => {
            return Err(ApiError::not_found(format!(
                "model '{id}' has no decoder weights {sha} (it serves {}): GET /api/v1/models for the current URL",
                weights.sha256
            ))
            .field("sha256"));
        }
        Some(_) => true,
        None => false,
    };
    Ok(weights_response(&weights.sha256, pinned, &headers, weights.bytes.clone()))
}

/// The whole model as a burnpack (image encoder included), for the page's WebGPU encoder. Made on
/// the first request (seconds for the large models); `digest` and `build` pin what it is made of.
async fn full_weights(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q.as_deref(), &["dtype", "digest", "build"])?;
    let dtype = dtype(&q)?;
    let model = state.model(Some(&id), "id")?;
    let mut pinned = false;
    if let Some(digest) = q.get("digest") {
        if *digest != model.encoder_digest {
            return Err(ApiError::not_found(format!(
                "model '{id}' has no weights with encoder digest {digest} (it serves {}): GET /api/v1/models for the current URL",
                model.encoder_digest
            ))
            .field("digest"));
        }
        pinned = q.get("build").is_some_and(|b| b == env!("CARGO_PKG_VERSION"));
    }
    let weights = model.full_weights(dtype).await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(weights_response(&weights.sha256, pinned, &headers, weights.bytes.clone()))
}

/// A weights file with its `ETag`; `pinned` (its URL names its content) makes it immutable.
fn weights_response(sha256: &str, pinned: bool, headers: &HeaderMap, body: Bytes) -> Response {
    let etag = format!("\"{sha256}\"");
    let cache = if pinned { "public, max-age=31536000, immutable" } else { "no-cache" };
    let common = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, cache.to_string())];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// `POST /api/v1/embeddings?model=ID&dtype=f16|f32` with the image bytes as the body.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let q = query(q.as_deref(), &["model", "dtype"])?;
    let dtype = dtype(&q)?;
    let model = state.model(q.get("model").map(String::as_str), "model")?;
    let image = body_bytes(body, state.max_body_bytes)?;
    if image.is_empty() {
        return Err(ApiError::bad_request("empty body: POST the image file's bytes (JPEG, PNG or WebP)"));
    }
    image_io::image_size(&image, state.max_pixels).map_err(|e| ApiError::image(e, None))?;
    let sha = sha256(&image).await?;
    let (emb, cache) = state.embedding(model.clone(), sha.clone(), image).await?;
    let header = emb.header(dtype, &sha, &model.id);
    let body = wire::encode(&header, &emb.values);
    let meta = HeaderValue::from_str(&header.to_json()).map_err(|_| ApiError::internal("metadata is not ASCII"))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(wire::CONTENT_TYPE))],
        [("x-segany-meta", meta), ("x-segany-cache", HeaderValue::from_static(cache.header()))],
        body,
    )
        .into_response())
}

fn yes() -> bool {
    true
}

/// The body of `POST /api/v1/predict`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    model: Option<String>,
    /// An image already embedded (by `/api/v1/embeddings` or an earlier prediction).
    image_sha256: Option<String>,
    /// Or the image bytes, base64.
    image: Option<String>,
    #[serde(default)]
    points: Vec<Point>,
    #[serde(default, rename = "box")]
    bbox: Option<[f64; 4]>,
    /// base64 of little-endian f32 `256 × 256` low-resolution logits.
    mask_input: Option<String>,
    #[serde(default = "yes")]
    multimask: bool,
    #[serde(default)]
    return_logits: bool,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    query(q.as_deref(), &[])?;
    let body = body_bytes(body, state.max_body_bytes)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body: POST a JSON prediction request"));
    }
    let req: PredictRequest = parse_json(&body)?;
    let model = state.model(req.model.as_deref(), "model")?;
    let ((emb, cache), sha) = match (req.image_sha256, req.image) {
        (Some(_), Some(_)) | (None, None) => return Err(one_image_please()),
        (Some(sha), None) => {
            let sha = checked_sha(&sha)?;
            let found = state.cached_embedding(&model, &sha).await?.ok_or_else(|| not_embedded(&model.id, &sha))?;
            (found, sha)
        }
        (None, Some(b64)) => {
            let image = Bytes::from(
                BASE64.decode(b64.as_bytes()).map_err(|e| ApiError::bad_request(format!("image is not base64: {e}")).field("image"))?,
            );
            if image.is_empty() {
                return Err(ApiError::bad_request("image is empty").field("image"));
            }
            image_io::image_size(&image, state.max_pixels).map_err(|e| ApiError::image(e, Some("image")))?;
            let sha = sha256(&image).await?;
            (state.embedding(model.clone(), sha.clone(), image).await.map_err(name_image)?, sha)
        }
    };
    let mask_input = match req.mask_input {
        Some(b64) => Some(f32s(&b64).map_err(|e| ApiError::bad_request(format!("mask_input {e}")).field("mask_input"))?),
        None => None,
    };
    let prompt = Prompt { points: req.points, bbox: req.bbox, mask_input, multimask: req.multimask };
    if prompt.points.is_empty() && prompt.bbox.is_none() && prompt.mask_input.is_none() {
        return Err(ApiError::bad_request("nothing to segment: give points, a box or a mask_input").field("points"));
    }
    let (m, return_logits) = (model.clone(), req.return_logits);
    let job = move || -> Result<Value, ApiError> {
        let embedding = m.predictor.embedding_from(emb.values.clone(), emb.meta.clone()).map_err(ApiError::predict)?;
        let p = m.predictor.predict_with(&embedding, &prompt).map_err(ApiError::predict)?;
        let masks: Vec<Value> = (0..p.num_masks)
            .map(|i| {
                let rle = Rle::encode(p.mask(i), p.size);
                json!({
                    "area": rle.area().expect("freshly encoded"),
                    "bbox": rle.bbox().expect("freshly encoded"),
                    "predicted_iou": p.iou_predictions[i],
                    "segmentation": rle,
                })
            })
            .collect();
        let mut out = json!({
            "model": m.id,
            "image_sha256": sha,
            "size": p.size,
            "iou_predictions": p.iou_predictions,
            "masks": masks,
        });
        if return_logits {
            let bytes: Vec<u8> = p.low_res_logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            out["low_res_logits"] = BASE64.encode(bytes).into();
            out["low_res_shape"] = json!([p.num_masks, segany_predict::predictor::LOW_RES, segany_predict::predictor::LOW_RES]);
        }
        Ok(out)
    };
    let out = match state.decoder_pool.run(job).await {
        Ok(out) => out?,
        Err(PoolError::Full { retry_after }) => return Err(ApiError::busy("decoder", retry_after)),
        Err(PoolError::Panicked) => return Err(ApiError::internal("the mask decoder failed")),
    };
    Ok(([("x-segany-cache", cache.header())], axum::Json(out)).into_response())
}

/// Settings of `/api/v1/everything`, as query parameters (image body) or `settings` (JSON body).
const EVERYTHING_SETTINGS: [&str; 11] = [
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
];

/// The JSON body of `POST /api/v1/everything` (the alternative to posting the image itself).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EverythingRequest {
    model: Option<String>,
    image_sha256: Option<String>,
    image: Option<String>,
    #[serde(default)]
    settings: EverythingSettings,
}

/// `POST /api/v1/everything`: automatic mask generation. The body is the image file (settings
/// as query parameters) or JSON `{"model", "image_sha256" | "image", "settings": {...}}`. The
/// whole job runs on the encoder pool: it embeds (every crop) and decodes hundreds of prompts.
async fn everything(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body, state.max_body_bytes)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty body: POST the image file's bytes, or JSON with image_sha256 or image (base64)",
        ));
    }
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let (model, settings, sha, image, found) = if is_json {
        query(q.as_deref(), &[])?;
        let req: EverythingRequest = parse_json(&body)?;
        let model = state.model(req.model.as_deref(), "model")?;
        check_settings(&req.settings, "settings.")?;
        match (req.image_sha256, req.image) {
            (Some(_), Some(_)) | (None, None) => return Err(one_image_please()),
            (Some(sha), None) => {
                let sha = checked_sha(&sha)?;
                if req.settings.crop_n_layers > 0 {
                    return Err(ApiError::bad_request(
                        "crop layers need the image's pixels, not only its embedding: send the image's bytes",
                    )
                    .field("settings.crop_n_layers"));
                }
                let found = state.cached_embedding(&model, &sha).await?.ok_or_else(|| not_embedded(&model.id, &sha))?;
                (model, req.settings, sha, None, found)
            }
            (None, Some(b64)) => {
                let image = Bytes::from(
                    BASE64.decode(b64.as_bytes()).map_err(|e| ApiError::bad_request(format!("image is not base64: {e}")).field("image"))?,
                );
                if image.is_empty() {
                    return Err(ApiError::bad_request("image is empty").field("image"));
                }
                image_io::image_size(&image, state.max_pixels).map_err(|e| ApiError::image(e, Some("image")))?;
                let sha = sha256(&image).await?;
                let found = state.embedding(model.clone(), sha.clone(), image.clone()).await.map_err(name_image)?;
                (model, req.settings, sha, Some(image), found)
            }
        }
    } else {
        let mut allowed = vec!["model"];
        allowed.extend(EVERYTHING_SETTINGS);
        let q = query(q.as_deref(), &allowed)?;
        let model = state.model(q.get("model").map(String::as_str), "model")?;
        let mut map = serde_json::Map::new();
        for (k, v) in q.iter().filter(|(k, _)| *k != "model") {
            let n: Value = serde_json::from_str(v)
                .ok()
                .filter(Value::is_number)
                .ok_or_else(|| ApiError::bad_request(format!("{k} must be a number, not '{v}'")).field(k.clone()))?;
            map.insert(k.clone(), n);
        }
        let settings: EverythingSettings = parse_json(Value::Object(map).to_string().as_bytes())?;
        check_settings(&settings, "")?;
        image_io::image_size(&body, state.max_pixels).map_err(|e| ApiError::image(e, None))?;
        let sha = sha256(&body).await?;
        let found = state.embedding(model.clone(), sha.clone(), body.clone()).await?;
        (model, settings, sha, Some(body), found)
    };
    let ((emb, cache), max_pixels) = (found, state.max_pixels);
    let m = model.clone();
    let job = move || -> Result<Value, ApiError> {
        let embedding = m.predictor.embedding_from(emb.values.clone(), emb.meta.clone()).map_err(ApiError::predict)?;
        // The pixels are needed only for crop layers (the whole image's embedding is cached).
        let pixels = match (&image, settings.crop_n_layers) {
            (Some(bytes), 1..) => Some(image_io::decode_image_limited(bytes, max_pixels).map_err(|e| ApiError::image(e, None))?),
            _ => None,
        };
        let input = EverythingInput { image: pixels.as_ref(), embedding: Some(&embedding) };
        let masks = generate_with(&m.predictor, input, &settings, &mut |_, _| {}, false).map_err(ApiError::predict)?;
        let masks: Vec<_> = masks.into_iter().map(|(mask, _)| mask).collect();
        Ok(json!({
            "model": m.id,
            "image_sha256": sha,
            "size": emb.meta.original_size,
            "settings": settings,
            "masks": masks,
        }))
    };
    let out = match state.encoder_pool.run(job).await {
        Ok(out) => out?,
        Err(PoolError::Full { retry_after }) => return Err(ApiError::busy("encoder", retry_after)),
        Err(PoolError::Panicked) => return Err(ApiError::internal("automatic mask generation failed")),
    };
    Ok(([("x-segany-cache", cache.header())], axum::Json(out)).into_response())
}

/// Settings out of range: 400 naming the setting (`prefix` + its name).
fn check_settings(settings: &EverythingSettings, prefix: &str) -> Result<(), ApiError> {
    settings.validate().map_err(|e| ApiError::bad_request(format!("{} {}", e.field, e.message)).field(format!("{prefix}{}", e.field)))
}

/// Image errors of a prediction concern its `image` field.
fn name_image(e: ApiError) -> ApiError {
    if e.field.is_none() && e.status.is_client_error() { e.field("image") } else { e }
}

/// A JSON request names its image by exactly one of `image_sha256` and `image`.
fn one_image_please() -> ApiError {
    ApiError::bad_request("give exactly one of image_sha256 (of an image already embedded) or image (its bytes, base64)")
        .field("image")
}

/// `image_sha256`, lower-cased, or a 400.
fn checked_sha(sha: &str) -> Result<String, ApiError> {
    let sha = sha.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("image_sha256 must be 64 hexadecimal digits").field("image_sha256"));
    }
    Ok(sha)
}

fn not_embedded(model: &str, sha: &str) -> ApiError {
    ApiError::not_found(format!(
        "image {sha} has no embedding by model '{model}' here: POST the image to /api/v1/embeddings?model={model} \
         first, or send its bytes as \"image\""
    ))
    .field("image_sha256")
}

/// GET of a static file; anything else unknown is a JSON 404.
async fn fallback(State(state): State<Arc<AppState>>, method: Method, uri: axum::http::Uri, request_headers: HeaderMap) -> Response {
    let if_none_match = request_headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if (method == Method::GET || method == Method::HEAD)
        && let Some(f) = static_files::find(state.static_files, uri.path())
    {
        // Revalidated on every load (the names are stable), answered 304 when unchanged.
        let headers = [(header::CONTENT_TYPE, f.mime), (header::CACHE_CONTROL, "no-cache"), (header::ETAG, f.etag)];
        if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == f.etag || t.trim() == "*")) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        return (headers, f.bytes).into_response();
    }
    ApiError::not_found(format!("no such resource: {method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path())).into_response()
}

/// The request body, or 413 over the limit.
fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {limit} bytes"))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })
}

async fn sha256(bytes: &Bytes) -> Result<String, ApiError> {
    let bytes = bytes.clone();
    // Tens of megabytes take tens of milliseconds: off the async threads.
    tokio::task::spawn_blocking(move || hex(&Sha256::digest(&bytes)))
        .await
        .map_err(|_| ApiError::internal("hashing failed"))
}

fn dtype(q: &HashMap<String, String>) -> Result<Dtype, ApiError> {
    match q.get("dtype") {
        None => Ok(Dtype::F16),
        Some(d) => d.parse().map_err(|e: String| ApiError::bad_request(e).field("dtype")),
    }
}

/// Query parameters, refusing any not in `allowed` (a typo should not be silently ignored).
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        if !allowed.contains(&k.as_str()) {
            let expected = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
            return Err(ApiError::bad_request(format!("unknown query parameter '{k}' (expected: {expected})")).field(k));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses JSON, naming the field at fault (`points[1].x`) in the error.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let err = ApiError::bad_request(format!("malformed JSON: {}", e.into_inner()));
        // serde_path_to_error spells "no field" as "." (the root) or "?" (syntax errors).
        if path == "." || path == "?" { err } else { err.field(path) }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// base64 of little-endian f32s.
fn f32s(b64: &str) -> Result<Vec<f32>, String> {
    let bytes = BASE64.decode(b64.as_bytes()).map_err(|e| format!("is not base64: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!("has {} bytes, not a whole number of f32s", bytes.len()));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decodes_and_refuses_unknown_parameters() {
        let q = query(Some("model=vit%5Fb&dtype=f32"), &["model", "dtype"]).unwrap();
        assert_eq!(q["model"], "vit_b");
        assert_eq!(q["dtype"], "f32");
        let err = query(Some("modle=x"), &["model"]).unwrap_err();
        assert_eq!((err.status, err.field.as_deref()), (StatusCode::BAD_REQUEST, Some("modle")));
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%"), "A%");
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<PredictRequest>(br#"{"points": [{"x": 1, "y": 2, "label": 1}, {"x": "a"}]}"#).err().unwrap();
        assert_eq!(err.field.as_deref(), Some("points[1].x"), "{}", err.message);
        let err = parse_json::<PredictRequest>(br#"{"pointz": []}"#).err().unwrap();
        assert!(err.message.contains("unknown field `pointz`"), "{}", err.message);
        let err = parse_json::<PredictRequest>(br#"{"box": [1, 2, 3]}"#).err().unwrap();
        assert_eq!(err.field.as_deref(), Some("box"), "{}", err.message);
        assert!(parse_json::<PredictRequest>(br#"{} trailing"#).is_err());
        assert!(parse_json::<PredictRequest>(b"{").err().unwrap().field.is_none());
        assert!(parse_json::<PredictRequest>(br#"{"image_sha256": "ab""#).err().unwrap().field.is_none());
    }
}
