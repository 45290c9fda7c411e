//! `popularity demo`: the whole service on one machine with nothing
//! installed: the dev broker, the memory store (or Redis), a synthetic
//! newsroom producing traffic, and the API with its web page.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use popularity::now_ms;

use crate::devbroker::DevBroker;
use crate::loadgen::{self, Limits};
use crate::newsroom::{Newsroom, Shape};
use popularity::app::{App, Role};
use popularity::config::{Backend, Settings};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP address.
    pub listen: String,
    /// Use this Redis instead of the memory store.
    pub redis_url: Option<String>,
    /// Behaviour events per second.
    pub rate: f64,
}

/// Runs the demo until `shutdown`.
pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut settings = Settings::defaults();
    let t = &settings.kafka.topics;
    // Few partitions: the dev broker keeps at most 5 MiB per partition, and
    // the memory store re-reads history only at start.
    let broker = DevBroker::start(&[&t.events, &t.articles, &t.dead_letter], 3)?;
    settings.kafka.brokers = broker.bootstrap_servers().to_string();
    settings.api.listen = options.listen.clone();
    // The operators' listener on a free port of loopback: the banner names it.
    settings.api.admin_listen = "127.0.0.1:0".to_string();
    match &options.redis_url {
        Some(url) => {
            settings.store.backend = Backend::Redis;
            settings.store.redis_url = url.clone();
            settings.store.key_prefix = "demo".to_string();
        }
        None => settings.store.backend = Backend::Memory,
    }
    // A network of sites of different sizes; their pages are the demo's own.
    settings.sites = crate::newsroom::DEMO_SITE_NAMES
        .iter()
        .map(|(id, name)| popularity::config::SiteSettings {
            id: id.to_string(),
            name: name.to_string(),
            origins: Vec::new(),
            events_per_second: None,
        })
        .collect();
    settings.validate()?;

    // Publish the first articles before the service starts, so the memory
    // store's consumer finds the topics populated.
    let producer = loadgen::producer(&settings.kafka)?;
    // A newsroom's pace: the first articles spread over the last day, then
    // one new article every 6,000 events (a minute at the default rate).
    let shape = Shape {
        publish_every: 6_000,
        // A story takes off every 3,000 events (half a minute at the
        // default rate): the page's "Taking off" moves.
        surge_every: 3_000,
        sites: crate::newsroom::DEMO_SITES,
        ..Shape::default()
    };
    let first = shape.articles as u64;
    let mut newsroom = Newsroom::new(shape, now_ms());
    loadgen::run(
        &producer,
        &settings.kafka,
        &mut newsroom,
        Limits {
            count: Some(first),
            ..Limits::default()
        },
        &shutdown,
    )
    .await;

    let first_site = newsroom.first_site().unwrap_or("default");
    let app = App::build(settings.clone(), Role::All)
        .await?
        .with_routes(article_pages(first_site));
    let (addr, admin) = (app.local_addr(), app.admin_addr());
    let server = tokio::spawn(app.run(shutdown.clone()));
    // One write, and a closed stdout is no reason to stop the demo.
    let banner = format!(
        "popularity demo\n  web page:   http://{addr}/\n  rankings:   http://{addr}/v1/rankings/trending?limit=5\n  \
         one site:   http://{addr}/v1/rankings/trending?site=jakarta-globe&limit=5\n  \
         by section: http://{addr}/v1/rankings/popular?section=business\n  tags:       http://{addr}/v1/rankings/trending/tags\n  \
         index:      http://{addr}/v1/index?section=news\n  metrics:    http://{admin}/metrics\n  \
         an article: http://{addr}/demo/article/{first_site}/a-1000 (the tracker on it counts your visit)\n  \
         kafka:      bootstrap.servers={} (in-memory dev broker)\nCtrl-C stops it.\n",
        broker.bootstrap_servers()
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());

    let traffic = loadgen::run(
        &producer,
        &settings.kafka,
        &mut newsroom,
        Limits {
            rate: Some(options.rate),
            ..Limits::default()
        },
        &shutdown,
    );
    let sent = traffic.await;
    tracing::info!(delivered = sent.delivered, "demo traffic stopped");
    let result = tokio::time::timeout(Duration::from_secs(30), server).await;
    // Clients before the broker they talk to, so they do not report it gone.
    drop(producer);
    drop(broker);
    match result {
        Ok(joined) => joined?,
        Err(_) => anyhow::bail!("the service did not stop within 30 s"),
    }
}

/// `/demo/article/{site}/{id}`: a sample article page of a site with the
/// tracker on it, so that opening it adds a counted page view, engaged time
/// and shares; `/demo/article/{id}` is one of `default_site`.
fn article_pages(default_site: &'static str) -> axum::Router {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    const PAGE: &str = include_str!("../../assets/demo-article.html");
    fn page(site: &str, id: &str) -> Response {
        // Only names that need no escaping reach the page.
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= popularity::event::fields::MAX_ID_CHARS
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !plain(site) || !plain(id) {
            return (StatusCode::NOT_FOUND, "no such demo article").into_response();
        }
        popularity::http::page(PAGE.replace("{{ARTICLE_ID}}", id).replace("{{SITE}}", site))
    }
    const SCRIPT: &str = include_str!("../../assets/demo-article.js");
    axum::Router::new()
        .route(
            "/demo/article.js",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/javascript; charset=utf-8",
                    )],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/demo/article/{site}/{id}",
            axum::routing::get(|Path((site, id)): Path<(String, String)>| async move {
                page(&site, &id)
            }),
        )
        .route(
            "/demo/article/{id}",
            axum::routing::get(
                move |Path(id): Path<String>| async move { page(default_site, &id) },
            ),
        )
}
