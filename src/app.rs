//! Build, then run: [`App::build`] binds the HTTP listeners (port 0 allowed,
//! the real address reported by [`App::local_addr`]), creates the Kafka
//! clients and connects to the store, or keeps trying in the background
//! when it cannot be reached (DESIGN §15); [`App::run`] serves until
//! shutdown. Neither waits for Kafka.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{self, streams::Streams, ApiState};
use crate::collector::Collector;
use crate::config::Settings;
use crate::dependency::Dependency;
use crate::ingest::{ConsumerState, Ingest};
use crate::metrics::Metrics;
use crate::scoring;
use crate::store::pending::Pending;
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
    /// Take events from browsers (`POST /v1/events`, `/tracker.js`).
    Collector,
}

/// The static group membership id a single-node install gets by default:
/// `serve --role all` outside Kubernetes, with a durable store, on a fixed
/// port, and no `group.instance.id` of the operator's. A crashed process
/// that comes back within `session.timeout.ms` then gets its partitions
/// back without a rebalance (docs/operations.md). The id is the host and
/// the API port, which no other running process on the host can share.
/// Not for `--role consumer`: replicas that scale down for good would hold
/// their partitions for a whole session, since static members do not leave
/// the group on shutdown.
fn default_instance_id(settings: &Settings, role: Role, durable: bool) -> Option<String> {
    let port = settings
        .api
        .listen
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.port())?;
    let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let chosen = settings.kafka.properties.contains_key("group.instance.id");
    if role != Role::All || !durable || port == 0 || in_kubernetes || chosen {
        return None;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    Some(format!("popularity-{host}-{port}"))
}

/// The alert evaluator's parts: it reads lists through the API's state and
/// claims alerts in the store's log.
struct Alerting {
    api: ApiState,
    log: Arc<dyn crate::store::AlertLog>,
    settings: crate::config::AlertSettings,
}

/// A built application, ready to run.
pub struct App {
    listener: tokio::net::TcpListener,
    /// The routes, served behind [`api::edge`].
    router: axum::Router,
    /// The operators' listener (`api.admin_listen`) and its routes.
    operators: (tokio::net::TcpListener, axum::Router),
    limits: crate::server::Limits,
    /// The response cache, whose hits the edge answers.
    cache: Option<Arc<api::cache::Cache>>,
    cors_allowed_origins: Vec<String>,
    ingest: Option<Ingest>,
    store: Option<Arc<dyn Store>>,
    metrics: Metrics,
    streams: Option<Arc<Streams>>,
    collector: Option<Arc<Collector>>,
    /// The API's state and the alert settings, when this process serves
    /// the API (it then evaluates alerts).
    alerting: Option<Alerting>,
    /// Stops what runs in the background from the start (connecting to a
    /// store not reached yet) when the application is dropped.
    _background: tokio_util::sync::DropGuard,
}

impl App {
    /// Connects and binds everything `role` needs.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<App> {
        let settings = Arc::new(settings);
        let metrics = Metrics::new();
        let kafka = Dependency::new("kafka", metrics.clone());
        let collects = matches!(role, Role::All | Role::Collector) && settings.collector.enabled;
        let collector = collects
            .then(|| Collector::build(&settings, metrics.clone(), kafka.clone()))
            .transpose()?;
        let background = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(&settings.api.listen)
            .await
            .with_context(|| format!("binding {}", settings.api.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(&settings.api.admin_listen)
            .await
            .with_context(|| format!("binding api.admin_listen {}", settings.api.admin_listen))?;
        let limits = crate::server::Limits {
            max_connections: settings.api.max_connections,
            header_timeout: settings.api.header_timeout,
        };
        if role == Role::Collector {
            let Some(c) = collector else {
                anyhow::bail!(
                    "invalid configuration: `collector.enabled`: is false, so --role collector has nothing to do"
                );
            };
            let routes = c.routes().merge(api::health_alone());
            return Ok(App {
                listener,
                operators: (admin_listener, api::operators_alone(metrics.clone())),
                limits,
                router: api::with_metrics(routes, &metrics),
                cache: None,
                cors_allowed_origins: browser_origins(&settings),
                ingest: None,
                store: None,
                metrics,
                streams: None,
                collector: Some(c),
                alerting: None,
                _background: background.drop_guard(),
            });
        }
        let (store, pending, store_state) = connect_store(&settings, &metrics, &background).await;
        if !store.durable() && role != Role::All {
            anyhow::bail!(
                "invalid configuration: `store.backend`: memory keeps state in one process, so it needs --role all"
            );
        }
        let (ingest, consumer) = if role == Role::Api {
            (None, None)
        } else {
            let (ingest, state) = consume(&settings, role, &store, pending, &metrics, kafka)?;
            (Some(ingest), Some(state))
        };
        let state = ApiState::new(
            &settings,
            store.clone(),
            metrics.clone(),
            consumer,
            store_state,
        );
        let (streams, cache) = (state.streams.clone(), state.cache.clone());
        // Alerts are read from the rising lists, by the processes that serve them.
        let alerting = (role != Role::Consumer).then(|| Alerting {
            api: state.clone(),
            log: store.clone(),
            settings: settings.alerts.clone(),
        });
        let editors = crate::editors::routes(state.clone(), store.clone(), &settings.admin.tokens);
        Ok(App {
            alerting,
            listener,
            operators: (
                admin_listener,
                api::operators_router(state.clone(), editors),
            ),
            limits,
            router: api::router(state, collector.as_ref().map(|c| c.routes())),
            cache: Some(cache),
            cors_allowed_origins: browser_origins(&settings),
            streams: Some(streams),
            ingest,
            store: Some(store),
            metrics,
            collector,
            _background: background.drop_guard(),
        })
    }

    /// The same application serving `routes` too (the demo's pages).
    pub fn with_routes(mut self, routes: axum::Router) -> App {
        self.router = self.router.merge(routes);
        self
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The address of the operators' listener (`/metrics`, the editors' API).
    pub fn admin_addr(&self) -> SocketAddr {
        self.operators
            .0
            .local_addr()
            .expect("bound listener has an address")
    }

    /// This application's metrics.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The store this application reads and writes (none for a collector).
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.clone()
    }

