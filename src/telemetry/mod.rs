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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// What the log wrote.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_inside_a_flush_carries_its_trace_id_and_one_outside_none() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let written = Written::default();
        let out = written.clone();
        let json = tracing_subscriber::fmt::format()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .flatten_event(true);
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(super::TraceIdField(json))
                    .fmt_fields(JsonFields::new())
                    .with_writer(move || out.clone()),
            );
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let flush = super::flush_span(3, 2);
            flush.in_scope(|| {
                let _write = tracing::debug_span!(target: super::SPANS, "write").entered();
                tracing::warn!(groups = 1, "inside");
            });
            flush.context().span().span_context().trace_id().to_string()
        });
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["groups"], 1);
        assert_eq!(lines[1]["trace_id"], trace_id.as_str(), "{text}");
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, "0".repeat(32));
    }
}
