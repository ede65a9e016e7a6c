//! Every error the API answers: a status and `{"error": "...", "field": "..."}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segany_predict::{ImageError, ImageErrorKind, PredictError};

/// An error response. Cloned to every request waiting on the same computation.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (`points[1]`, `box`, `model`, …), when there is one.
    pub field: Option<String>,
    /// Seconds for `Retry-After` (503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn busy(what: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("the {what} queue is full; retry in {retry_after} s"))
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Unreadable image bytes: 400 for bytes that are no image or a broken one, 415 for a
    /// recognised format we do not decode, 413 over the pixel limit.
    pub fn image(e: ImageError, field: Option<&str>) -> Self {
        let status = match e.kind() {
            ImageErrorKind::Unrecognised | ImageErrorKind::Corrupt => StatusCode::BAD_REQUEST,
            ImageErrorKind::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Self { field: field.map(str::to_string), ..Self::new(status, e.to_string()) }
    }

    /// A prompt the predictor refuses: 400 naming the prompt field.
    pub fn predict(e: PredictError) -> Self {
        let field = e.field();
        let status = match e {
            PredictError::EmbeddingMismatch { .. } | PredictError::NoImage => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let field = field.or_else(|| matches!(e, PredictError::NoEncoder).then(|| "model".to_string()));
        Self { field, ..Self::new(status, e.to_string()) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = &self.field {
            body["field"] = field.clone().into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
