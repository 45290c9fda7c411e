//! `/tracker.js`, the script a news page includes to send its readers'
//! page views, engaged time and shares to the collector.

use axum::response::Response;

use crate::api::IfNoneMatch;

const TRACKER_JS: &str = include_str!("../../assets/tracker.js");

pub(super) async fn script(revalidate: IfNoneMatch) -> Response {
    static TRACKER: std::sync::OnceLock<crate::api::cache::Cached> = std::sync::OnceLock::new();
    crate::api::assets::script(&revalidate, &TRACKER, TRACKER_JS)
}
