//! Configuration: built-in defaults < optional TOML file < `POPULARITY__SECTION__KEY`
//! environment variables (DESIGN §8).
//!
//! Everything is validated here, before anything connects: an unknown key or an
//! invalid value stops the program at start with a message naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::event::EventType;

mod env;
mod load;
mod validate;

/// The built-in defaults, as the TOML an operator would write.
pub const DEFAULTS_TOML: &str = include_str!("../defaults.toml");

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, of the wrong type, unknown, or out of range.
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `ingest.flush_interval`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file could not be read or parsed.
    #[error("invalid configuration: {0}")]
    Source(String),
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration of one `popularity` process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kafka connection and topics.
    pub kafka: KafkaSettings,
    /// Where scores live.
    pub store: StoreSettings,
    /// The HTTP API.
    pub api: ApiSettings,
    /// `POST /v1/events`: events from browsers.
    pub collector: CollectorSettings,
    /// The consumer: flush cadence and filters.
    pub ingest: IngestSettings,
    /// Ranking profiles and bounds.
    pub scoring: ScoringSettings,
    /// How the process logs.
    pub log: LogSettings,
    /// The network's sites (DESIGN §11); none: one site, `default`.
    #[serde(default)]
    pub sites: Vec<SiteSettings>,
    /// Editors' API (`/v1/admin/…`).
    pub admin: AdminSettings,
    /// What is taking off (DESIGN §14).
    pub rising: RisingSettings,
    /// Alerts when an article takes off (DESIGN §14).
    pub alerts: AlertSettings,
    /// Traces and the access log.
    pub telemetry: TelemetrySettings,
}

/// Traces (OpenTelemetry over OTLP/HTTP) and the access log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where spans are sent, an http(s) URL of an OTLP/HTTP receiver
    /// (`/v1/traces` is appended unless the path already ends with it);
    /// empty: no traces.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans.
    pub service_name: String,
    /// One log line per HTTP request: method, route, status, duration,
    /// and the trace id when traces are on.
    pub access_log: bool,
}

/// Alerts: an article whose rising score crosses `threshold` in a scope
/// (the network, a site) is announced once per `cooldown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// The rising score an article must reach.
    pub threshold: f64,
    /// At most one alert per article and scope this often, across replicas.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How often the rising lists are checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where alerts are posted.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// Allow webhook URLs on loopback and private addresses (tests, a
    /// receiver inside the cluster); refused otherwise.
    pub allow_private_targets: bool,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// An http(s) URL, e.g. a Slack incoming webhook.
    pub url: String,
    /// Key of the `X-Popularity-Signature` HMAC-SHA256 of each body.
    pub secret: Secret,
}

/// The rising list (DESIGN §14): articles whose short-profile rate has
/// left their long-profile rate behind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RisingSettings {
    /// The profile whose rate is "now" (the shorter half-life).
    pub short: String,
    /// The profile whose rate is "usual" (the longer half-life).
    pub long: String,
    /// The least usual rate a rise is measured against, weighted events
    /// per second: a new article is not infinitely rising.
    pub floor: f64,
    /// The least short-profile score an article needs to rise.
    pub min_score: f64,
}

/// One site of the network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    /// Its id in events, keys and URLs: a lowercase slug of at most 32
    /// bytes, such as `jakarta-globe`.
    pub id: String,
    /// Its name as readers know it, such as `Jakarta Globe`.
    pub name: String,
    /// The browser origins of its pages (`https://jakartaglobe.id`): the
    /// collector takes its events only from these.
    pub origins: Vec<String>,
    /// Events per second the collector takes for this site from all
    /// readers together; unset: `collector.events_per_second_per_site`.
    #[serde(default)]
    pub events_per_second: Option<u32>,
}

/// The editors' API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Who may call it: each a name (logged with every change) and the
    /// SHA-256 of its bearer token, in hex (`printf %s "$TOKEN" |
    /// sha256sum`). None: the admin API answers 404.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
}

/// One admin token, stored hashed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it, as the change log names them.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
    /// The sites it may act on; empty: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// Logging settings. The level comes from `RUST_LOG` (default
