//! The collector (DESIGN §10): `POST /v1/events` takes behaviour events from
//! browsers (the tracker, `/tracker.js`) and produces them to the `events`
//! topic, keyed by article id, answering `202` only once Kafka acknowledged
//! every event of the request. A request is all or nothing: one invalid
//! event makes it a 400 naming the event, and nothing of it is produced.
//!
//! The way of a request: [`client`] (who sends, and whether it may now),
//! the body's limits, [`events`] (complete and validate each event with the
//! consumer's own decoder, with the [`visitor`] the collector derives), the
//! [`gate`] (each event's site owns the page that sent it and has room in
//! its quota), then [`Collector::produce`].

pub mod client;
pub mod events;
pub mod gate;
pub mod schema;
pub(crate) mod tracker;
pub mod visitor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _, PurgeConfig};
use serde_json::json;
use tokio::sync::Semaphore;

use self::client::Clients;
use self::events::{Batch, Refused, Rules};
use self::gate::{Gate, Refusal};
use self::visitor::Visitors;
use crate::config::{CollectorSettings, Settings};
use crate::dependency::{Dependency, KafkaLink};
use crate::event::decode::Decoder;
use crate::metrics::Metrics;
use crate::site::Sites;

/// Most events waiting for Kafka at once; beyond, requests get 503 rather
/// than memory.
pub const MAX_IN_FLIGHT_EVENTS: usize = 50_000;
/// `Retry-After` of a 503 while Kafka does not acknowledge.
const RETRY_AFTER_UNAVAILABLE: &str = "5";

/// What every collector request shares.
pub struct Collector {
    producer: FutureProducer<KafkaLink>,
    topic: String,
    decoder: Decoder,
    visitors: Visitors,
    clients: Clients,
    sites: Sites,
    gate: Gate,
    settings: CollectorSettings,
    max_age_ms: i64,
    in_flight: Arc<Semaphore>,
    metrics: Metrics,
}

impl Collector {
    /// The collector `settings` describe, with an idempotent producer
    /// (`acks=all`) that gives up on an event after `produce_timeout`.
    pub fn build(
        settings: &Settings,
        metrics: Metrics,
        kafka: Dependency,
    ) -> anyhow::Result<Arc<Collector>> {
        let c = &settings.collector;
        let timeout_ms = c.produce_timeout.as_millis().to_string();
        let defaults = [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", timeout_ms.as_str()),
            ("queue.buffering.max.messages", "100000"),
            ("statistics.interval.ms", "5000"),
        ];
        let producer = crate::ingest::client_config(&settings.kafka, &defaults, true)
            .create_with_context(KafkaLink::new(kafka))
            .context("creating the collector's producer")?;
        let sites = Sites::from_settings(settings);
        Ok(Arc::new(Collector {
            producer,
            topic: settings.kafka.topics.events.clone(),
            decoder: Decoder::new(
                settings.ingest.max_message_bytes,
                settings.ingest.max_clock_skew.as_millis() as i64,
            )
            .with_sites(sites.clone()),
            visitors: Visitors::new(c.visitor_secret.as_ref().map(|s| s.0.as_str())),
            clients: Clients::new(c),
            gate: Gate::new(&sites),
            sites,
            settings: c.clone(),
            max_age_ms: settings.ingest.max_event_age.as_millis() as i64,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_EVENTS)),
            metrics,
        }))
    }

    /// `POST /v1/events` and `GET /tracker.js`.
    pub fn routes(self: &Arc<Collector>) -> Router {
        let idle = Arc::downgrade(self);
        // Addresses back to a full burst are forgotten once a minute.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match idle.upgrade() {
                    Some(c) => c.clients.forget_idle(),
                    None => return,
                }
            }
        });
        Router::new()
            .route("/v1/events", post(collect))
            .route("/tracker.js", get(tracker::script))
            .with_state(self.clone())
    }

    /// Produces `batch`; `Ok` once Kafka acknowledged every event.
    async fn produce(&self, batch: &Batch) -> Result<(), Problem> {
        let n = batch.events.len() as u32;
        let Ok(_permit) = self.in_flight.try_acquire_many(n) else {
            return Err(Problem::Unavailable(
                "too many events waiting for Kafka; try again shortly".into(),
            ));
        };
        let started = Instant::now();
        let sends = batch.events.iter().map(|e| {
            let record = FutureRecord::to(&self.topic)
                .key(&e.article_id)
                .payload(&e.payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                }));
            self.producer.send(record, Duration::ZERO)
        });
        let results =
            match tokio::time::timeout(self.settings.produce_timeout, join_all(sends)).await {
                Ok(results) => results,
                Err(_) => {
                    // What still waits in the producer's queue will never be
                    // sent: those requests (this one, and any other waiting)
                    // are answered 503 with nothing of them produced.
                    self.producer
                        .purge(PurgeConfig::default().queue().non_blocking());
                    self.metrics.collector_kafka_errors.inc_by(n as u64);
                    tracing::warn!(
                        events = n,
                        "Kafka did not acknowledge a collector request in time"
                    );
                    return Err(Problem::Unavailable(
                        "the event log is unavailable; try again shortly".into(),
                    ));
                }
            };
        self.metrics
            .collector_produce
            .observe(started.elapsed().as_secs_f64());
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            if let Some(Err((e, _))) = results.iter().find(|r| r.is_err()) {
                tracing::warn!(error = %e, failed, of = n, "Kafka did not acknowledge a collector request");
            }
            self.metrics.collector_kafka_errors.inc_by(failed as u64);
            return Err(Problem::Unavailable(
                "the event log is unavailable; try again shortly".into(),
            ));
        }
        self.metrics.collector_events.inc_by(n as u64);
        Ok(())
    }

    /// Waits until what was produced is acknowledged (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// Why a request was not accepted; each is a status and a message.