    /// Serves and consumes until `shutdown` is cancelled, then drains: the
    /// consumer flushes and commits, the server finishes requests in flight,
    /// the collector's producer delivers what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = self.ingest.map(|i| tokio::spawn(i.run(shutdown.clone())));
        if let Some(a) = self.alerting {
            let hooks = crate::alerts::Webhooks::new(
                &a.settings.webhooks,
                a.settings.allow_private_targets,
                self.metrics.clone(),
            );
            tokio::spawn(api::alerts::follow(a.api.clone(), shutdown.clone()));
            crate::alerts::evaluator::spawn(a.api, a.log, a.settings, hooks, shutdown.clone());
        }
        let signal = shutdown.clone();
        let streams = self.streams.clone();
        // Open streams never end by themselves: close them so that the
        // server's graceful shutdown does not wait for them.
        let edge = api::edge(
            self.router,
            &self.metrics,
            &self.cors_allowed_origins,
            self.cache,
        );
        let (admin_listener, operators) = self.operators;
        let admin_signal = shutdown.clone();
        let admin = tokio::spawn(crate::server::serve(
            admin_listener,
            operators,
            crate::server::Limits {
                max_connections: 256,
                ..self.limits
            },
            self.metrics.clone(),
            async move { admin_signal.cancelled().await },
        ));
        crate::server::serve(
            self.listener,
            edge,
            self.limits,
            self.metrics.clone(),
            async move {
                signal.cancelled().await;
                if let Some(s) = streams {
                    s.close();
                }
            },
        )
        .await;
        shutdown.cancel();
        let served = admin.await.context("operators' listener panicked");
        if let Some(c) = self.collector {
            let _ = tokio::task::spawn_blocking(move || c.flush(std::time::Duration::from_secs(5)))
                .await;
        }
        if let Some(c) = consumer {
            c.await.context("consumer task panicked")??;
        }
        served
    }
}

/// The store `settings` describe. Without it the service starts anyway
/// (DESIGN §15): reads answer 503 and nothing is consumed until it is
/// connected, in the background, by the store returned (a pending one).
async fn connect_store(
    settings: &Arc<Settings>,
    metrics: &Metrics,
    background: &CancellationToken,
) -> (Arc<dyn Store>, Option<Arc<Pending>>, Dependency) {
    let store_state = Dependency::new("store", metrics.clone());
    let (store, pending): (Arc<dyn Store>, _) = match crate::store::connect(settings).await {
        Ok(store) => (store, None),
        Err(e) => {
            let url = crate::config::redacted(&settings.store.redis_url);
            store_state.failed(&format!("{url}: {e}"));
            let p = crate::store::pending::connect_in_background(
                settings.clone(),
                store_state.clone(),
                background.clone(),
            );
            (p.clone(), Some(p))
        }
    };
    (store, pending, store_state)
}

/// The consumer of a role that consumes, and its state (`/readyz` reads it).
fn consume(
    settings: &Arc<Settings>,
    role: Role,
    store: &Arc<dyn Store>,
    pending: Option<Arc<Pending>>,
    metrics: &Metrics,
    kafka: Dependency,
) -> anyhow::Result<(Ingest, ConsumerState)> {
    let profiles = scoring::profiles(&settings.scoring);
    let mut settings = settings.clone();
    if let Some(id) = default_instance_id(&settings, role, store.durable()) {
        tracing::info!(group_instance_id = %id, "static group membership (set kafka.properties.\"group.instance.id\" to choose another id)");
        Arc::make_mut(&mut settings)
            .kafka
            .properties
            .insert("group.instance.id".into(), id);
    }
    let state = ConsumerState::new(kafka);
    let mut ingest = Ingest::build(
        settings,
        store.clone(),
        metrics.clone(),
        profiles,
        state.clone(),
    )?;
    if let Some(p) = pending {
        ingest = ingest.after(p);
    }
    Ok((ingest, state))
}

/// The origins browsers may call this service from: `api.cors_allowed_origins`
/// and every site's pages (a site's widget reads the lists, its tracker
/// posts events).
fn browser_origins(settings: &Settings) -> Vec<String> {
    let mut origins = settings.api.cors_allowed_origins.clone();
    for site in &settings.sites {
        for o in &site.origins {
            if !origins.contains(o) {
                origins.push(o.clone());
            }
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_node_install_gets_a_static_member_id_and_scaled_consumers_do_not() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return; // the rule is about installs outside Kubernetes
        }
        let mut s = Settings::defaults();
        s.api.listen = "0.0.0.0:8080".into();
        let id = default_instance_id(&s, Role::All, true).expect("an id");
        assert!(
            id.starts_with("popularity-") && id.ends_with("-8080"),
            "{id}"
        );
        assert_eq!(default_instance_id(&s, Role::Consumer, true), None);
        assert_eq!(
            default_instance_id(&s, Role::All, false),
            None,
            "memory store: no group"
        );
        s.kafka
            .properties
            .insert("group.instance.id".into(), "mine".into());
        assert_eq!(
            default_instance_id(&s, Role::All, true),
            None,
            "the operator's id wins"
        );
        s.kafka.properties.clear();
        s.api.listen = "127.0.0.1:0".into();
        assert_eq!(
            default_instance_id(&s, Role::All, true),
            None,
            "no stable port"
        );
    }
}