/// `info,rdkafka=warn`), e.g. `RUST_LOG=debug` or `RUST_LOG=popularity=debug`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (colours only when standard error is a terminal) or `json`
    /// (one object per line, for log shippers).
    pub format: LogFormat,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Kafka connection settings. Their `Debug` form hides the values of
/// secret properties (`sasl.password`, `ssl.key.password`, …).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topic names.
    pub topics: TopicSettings,
    /// Any librdkafka property, passed through (security, timeouts). In the
    /// environment form underscores stand for dots:
    /// `POPULARITY__KAFKA__PROPERTIES__SECURITY_PROTOCOL=ssl`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &redacted(&self.brokers))
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("properties", &properties)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret.
pub fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "token",
        "sasl.jaas.config",
        "ssl.key.pem",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// Topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Behaviour events (page_view, share, engagement).
    pub events: String,
    /// Article lifecycle (article_published, article_unpublished).
    pub articles: String,
    /// Where invalid messages go, with the reason in headers.
    pub dead_letter: String,
}

/// Store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Redis (standalone): durable, shared by every replica.
    Redis,
    /// In-process: state rebuilt from the topics at every start.
    Memory,
}

/// How the Redis store reaches its servers (DESIGN §4 "Topologies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server.
    Standalone,
    /// The master Sentinels name, followed after a failover.
    Sentinel,
    /// A Redis Cluster, groups split into shards.
    Cluster,
}

/// Store settings. Their `Debug` form shows `redis_url` without its
/// password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `redis` or `memory`.
    pub backend: Backend,
    /// `standalone`, `sentinel` or `cluster`.
    pub redis_mode: RedisMode,
    /// `redis://…` or `rediss://…`; in sentinel and cluster mode a
    /// comma-separated list (the Sentinels, or the cluster's seed nodes).
    pub redis_url: String,
    /// The master's name in Sentinel.
    pub sentinel_master: String,
    /// Replicas that must hold a write before its offsets are committed.
    pub wait_replicas: usize,
    /// Shards per group in cluster mode.
    pub shards: u16,
    /// Replaces `pop` in every key.
    pub key_prefix: String,
    /// A group of rankings (a section's, a tag's, a site's) that receives
    /// no write for this long expires, so that nothing a sender names
    /// lives for ever.
    #[serde(with = "humantime_serde")]
    pub group_ttl: Duration,
    /// How long article metadata is kept after its last publication event.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("backend", &self.backend)
            .field("redis_mode", &self.redis_mode)
            .field("redis_url", &redacted(&self.redis_url))
            .field("sentinel_master", &self.sentinel_master)
            .field("wait_replicas", &self.wait_replicas)
            .field("shards", &self.shards)
            .field("key_prefix", &self.key_prefix)
            .field("group_ttl", &self.group_ttl)
            .field("metadata_ttl", &self.metadata_ttl)
            .finish()
    }
}

/// A secret setting: its `Debug` form is `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `urls` (one URL or a comma-separated list) with every password
/// replaced by `***`, for logs and error messages: `redis://:s3cret@host`
/// → `redis://:***@host`.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|url| match url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
                    format!("{scheme}://{user}:***@{host}")
                }
                None => url.to_string(),
            },
            None => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl StoreSettings {
    /// The URLs of `redis_url`: one server, the Sentinels or seed nodes.
    pub fn redis_urls(&self) -> Vec<&str> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Shards per group: `shards` in cluster mode, else 1.
    pub fn effective_shards(&self) -> u16 {
        if self.redis_mode == RedisMode::Cluster {
            self.shards
        } else {
            1
        }
    }
}

