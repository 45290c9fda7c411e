//! The span of each HTTP request, on the public and the operators'
//! listeners, and the access log.
//!
//! The span is named `METHOD ROUTE` with the route template (never the
//! path, whose values are unbounded), and carries
//! `http.request.method`, `http.route` and `http.response.status_code`.
//! A W3C `traceparent` header makes it the child of the caller's span;
//! the header comes from the internet, so one that does not parse is
//! ignored and the request starts a trace of its own, and `tracestate` is
//! never read.

use std::convert::Infallible;
use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{mark, ACCESS, SPANS};

/// The span of `request`, the child of its valid `traceparent` if any;
/// disabled when traces are off.
pub fn request_span(request: &Request) -> Span {
    let method = request.method().as_str();
    let span = tracing::debug_span!(
        target: SPANS,
        parent: None,
        "request",
        otel.name = method,
        otel.kind = "server",
        http.request.method = method,
        http.route = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = TraceContextPropagator::new().extract(&TraceparentOnly(request.headers()));
    if parent.span().span_context().is_valid() {
        // Only fails when the span is already started, which it is not.
        let _ = span.set_parent(parent);
    }
    mark(&span);
    span
}

/// A request's `traceparent`, and not its `tracestate`: that is the
/// caller's text, as long as a request head may be, and would go out with
/// every span of the request.
struct TraceparentOnly<'a>(&'a HeaderMap);

impl Extractor for TraceparentOnly<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key != "traceparent" {
            return None;
        }
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Runs `answer` inside `span`, then records the status it answered.
pub async fn traced<F>(span: Span, answer: F) -> Result<Response, Infallible>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let answered = answer.instrument(span.clone()).await;
    if let Ok(response) = &answered {
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
    }
    answered
}

/// A request was answered on `route` (the template, or `unmatched`): the
/// span of the request takes the route for its name, and the access log,
/// when on, gets its line.
pub fn answered(method: &Method, route: &str, status: StatusCode, started: Instant) {
    let span = Span::current();
    if !span.is_disabled() && route != "unmatched" {
        let name = format!("{method} {route}");
        span.record("http.route", route);
        // For text logs; the OpenTelemetry span, started already (its trace
        // id is in the logs), is renamed: `otel.name` only names a span not
        // yet started.
        span.record("otel.name", name.as_str());
        span.context().span().update_name(name);
    }
    tracing::info!(
        target: ACCESS,
        method = method.as_str(),
        route,
        status = status.as_u16(),
        duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "request"
    );
}
