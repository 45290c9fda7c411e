//! What operators and tools read: liveness, readiness, metrics and the
//! OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::model::{ErrorBody, Health, Readiness};
use super::params::{NoParams, Strict};
use super::{ApiDoc, ApiState};

/// Alive: answers without touching the store.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The process serves HTTP (no dependency is checked)", body = Health),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
    ))]
pub(super) async fn healthz(_: Strict<NoParams>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the store answers and, when this process consumes, it holds
/// partitions and can write.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve (and, for a consumer, to consume)", body = Readiness,
            example = json!({"status": "ready"})),
        (status = 503, description = "Not ready: what is missing", body = Readiness,
            example = json!({"status": "not_ready", "reasons": ["store unreachable", "kafka unreachable", "consumer has no partitions assigned"]})),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
    ))]
pub(super) async fn readyz(State(state): State<ApiState>, _: Strict<NoParams>) -> Response {
    let mut problems: Vec<String> = Vec::new();
    // Each change of state is logged once (by the dependency), not each probe.
    match state.store.ping().await {
        Ok(()) => state.store_state.reached(),
        Err(e) => {
            state.store_state.failed(&e.to_string());
            problems.push(match e {
                crate::store::StoreError::NoMaster(_) => "store has no master".into(),
                _ => "store unreachable".into(),
            });
        }
    }
    if let Some(c) = &state.consumer {
        if c.kafka.problem().is_some() {
            problems.push("kafka unreachable".into());
        }
        if let Some(progress) = c.rebuild_problem() {
            problems.push(progress);
        }
        if !c.is_assigned() {
            problems.push("consumer has no partitions assigned".into());
        }
        if let Some(why) = c.flush_problem() {
            problems.push(format!("consumer flushes are failing: {why}"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reasons": problems})),
        )
            .into_response()
    }
}

/// Prometheus text format.
pub(super) async fn metrics(State(state): State<ApiState>, _: Strict<NoParams>) -> Response {
    render(&state.metrics)
}

/// `metrics` in the Prometheus text format.
pub(super) fn render(metrics: &crate::metrics::Metrics) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document (cached like the answers).
pub(super) async fn openapi(_: Strict<NoParams>) -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}