#[derive(Debug)]
enum Problem {
    Refused(Refused),
    TooLarge(usize),
    /// The body did not arrive within `collector.body_timeout`.
    SlowBody(Duration),
    MediaType,
    RateLimited(Duration),
    /// The request's page is not one of the site's origins.
    Forbidden(String),
    /// The site's quota of events is spent for now.
    SiteQuota(String, Duration),
    Unavailable(String),
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // The error code is the metrics' reason: one name for both.
        let (status, message) = match &self {
            Problem::Refused(r) => (StatusCode::BAD_REQUEST, r.to_string()),
            Problem::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            ),
            Problem::SlowBody(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", limit.as_secs_f64()),
            ),
            Problem::MediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/json or text/plain".to_string(),
            ),
            Problem::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; slow down".to_string(),
            ),
            Problem::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            Problem::SiteQuota(site, _) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("site {site:?} is over its quota of events per second; slow down"),
            ),
            Problem::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
        };
        let code = self.reason();
        let mut body = json!({ "error": { "code": code, "message": message } });
        if let Problem::Refused(Refused::Event { index, .. }) = &self {
            body["error"]["index"] = json!(index);
        }
        let mut response = (status, Json(body)).into_response();
        let retry = match &self {
            Problem::RateLimited(wait) | Problem::SiteQuota(_, wait) => {
                Some(wait.as_secs_f64().ceil().max(1.0).to_string())
            }
            Problem::Unavailable(_) => Some(RETRY_AFTER_UNAVAILABLE.to_string()),
            _ => None,
        };
        if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl Problem {
    fn reason(&self) -> &'static str {
        match self {
            Problem::Refused(Refused::TooMany { .. }) => "too_many_events",
            Problem::Refused(_) => "invalid_event",
            Problem::TooLarge(_) => "payload_too_large",
            Problem::SlowBody(_) => "body_timeout",
            Problem::MediaType => "unsupported_media_type",
            Problem::RateLimited(_) => "rate_limited",
            Problem::Forbidden(_) => "origin_not_allowed",
            Problem::SiteQuota(..) => "site_quota",
            Problem::Unavailable(_) => "unavailable",
        }
    }
}

