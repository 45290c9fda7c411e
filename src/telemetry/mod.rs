//! Traces: OpenTelemetry spans, sent over OTLP/HTTP when
//! `telemetry.otlp_endpoint` is set ([`export`]), for each HTTP request
//! ([`http`]) and each flush of the consumer (created where it flushes,
//! `src/ingest/`); and the trace id in log lines ([`TraceIdField`]).
//!
//! Spans are `tracing` spans at level DEBUG under the target [`SPANS`],
//! which the log filter enables only when traces are on: otherwise no
//! subscriber is interested in them and a span costs a check of its
//! callsite. Their counts are recorded as `i64`: OpenTelemetry has no
//! unsigned integers (a `u64` would arrive as a string).

pub mod export;
pub mod http;

use opentelemetry::trace::{TraceContextExt as _, TraceId};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of every span sent as a trace.
pub const SPANS: &str = "popularity::trace";

/// The target of the access log's lines.
pub const ACCESS: &str = "popularity::access";

/// The trace id of a root span, kept with it for the log lines emitted
/// inside it.
#[derive(Debug, Clone, Copy)]
struct LoggedTraceId(TraceId);

/// The root span of a flush: `messages` read, `events` counted.
pub fn flush_span(messages: usize, events: usize) -> Span {
    let span = tracing::debug_span!(
        target: SPANS,
        parent: None,
        "flush",
        messages = messages as i64,
        events = events as i64,
        trace_id = tracing::field::Empty,
    );
    mark(&span);
    span
}

/// Records the trace id of `span` (after its parent is set): as its
/// `trace_id` field, which text logs show in the span's context, and for
/// [`TraceIdField`]. Nothing when the span is disabled.
pub fn mark(span: &Span) {
    if span.is_disabled() {
        return;
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id == TraceId::INVALID {
        return;
    }
    span.record("trace_id", tracing::field::display(trace_id));
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        data.extensions_mut().insert(LoggedTraceId(trace_id));
        Some(())
    });
}

/// A JSON event format that adds `"trace_id"` to the object of an event
/// emitted inside a traced span (a request, a flush).
pub struct TraceIdField<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for TraceIdField<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let traced = ctx.lookup_current().and_then(|current| {
            current
                .scope()
                .find_map(|s| s.extensions().get::<LoggedTraceId>().copied())
        });
        let Some(LoggedTraceId(trace_id)) = traced else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // One object and a newline: the field goes before the closing brace.
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(writer, "{object},\"trace_id\":\"{trace_id}\"}}"),
            None => writer.write_str(&line),
        }
    }
}
