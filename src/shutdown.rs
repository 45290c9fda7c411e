//! One shutdown path: a cancellation token that every task watches, cancelled
//! by SIGTERM or SIGINT (or by a test).

use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGTERM or SIGINT. The handlers
/// are installed before this returns (also when the process started with
/// SIGINT ignored, as a background job of a non-interactive shell does), so
/// call it before printing or binding anything: a signal that arrives right
/// after is never lost.
pub fn on_signals(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = token.cancelled() => return,
            }
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received, shutting down"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
    Ok(())
}
