//! Configuration: built-in defaults < optional TOML file < `POPULARITY__SECTION__KEY`
//! environment variables (DESIGN §8).
//!
//! Everything is validated here, before anything connects: an unknown key or an
//! invalid value stops the program at start with a message naming the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::event::EventType;

mod env;
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

/// Kafka connection settings.
#[derive(Debug, Clone, Deserialize)]
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

/// Store settings.
#[derive(Debug, Clone, Deserialize)]
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
    /// How long article metadata is kept after its last publication event.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
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
    pub visitor_secret: Option<String>,
    /// Longest wait for Kafka to acknowledge a request's events; past it
    /// the request is answered 503.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
}

/// Consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Longest time between two flushes to the store.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A flush happens as soon as this many messages are pending.
    pub max_batch_events: usize,
    /// Page views and shares by the same visitor of the same article within
    /// this window count once; engagement is capped per window.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Events older than this (by their own time) are not counted.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
    /// Events further than this in the future are invalid.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Messages larger than this are invalid.
    pub max_message_bytes: usize,
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

impl Settings {
    /// Loads defaults, then `file` if given, then `POPULARITY__…` variables
    /// from `env`, and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Source(format!("cannot read {}: {e}", path.display())))?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        let mut env = env::Variables::split(env);
        builder = builder.add_source(
            Environment::with_prefix("popularity")
                .prefix_separator("__")
                .separator("__")
                .source(Some(std::mem::take(&mut env.plain))),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        let mut settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().to_string();
            invalid(key, strip_key_suffix(&message))
        })?;
        env.merge_into(&mut settings);
        settings.validate()?;
        Ok(settings)
    }

    /// Loads from the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Settings {
        Settings::load(None, std::iter::empty()).expect("built-in defaults are valid")
    }
}