/// HTTP API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Lifetime of the in-process response cache, also sent as `max-age`.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Browser origins allowed to call the API (`https://news.example.com`),
    /// or `*` for any; empty: no cross-origin access.
    pub cors_allowed_origins: Vec<String>,
    /// Most Server-Sent Event streams open at once on this replica; beyond
    /// it a new stream gets 503.
    pub max_streams: usize,
    /// Most streams one client address holds open on this replica (its
    /// address as `collector.trusted_proxies` say); beyond it 429.
    pub max_streams_per_client: usize,
    /// Address of the operators' listener: `/metrics` and the editors'
    /// API (`/v1/admin/…`), kept off the public one; port 0 picks a free
    /// port.
    pub admin_listen: String,
    /// Longest wait for a request's head, and for the next request on an
    /// idle keep-alive connection; the connection is closed past it.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most connections open at once on the public listener; one past it
    /// is closed at once.
    pub max_connections: usize,
    /// Most bytes of answers the response cache holds (keys and bodies).
    pub cache_max_bytes: u64,
}

/// Collector settings (DESIGN §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSettings {
    /// Serve `POST /v1/events` with roles `all` and `collector`.
    pub enabled: bool,
    /// Largest request body accepted; 413 beyond.
    pub max_body_bytes: usize,
    /// Most events in one request; 400 beyond.
    pub max_events_per_request: usize,
    /// Sustained requests per second allowed from one client address.
    pub requests_per_second_per_ip: u32,
    /// Requests one client address may send at once above that rate.
    pub burst: u32,
    /// Proxies (CIDRs, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the client; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Key of the daily visitor hash; replicas must share it. Unset: a
    /// random key per process (visitors then differ between replicas).
    pub visitor_secret: Option<Secret>,
    /// Longest wait for Kafka to acknowledge a request's events; past it
    /// the request is answered 503.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Longest wait for a request's body; 408 past it.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Most engaged seconds one engagement event may report; more counts
    /// as this many. The tracker reports every 15 s, so 30 leaves slack.
    pub max_engaged_seconds: f64,
    /// Events per second the collector takes for one site from all its
    /// readers together (429 beyond), unless the site sets its own.
    pub events_per_second_per_site: u32,
}

/// Consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Longest time between two flushes to the store.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most messages read and not yet written: a flush happens every
    /// `flush_interval`, or as soon as this many are pending. At high rates
    /// a write aggregates everything read since the last one, so Redis's
    /// work follows what changed, not the event rate; this bounds the
    /// memory that takes (about 32 bytes per counted event).
    pub max_batch_events: usize,
    /// Page views and shares by the same visitor of the same article within
    /// this window count once; engagement is capped per window.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// A repeat within `dedupe_window` is a duplicate only while the
    /// partition's clock is at most this far past the window's end; later
    /// it counts as a first event. Bounds what the duplicate filter holds:
    /// `dedupe_window + dedupe_lateness` of traffic, not `max_event_age`.
    #[serde(with = "humantime_serde")]
    pub dedupe_lateness: Duration,
    /// Events older than this (by their own time) are not counted.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
    /// Events further than this in the future are invalid.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Messages larger than this are invalid.
    pub max_message_bytes: usize,
    /// Threads that decode and judge what one read fetched (each takes a
    /// share of the partitions). One costs the least CPU per event; more
    /// read a backlog faster when the consumer has cores to itself, each
    /// extra thread waking and idling between reads.
    pub decode_threads: usize,
    /// On SIGTERM, the longest time spent flushing what was read before
    /// leaving the group (keep it inside the pod's termination grace period).
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
}

/// Scoring settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSettings {
    /// Ranking profiles; their order is the order of `/v1/rankings`.
    pub profiles: Vec<ProfileSettings>,
    /// Most members kept per ranking; the lowest are dropped beyond it.
    pub max_members: usize,
}

/// One ranking profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// Name used in URLs and keys (a lowercase slug).
    pub name: String,
    /// Time for a score to halve.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// Weight of each event type.
    pub weights: WeightSettings,
}

/// Weights of one profile.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightSettings {
    /// Weight of one page view.
    pub page_view: f64,
    /// Weight of one share.
    pub share: f64,
    /// Weight of one engaged second.
    pub engaged_second: f64,
}

impl WeightSettings {
    /// Weight of one unit of `kind` (a view, a share, an engaged second).
    pub fn of(&self, kind: EventType) -> f64 {
        match kind {
            EventType::PageView => self.page_view,
            EventType::Share => self.share,
            EventType::Engagement => self.engaged_second,
        }
    }
}

#[cfg(test)]
mod tests;
