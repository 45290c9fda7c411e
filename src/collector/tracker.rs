//! `/tracker.js`, the script a news page includes to send its readers'
//! page views, engaged time and shares to the collector.

use axum::response::Response;

use crate::http::representation::{Asked, Cached};

const TRACKER_JS: &str = include_str!("../../assets/tracker.js");

#[utoipa::path(get, path = "/tracker.js", tag = "scripts",
    responses(
        (status = 200, description = "The tracker script for article pages (any query is ignored)",
            content_type = "text/javascript", body = String,
            example = json!("(function () {\n  \"use strict\";\n  // <script defer src=\"…/tracker.js\" data-article-id=\"a-123\"></script> …")),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
    ))]
pub(crate) async fn script(asked: Asked) -> Response {
    static TRACKER: std::sync::OnceLock<Cached> = std::sync::OnceLock::new();
    crate::http::script(&asked, &TRACKER, TRACKER_JS)
}
