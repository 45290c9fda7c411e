//! API errors: the caller's fault (400, 404, 429) with a message, or ours (5xx)
//! with a generic body while the cause is logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter is invalid: 400.
    #[error("{0}")]
    InvalidParameter(String),
    /// Unknown profile, article or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// This replica cannot take more of something (open streams): 503.
    #[error("{0}")]
    Overloaded(String),
    /// This client holds as much as one may (open streams): 429.
    #[error("{0}")]
    TooMany(String),
    /// The store failed: 503, the cause logged, not sent.
    #[error("store failure")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            ApiError::InvalidParameter(m) => ("invalid_parameter", m.clone()),
            ApiError::NotFound(m) => ("not_found", m.clone()),
            ApiError::Overloaded(m) => ("unavailable", m.clone()),
            ApiError::TooMany(m) => ("rate_limited", m.clone()),
            ApiError::Store(e) => {
                // At most one line a second however many requests fail.
                static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
                let now = crate::now_ms() / 1000;
                if LAST.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
                    tracing::error!(error = %e, "store failure while answering a request");
                }
                (
                    "unavailable",
                    "the ranking store is unavailable; try again shortly".to_string(),
                )
            }
        };
        let body = json!({ "error": { "code": code, "message": message } });
        (self.status(), Json(body)).into_response()
    }
}
