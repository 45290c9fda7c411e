//! The HTTP API (DESIGN §5), one module per resource: [`rankings`] (Most
//! Popular, Popular Reads, Popular Tags), [`index`] (the News Index),
//! [`articles`], [`streams`] (the same rankings pushed as Server-Sent
//! Events), [`operations`] (health, readiness, metrics, the OpenAPI
//! document) and [`assets`] (the page and the widget). Query parameters are
//! types ([`params`]); answers are JSON types ([`model`]).
//!
//! [`router`] builds the routes from the state and [`edge`] what every
//! request meets before routing, so the application is tested without a
//! socket. The [`cache::Cache`]'s hits are answered at the edge; what it
//! does not hold is computed in front of the cached routes' handlers. Both
//! send it as a [`crate::http::representation::Cached`]: with `Cache-Control` and `ETag`, and
//! compressed once per coding (brotli, zstd, gzip) for the clients that ask.

pub mod alerts;
mod articles;
pub(crate) mod assets;
pub mod cache;
pub mod error;
mod index;
pub mod model;
mod operations;
mod params;
mod rankings;
pub(crate) mod rising;
pub mod streams;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower::util::MapResponse;
use tower::Layer as _;
use tower_http::compression::{Compression, CompressionBody, CompressionLayer};
use tower_http::cors::Cors;
use tower_http::timeout::TimeoutLayer;

use self::cache::Cache;
pub use self::error::ApiError;
pub use self::params::{MAX_LIMIT, MAX_NAME_CHARS, MAX_OFFSET};
use self::streams::Streams;
use crate::config::Settings;
use crate::ingest::ConsumerState;
use crate::metrics::Metrics;
use crate::scoring::Profiles;
use crate::site::Sites;
use crate::store::{ProfileId, Reads};

/// What every handler shares, behind one `Arc`: the router clones it for
/// every request (the state extractor, the metrics middleware), so a clone
/// must cost one atomic increment, not one per metric and a copy of the
/// CORS list (it had been a sixth of the CPU of a `/healthz` request).
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

impl std::ops::Deref for ApiState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`ApiState`].
pub struct Shared {
    /// Where rankings, articles and recorded alerts are read: the API
    /// holds no write interface.
    pub store: Arc<dyn Reads>,
    /// Configured ranking profiles.
    pub profiles: Profiles,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Response cache.
    pub cache: Arc<Cache>,
    /// The consumer's assignment, when this process consumes (for `/readyz`).
    pub consumer: Option<ConsumerState>,
    /// The store, up or down, as readiness last found it.
    pub store_state: crate::dependency::Dependency,
    /// Open Server-Sent Event streams and their shared pollers.
    pub streams: Arc<streams::Streams>,
    /// Origins allowed to call from browsers (`api.cors_allowed_origins`).
    pub cors_allowed_origins: Vec<String>,
    /// The network's sites.
    pub sites: Sites,
    /// The rising formula and its profiles (DESIGN §14).
    pub rising: crate::rising::Rising,
    /// Alerts recorded by any replica, for this replica's alert streams.
    pub alert_feed: alerts::Feed,
}

impl Shared {
    /// Whether a published article may be shown in a list: it has a
    /// headline (an id is never shown as one, DESIGN §12) and no editor
    /// excluded it.
    pub fn listed(&self, meta: &crate::event::ArticleMeta) -> bool {
        meta.title.is_some() && !meta.excluded
    }

    /// The site a list asks for: `None` for the network (or the only
    /// site), else a configured site's id; an unknown site is a 404.
    pub(crate) fn site_scope(&self, site: Option<String>) -> Result<Option<String>, ApiError> {
        let Some(id) = site else {
            return Ok(None);
        };
        match self.sites.get(&id) {
            Some(_) => Ok(self.sites.scope(Some(&id)).map(str::to_string)),
            None => Err(ApiError::NotFound(format!("unknown site {id:?}"))),
        }
    }
}

impl ApiState {
    /// The state `settings` describe, reading `store`; `consumer` when this
    /// process also consumes.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Reads>,
        metrics: Metrics,
        consumer: Option<ConsumerState>,
        store_state: crate::dependency::Dependency,
    ) -> ApiState {
        let api = &settings.api;
        ApiState(Arc::new(Shared {
            store,
            store_state,
            profiles: crate::scoring::profiles(&settings.scoring),
            cache: Arc::new(Cache::new(
                api.cache_ttl,
                api.cache_max_bytes,
                metrics.clone(),
            )),
            metrics,
            consumer,
            // Streamed lists are recomputed at the cache's pace (at least
            // every 250 ms when the cache is off).
            streams: Arc::new(Streams::new(
                api.max_streams,
                api.max_streams_per_client,
                crate::peer::Peers::new(&settings.collector.trusted_proxies),
                api.cache_ttl.max(Duration::from_millis(250)),
            )),
            cors_allowed_origins: api.cors_allowed_origins.clone(),
            sites: Sites::from_settings(settings),
            rising: crate::rising::Rising::new(
                &settings.rising,
                &crate::scoring::profiles(&settings.scoring),
            ),
            alert_feed: alerts::feed(),
        }))
    }
}

