//! What the API serves from the binary itself: the web page and its files,
//! and the embeddable widget.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiState;
use crate::http::representation::{Asked, Cached};
use crate::http::{page, script};

/// The routes of the files below.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML) }))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route("/widget.js", get(widget))
}

/// The web page, compiled into the binary: no CDN, nothing to deploy.
const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");
const WIDGET_JS: &str = include_str!("../../assets/widget.js");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        body,
    )
        .into_response()
}

/// The embeddable widget.
#[utoipa::path(get, path = "/widget.js", tag = "scripts",
    responses(
        (status = 200, description = "The widget script (any query is ignored: pages may add a cache-busting one)",
            content_type = "text/javascript", body = String,
            example = json!("(function () {\n  \"use strict\";\n  // <div data-popularity-widget data-profile=\"trending\"></div> …")),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
    ))]
pub(crate) async fn widget(asked: Asked) -> Response {
    static WIDGET: std::sync::OnceLock<Cached> = std::sync::OnceLock::new();
    script(&asked, &WIDGET, WIDGET_JS)
}
