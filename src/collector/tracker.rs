//! `/tracker.js`, the script a news page includes to send its readers'
//! page views, engaged time and shares to the collector.

use axum::response::Response;

use crate::api::cached::{Asked, Cached};

const TRACKER_JS: &str = include_str!("../../assets/tracker.js");

pub(super) async fn script(asked: Asked) -> Response {
    static TRACKER: std::sync::OnceLock<Cached> = std::sync::OnceLock::new();
    crate::api::assets::script(&asked, &TRACKER, TRACKER_JS)
}