/// Longest a request may take before it is answered 503 (streams excepted:
/// they last as long as their reader).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted; 413 beyond.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// The application's routes: every route of the API (and the collector's,
/// when this process collects), each with its request metrics ([`record`]),
/// a body limit and, except for streams, a timeout. [`edge`] serves them.
/// The collector reads its bodies with its own limit
/// (`collector.max_body_bytes`).
pub fn router(state: ApiState, collector: Option<Router>) -> Router {
    use tower_http::limit::RequestBodyLimitLayer;
    let streams = Router::new()
        .route(
            "/v1/stream/rankings/{profile}",
            get(streams::stream_ranking),
        )
        .route("/v1/stream/rising", get(streams::stream_rising))
        .route("/v1/stream/alerts", get(streams::stream_alerts));
    // Computed and kept by the cache when it has no answer for them.
    let cached = Router::new()
        .route("/v1/rankings", get(rankings::list_profiles))
        .route("/v1/sites", get(rankings::list_sites))
        .route("/v1/rankings/{profile}", get(rankings::ranking))
        .route("/v1/rankings/{profile}/tags", get(rankings::popular_tags))
        .route("/v1/rising", get(rising::rising))
        .route("/v1/index", get(index::news_index))
        .route("/v1/articles/{id}", get(articles::article))
        .route("/openapi.json", get(operations::openapi))
        .route_layer(cache::AnswerLayer(state.cache.clone()));
    let api = cached
        .merge(assets::routes())
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .fallback(|| async { ApiError::NotFound("no such route".to_string()) })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .merge(streams)
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY_BYTES))
        .with_state(state.clone());
    let app = match collector {
        Some(c) => api.merge(c),
        None => api,
    };
    with_metrics(app, &state.metrics)
}

/// The operators' routes, served on `api.admin_listen` and never on the
/// public listener (DESIGN §13): `/metrics`, the editors' API (`editors`,
/// [`crate::editors::routes`]), and health and readiness as on the public one.
pub fn operators_router(state: ApiState, editors: Router) -> Router {
    let routes = Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .with_state(state.clone())
        .merge(editors)
        .fallback(|| async { ApiError::NotFound("no such route".to_string()) })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_REQUEST_BODY_BYTES,
        ));
    with_metrics(routes, &state.metrics)
}

/// `app`'s routes, each recording its requests ([`record`]).
pub fn with_metrics(app: Router, metrics: &Metrics) -> Router {
    app.layer(middleware::from_fn_with_state(
        Arc::new(metrics.clone()),
        record,
    ))
}

/// The application as it is served: see [`edge`].
pub type Edge = MapResponse<
    Cors<Compression<cache::Hits<Router>>>,
    fn(Response<CompressionBody<Body>>) -> Response,
>;

/// What every request meets before routing, around `routes`: CORS for the
/// allowed origins (a preflight is answered here), brotli, zstd or gzip
/// as the client prefers (not for streams:
/// its default rule skips `text/event-stream`), then the hits of `cache`,
/// answered here without routing.
pub fn edge(
    routes: Router,
    metrics: &Metrics,
    cors_allowed_origins: &[String],
    cache: Option<Arc<Cache>>,
) -> Edge {
    let hits = cache::Hits::new(routes, cache, Arc::new(metrics.clone()));
    let compressed = CompressionLayer::new().layer(hits);
    MapResponse::new(
        cors(cors_allowed_origins).layer(compressed),
        |r: Response<CompressionBody<Body>>| {
            let mut r = json_errors(r.map(Body::new));
            // No answer is ever sniffed into another type (DESIGN §13).
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        },
    )
}

/// A client error whose body is not JSON (the framework's own: a method
/// not allowed, a path that is not UTF-8, a body over the limit) gets the
/// JSON error body of every other answer, with a message for its status.
fn json_errors(r: Response) -> Response {
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || json {
        return r;
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("invalid_parameter", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; see Allow",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "that content type is not taken")
        }
        _ => ("client_error", "the request cannot be answered"),
    };
    let (mut parts, _) = r.into_parts();
    for h in [header::CONTENT_ENCODING, header::CONTENT_LENGTH] {
        parts.headers.remove(h);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Liveness and readiness for a process that serves no API (a collector
/// alone): ready as long as it runs.
pub fn health_alone() -> Router {
    Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::healthz))
}

/// The operators' listener of a process that serves no API: its health
/// and its metrics.
pub fn operators_alone(metrics: Metrics) -> Router {
    let shared = Arc::new(metrics.clone());
    let routes = health_alone().route(
        "/metrics",
        get(move || {
            let m = shared.clone();
            async move { operations::render(&m) }
        }),
    );
    with_metrics(routes, &metrics)
}

/// Cross-origin access for browsers on the allowed origins (or any, with
/// `*`): GET of every route, and the headers the widget and the stream send.
/// Preflights are answered here, before any handler or the store.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(3600))
}

async fn record(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    // The matched route template (bounded), never the raw path.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let started = Instant::now();
    let method = req.method().clone();
    let response = next.run(req).await;
    observe(&m, &method, route, response.status(), started);
    response
}

/// One answered request in the metrics, its span and the access log: its
/// method, route template, status and how long since it `started`.
fn observe(m: &Metrics, method: &Method, route: &str, status: StatusCode, started: Instant) {
    crate::telemetry::http::answered(method, route, status, started);
    m.http_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
}

pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The configured profile called `name`; an unknown one is a 404.
fn profile_id(state: &ApiState, name: &str) -> Result<ProfileId, ApiError> {
    state
        .profiles
        .iter()
        .position(|p| p.name == name)
        .map(ProfileId)
        .ok_or_else(|| ApiError::NotFound(format!("unknown ranking profile {name:?}")))
}

/// The OpenAPI 3 document of this API, generated from the handlers and types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "popularity",
        description = "What are people reading right now: rankings, tags, News Index and article pages."
    ),
    paths(
        rankings::list_profiles,
        rankings::list_sites,
        rankings::ranking,
        streams::stream_ranking,
        rankings::popular_tags,
        rising::rising,
        streams::stream_rising,
        streams::stream_alerts,
        index::news_index,
        articles::article,
        crate::collector::collect,
        crate::collector::tracker::script,
        assets::widget,
        operations::healthz,
        operations::readyz
    ),
    components(schemas(model::Weights))
)]
pub struct ApiDoc;
