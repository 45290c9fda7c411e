//! `/tracker.js`, the script a news page includes to send its readers'
//! page views, engaged time and shares to the collector.

use axum::http::HeaderMap;
use axum::response::Response;

const TRACKER_JS: &str = include_str!("../../assets/tracker.js");

pub(super) async fn script(headers: HeaderMap) -> Response {
    static TRACKER: std::sync::OnceLock<crate::api::cache::Cached> = std::sync::OnceLock::new();
    crate::api::assets::script(&headers, &TRACKER, TRACKER_JS)
}