/// Behaviour events from browsers: produced to the events topic once
/// Kafka acknowledged every one of them; all or nothing.
#[utoipa::path(post, path = "/v1/events", tag = "collector",
    request_body(content(
        (schema::CollectedEvents = "application/json"),
        (schema::CollectedEvents = "text/plain"),
    )),
    responses(
        (status = 202, description = "Produced", body = schema::Accepted),
        (status = 400, description = "An invalid event (its index is named) or too many", body = crate::http::ErrorBody),
        (status = 413, description = "Body too large", body = crate::http::ErrorBody),
        (status = 408, description = "The body did not arrive within collector.body_timeout", body = crate::http::ErrorBody),
        (status = 403, description = "The page (Origin, else Referer) is not one of the site's origins", body = crate::http::ErrorBody),
        (status = 415, description = "Neither JSON nor text/plain", body = crate::http::ErrorBody),
        (status = 429, description = "Too many requests from this address, or for this site; see Retry-After", body = crate::http::ErrorBody),
        (status = 503, description = "Kafka did not acknowledge in time; see Retry-After", body = crate::http::ErrorBody),
    ))]
pub(crate) async fn collect(State(c): State<Arc<Collector>>, request: Request) -> Response {
    match accept(&c, request).await {
        Ok(accepted) => {
            (StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response()
        }
        Err(p) => {
            c.metrics
                .collector_rejected
                .with_label_values(&[p.reason()])
                .inc();
            p.into_response()
        }
    }
}

async fn accept(c: &Collector, request: Request) -> Result<usize, Problem> {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|i| i.0);
    let client = c.clients.address(peer, &parts.headers);
    if let Some(ip) = client {
        c.clients.admit(ip).map_err(Problem::RateLimited)?;
    }
    if !plain_or_json(&parts.headers) {
        return Err(Problem::MediaType);
    }
    let limit = c.settings.body_timeout;
    let body = tokio::time::timeout(limit, read(body, c.settings.max_body_bytes))
        .await
        .map_err(|_| Problem::SlowBody(limit))??;
    let user_agent = header_str(&parts.headers, header::USER_AGENT);
    let host = site_host(&parts.headers);
    let req = events::Request {
        now_ms: crate::now_ms(),
        host: &host,
        client,
        user_agent: &user_agent,
    };
    let rules = Rules {
        decoder: &c.decoder,
        sites: &c.sites,
        max_engaged_seconds: c.settings.max_engaged_seconds,
        visitors: &c.visitors,
        max_age_ms: c.max_age_ms,
        max_events: c.settings.max_events_per_request,
    };
    let batch = events::prepare(&body, &req, &rules).map_err(Problem::Refused)?;
    c.gate
        .admit(&parts.headers, &batch)
        .map_err(|refusal| match refusal {
            Refusal::Origin(m) => Problem::Forbidden(m),
            Refusal::Quota(site, wait) => Problem::SiteQuota(site, wait),
        })?;
    c.metrics.collector_bots.inc_by(batch.bots as u64);
    if !batch.events.is_empty() {
        c.produce(&batch).await?;
    }
    Ok(batch.events.len())
}

/// The body, at most `max` bytes.
async fn read(body: Body, max: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| Problem::TooLarge(max))
}

/// `application/json`, `text/plain` (what `sendBeacon` sends without a
/// preflight) or none.
fn plain_or_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = v
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(essence.as_str(), "application/json" | "text/plain")
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(512)
        .collect()
}

/// The page's host: from `Origin` (sent with cross-origin beacons), else
/// `Referer`, else `Host`.
fn site_host(headers: &HeaderMap) -> String {
    for name in [header::ORIGIN, header::REFERER] {
        let host = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<axum::http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_string));
        if let Some(h) = host {
            return h;
        }
    }
    header_str(headers, header::HOST)
}
