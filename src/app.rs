//! Build, then run: [`App::build`] connects to the store, creates the Kafka
//! clients and binds the HTTP listener (port 0 allowed, the real address
//! reported by [`App::local_addr`]); [`App::run`] serves until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{self, cache::Cache, ApiState};
use crate::config::Settings;
use crate::ingest::{ConsumerState, Ingest};
use crate::metrics::Metrics;
use crate::scoring;
use crate::store::Store;

/// What a process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Consume and serve.
    All,
    /// Consume (and serve health, readiness and metrics).
    Consumer,
    /// Serve the API.
    Api,
}

/// A built application, ready to run.
pub struct App {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    ingest: Option<Ingest>,
    store: Arc<dyn Store>,
    metrics: Metrics,
}

impl App {
    /// Connects and binds everything `role` needs.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<App> {
        let settings = Arc::new(settings);
        let store = crate::store::connect(&settings)
            .await
            .with_context(|| format!("connecting to the store at {}", settings.store.redis_url))?;
        if !store.durable() && role != Role::All {
            anyhow::bail!(
                "invalid configuration: `store.backend`: memory keeps state in one process, so it needs --role all"
            );
        }
        let metrics = Metrics::new();
        let profiles = scoring::profiles(&settings.scoring);
        let (ingest, consumer) = if role == Role::Api {
            (None, None)
        } else {
            let state = ConsumerState::default();
            let ingest = Ingest::build(
                settings.clone(),
                store.clone(),
                metrics.clone(),
                profiles.clone(),
                state.clone(),
            )?;
            (Some(ingest), Some(state))
        };
        let state = ApiState {
            store: store.clone(),
            profiles,
            metrics: metrics.clone(),
            cache: Arc::new(Cache::new(settings.api.cache_ttl, metrics.clone())),
            cache_control: axum::http::HeaderValue::from_str(&format!(
                "public, max-age={}",
                settings.api.cache_ttl.as_secs()
            ))
            .expect("digits are a valid header"),
            consumer,
        };
        let listener = tokio::net::TcpListener::bind(&settings.api.listen)
            .await
            .with_context(|| format!("binding {}", settings.api.listen))?;
        Ok(App {
            listener,
            router: api::router(state),
            ingest,
            store,
            metrics,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// This application's metrics.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The store this application reads and writes.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves and consumes until `shutdown` is cancelled, then drains: the
    /// consumer flushes and commits, the server finishes requests in flight.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = self.ingest.map(|i| tokio::spawn(i.run(shutdown.clone())));
        let signal = shutdown.clone();
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { signal.cancelled().await });
        let served = server.await.context("HTTP server failed");
        // A failed server stops the consumer too.
        shutdown.cancel();
        if let Some(c) = consumer {
            c.await.context("consumer task panicked")??;
        }
        served
    }
}
