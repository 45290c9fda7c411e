//! What the service's two HTTP faces (the API and the collector) share:
//! answers as kept and sent in a coding ([`representation`]), the service's
//! own pages, scripts for other sites' pages, and the body of every error
//! answer.

pub mod representation;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use representation::{Asked, Cached};

/// What the pages served here may load: their own scripts, styles and
/// API, and pictures from anywhere on the web; no inline script, no frame,
/// no form. (Inline styles are allowed: the widget puts its stylesheet
/// first in the head, so that the page's own rules win.)
pub const PAGE_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' https: http:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// An HTML page of this service, with its Content-Security-Policy and a
/// Referrer-Policy that sends other sites the origin only.
pub fn page(body: impl Into<String>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
        ],
        body.into(),
    )
        .into_response()
}

/// A script for other sites' pages: long-lived caching, revalidated by its
/// ETag (which changes with every release that changes the script).
pub fn script(
    asked: &Asked,
    once: &'static std::sync::OnceLock<Cached>,
    text: &'static str,
) -> Response {
    let script = once.get_or_init(|| {
        Cached::new(
            Bytes::from_static(text.as_bytes()),
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )
    });
    script.respond(
        asked,
        &HeaderValue::from_static("public, max-age=86400, stale-while-revalidate=604800"),
    )
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_parameter", "message": "limit must be between 1 and 100"}}))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_parameter`, `not_found` or `unavailable`; from the
    /// collector also `invalid_event`, `too_many_events`,
    /// `payload_too_large`, `unsupported_media_type`, `origin_not_allowed`,
    /// `rate_limited` and `site_quota`; from the admin API `unauthorized`
    /// and `forbidden`.
    pub code: String,
    /// A message for the developer calling the API.
    pub message: String,
    /// The collector: the position (from 0) of the invalid event.
    #[schema(minimum = 0)]
    pub index: Option<usize>,
}
