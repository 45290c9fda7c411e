//! Logs: `tracing` to standard error, as text or JSON (`log.format`), at
//! the level `RUST_LOG` asks for (default `info,rdkafka=warn`).

use std::io::IsTerminal as _;

use crate::config::LogFormat;

/// Installs the process's log subscriber. Text carries ANSI colours only
/// when standard error is a terminal, so files and log shippers get plain
/// lines.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .init(),
    }
}
