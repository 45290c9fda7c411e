//! Logs: `tracing` to standard error, as text or JSON (`log.format`), at
//! the level `RUST_LOG` asks for (default `info,rdkafka=warn`); the access
//! log as `telemetry.access_log` says; and, when `telemetry.otlp_endpoint`
//! is set, the spans of [`crate::telemetry`] sent as traces, their trace
//! id in the log lines emitted inside them.

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::{LogFormat, Settings};
use crate::telemetry::{self, TraceIdField};

/// What must be done before the process exits: send the spans not sent yet.
#[must_use]
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    /// Sends the spans still held and stops the exporter (off the
    /// runtime's threads: it waits for the export, which runs on them).
    pub async fn finish(self) {
        if let Some(provider) = self.0 {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("traces not all sent: {e}");
            }
        }
    }
}

/// Installs the process's log subscriber, and the exporter of traces when
/// configured (on the tokio runtime). Text carries ANSI colours only when
/// standard error is a terminal, so files and log shippers get plain lines.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let t = &settings.telemetry;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    let access = if t.access_log { "info" } else { "off" };
    filter = filter.add_directive(format!("{}={access}", telemetry::ACCESS).parse()?);
    let provider = if t.otlp_endpoint.is_empty() {
        None
    } else {
        filter = filter.add_directive(format!("{}=debug", telemetry::SPANS).parse()?);
        Some(telemetry::export::provider(t)?)
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("popularity"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.log.format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(false)
                .with_span_list(false)
                .flatten_event(true);
            fmt.json()
                .event_format(TraceIdField(json))
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .boxed()
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(fmt)
        .try_init()?;
    Ok(Telemetry(provider))
}