/// serde messages from `config` sometimes repeat the key; the key is reported separately.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_file_sets_every_key_to_its_default() {
        use config::{Config, File, FileFormat};
        let text = include_str!("../../popularity.example.toml");
        // Read alone, without the built-in defaults: a key missing from the
        // example fails here.
        let alone: super::Settings = Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the example holds every key");
        assert_eq!(
            format!("{alone:?}"),
            format!("{:?}", super::Settings::defaults()),
            "the example's values are the defaults"
        );
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_of(pairs: &[(&str, &str)]) -> String {
        Settings::load(None, env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::defaults();
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.group_id, "popularity");
        assert_eq!(s.kafka.topics.events, "events");
        assert_eq!(s.kafka.topics.articles, "articles");
        assert_eq!(s.kafka.topics.dead_letter, "events.dlq");
        assert_eq!(s.store.backend, Backend::Redis);
        assert_eq!(s.store.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.store.key_prefix, "pop");
        assert_eq!(s.api.listen, "0.0.0.0:8080");
        assert_eq!(s.api.cache_ttl, Duration::from_secs(1));
        assert_eq!(s.ingest.flush_interval, Duration::from_millis(250));
        assert_eq!(s.ingest.max_batch_events, 50_000);
        assert_eq!(s.ingest.dedupe_window, Duration::from_secs(30 * 60));
        assert_eq!(s.ingest.max_event_age, Duration::from_secs(7 * 86_400));
        assert_eq!(s.ingest.max_clock_skew, Duration::from_secs(300));
        assert_eq!(s.scoring.max_members, 10_000);
        let profiles: Vec<_> = s
            .scoring
            .profiles
            .iter()
            .map(|p| (p.name.as_str(), p.half_life.as_secs()))
            .collect();
        assert_eq!(
            profiles,
            [
                ("trending", 7_200),
                ("popular", 86_400),
                ("weekly", 604_800)
            ]
        );
        for p in &s.scoring.profiles {
            assert_eq!(
                p.weights,
                WeightSettings {
                    page_view: 1.0,
                    share: 5.0,
                    engaged_second: 0.05
                }
            );
        }
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"file:9092\"\n\
             [kafka.properties]\n\"sasl.mechanism\" = \"PLAIN\"\n[ingest]\nflush_interval = \"1s\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("POPULARITY__KAFKA__BROKERS", "env:9092"),
                ("POPULARITY__INGEST__MAX_BATCH_EVENTS", "7"),
                ("POPULARITY__KAFKA__PROPERTIES__SECURITY_PROTOCOL", "ssl"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.group_id, "from-file");
        assert_eq!(s.kafka.brokers, "env:9092");
        assert_eq!(s.ingest.flush_interval, Duration::from_secs(1));
        assert_eq!(s.ingest.max_batch_events, 7);
        assert_eq!(s.kafka.properties["security.protocol"], "ssl");
        assert_eq!(s.kafka.properties["sasl.mechanism"], "PLAIN");
    }

    #[test]
    fn allowed_origins_come_from_the_environment_as_a_comma_separated_list() {
        let s = Settings::load(
            None,
            env(&[(
                "POPULARITY__API__CORS_ALLOWED_ORIGINS",
                "https://news.example.com, http://127.0.0.1:9000",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.api.cors_allowed_origins,
            ["https://news.example.com", "http://127.0.0.1:9000"]
        );
        let e = err_of(&[(
            "POPULARITY__API__CORS_ALLOWED_ORIGINS",
            "news.example.com/path",
        )]);
        assert!(e.contains("api.cors_allowed_origins"), "{e}");
    }

    #[test]
    fn sentinel_and_cluster_take_lists_and_standalone_one_url() {
        let s = Settings::load(
            None,
            env(&[
                ("POPULARITY__STORE__REDIS_MODE", "cluster"),
                (
                    "POPULARITY__STORE__REDIS_URL",
                    "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.store.redis_mode, RedisMode::Cluster);
        assert_eq!(
            s.store.redis_urls(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(s.store.effective_shards(), 8);
        let e = err_of(&[(
            "POPULARITY__STORE__REDIS_URL",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        )]);
        assert!(
            e.contains("store.redis_url") && e.contains("standalone"),
            "{e}"
        );
        let e = err_of(&[
            ("POPULARITY__STORE__REDIS_MODE", "sentinel"),
            ("POPULARITY__STORE__REDIS_URL", "redis://127.0.0.1:26379"),
            ("POPULARITY__STORE__SENTINEL_MASTER", " "),
        ]);
        assert!(e.contains("store.sentinel_master"), "{e}");
    }

    #[test]
    fn an_unknown_key_fails_naming_it() {
        let e = err_of(&[("POPULARITY__INGEST__FLUSH_INTERVALL", "1s")]);
        assert!(e.contains("ingest") && e.contains("flush_intervall"), "{e}");
    }

    #[test]
    fn an_invalid_duration_fails_naming_the_key() {
        let e = err_of(&[("POPULARITY__INGEST__FLUSH_INTERVAL", "soon")]);
        assert!(e.contains("`ingest.flush_interval`"), "{e}");
    }

    #[test]
    fn a_non_numeric_count_fails_naming_the_key() {
        let e = err_of(&[("POPULARITY__INGEST__MAX_BATCH_EVENTS", "many")]);
        assert!(e.contains("`ingest.max_batch_events`"), "{e}");
    }

    #[test]
    fn out_of_range_values_fail_naming_the_key() {
        for (k, v, key) in [
            (
                "POPULARITY__INGEST__MAX_BATCH_EVENTS",
                "0",
                "ingest.max_batch_events",
            ),
            (
                "POPULARITY__INGEST__FLUSH_INTERVAL",
                "0s",
                "ingest.flush_interval",
            ),
            ("POPULARITY__API__LISTEN", "nowhere", "api.listen"),
            (
                "POPULARITY__STORE__REDIS_URL",
                "http://x",
                "store.redis_url",
            ),
            ("POPULARITY__STORE__KEY_PREFIX", "a{b}", "store.key_prefix"),
            ("POPULARITY__STORE__REDIS_MODE", "ring", "store.redis_mode"),
            ("POPULARITY__STORE__SHARDS", "0", "store.shards"),
            (
                "POPULARITY__STORE__WAIT_REPLICAS",
                "99",
                "store.wait_replicas",
            ),
            ("POPULARITY__STORE__BACKEND", "mongo", "store.backend"),
            (
                "POPULARITY__SCORING__MAX_MEMBERS",
                "0",
                "scoring.max_members",
            ),
            (
                "POPULARITY__KAFKA__TOPICS__DEAD_LETTER",
                "events",
                "kafka.topics.dead_letter",
            ),
            (
                "POPULARITY__KAFKA__PROPERTIES__GROUP_ID",
                "x",
                "kafka.properties.group.id",
            ),
        ] {
            let e = err_of(&[(k, v)]);
            assert!(e.contains(&format!("`{key}`")), "{k}={v}: {e}");
        }
    }

    #[test]
    fn bad_profiles_fail_naming_the_profile_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let cases = [
            ("Trending", "2h", "1.0", "scoring.profiles[0].name"),
            ("trending", "0s", "1.0", "scoring.profiles[0].half_life"),
            (
                "trending",
                "2h",
                "-1.0",
                "scoring.profiles[0].weights.page_view",
            ),
        ];
        for (name, hl, w, key) in cases {
            std::fs::write(
                &path,
                format!(
                    "[[scoring.profiles]]\nname = \"{name}\"\nhalf_life = \"{hl}\"\n\
                     weights = {{ page_view = {w}, share = 5.0, engaged_second = 0.05 }}\n"
                ),
            )
            .unwrap();
            let e = Settings::load(Some(&path), []).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }
}
