//! The rules of the settings that types alone cannot state: non-empty
//! names, parseable addresses and URLs, bounds, and how settings relate;
//! each failure names its key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{invalid, Backend, ConfigError, RedisMode, Settings, StoreSettings};
use crate::event::slug;

/// Most threads one consumer decodes on (`ingest.decode_threads`).
const MAX_DECODE_THREADS: usize = 64;

impl Settings {
    /// Checks every value that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_kafka()?;
        self.validate_store()?;
        self.validate_api()?;
        self.validate_collector()?;
        self.validate_ingest()?;
        self.validate_scoring()?;
        self.validate_rising()?;
        self.validate_alerts()?;
        self.validate_sites()?;
        self.validate_telemetry()?;
        self.validate_admin()
    }

    /// Brokers, group and topics named; what the service sets itself left alone.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        nonempty("kafka.brokers", &self.kafka.brokers)?;
        nonempty("kafka.group_id", &self.kafka.group_id)?;
        nonempty("kafka.topics.events", &self.kafka.topics.events)?;
        nonempty("kafka.topics.articles", &self.kafka.topics.articles)?;
        nonempty("kafka.topics.dead_letter", &self.kafka.topics.dead_letter)?;
        if self.kafka.topics.dead_letter == self.kafka.topics.events
            || self.kafka.topics.dead_letter == self.kafka.topics.articles
        {
            return Err(invalid(
                "kafka.topics.dead_letter",
                "must differ from the topics it receives from",
            ));
        }
        for key in self.kafka.properties.keys() {
            if matches!(
                key.as_str(),
                "bootstrap.servers"
                    | "group.id"
                    | "enable.auto.commit"
                    | "enable.auto.offset.store"
            ) {
                return Err(invalid(
                    format!("kafka.properties.{key}"),
                    "is set by popularity itself and cannot be overridden",
                ));
            }
        }
        Ok(())
    }

    /// The backend, its key prefix and its times.
    fn validate_store(&self) -> Result<(), ConfigError> {
        if self.store.backend == Backend::Redis {
            self.store.validate_redis()?;
        }
        let prefix = &self.store.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ':', ' ']) {
            return Err(invalid(
                "store.key_prefix",
                format!("{prefix:?} must be non-empty without braces, colons or spaces"),
            ));
        }
        positive("store.metadata_ttl", self.store.metadata_ttl)?;
        positive("store.group_ttl", self.store.group_ttl)?;
        Ok(())
    }

    /// The listeners, origins and bounds of the API.
    fn validate_api(&self) -> Result<(), ConfigError> {
        self.api
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("api.listen", format!("{:?}: {e}", self.api.listen)))?;
        for origin in &self.api.cors_allowed_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(invalid(
                    "api.cors_allowed_origins",
                    format!("{origin:?} is not an origin such as https://news.example.com, nor *"),
                ));
            }
        }
        if self.api.max_streams_per_client == 0 {
            return Err(invalid("api.max_streams_per_client", "must be at least 1"));
        }
        if self.api.max_connections == 0 {
            return Err(invalid("api.max_connections", "must be at least 1"));
        }
        positive("api.header_timeout", self.api.header_timeout)?;
        if self.api.cache_max_bytes < 65_536 {
            return Err(invalid("api.cache_max_bytes", "must be at least 65536"));
        }
        if self
            .api
            .admin_listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                "api.admin_listen",
                format!(
                    "{:?} must be an address and port such as 127.0.0.1:9464",
                    self.api.admin_listen
                ),
            ));
        }
        if self.api.admin_listen == self.api.listen && !self.api.listen.ends_with(":0") {
            return Err(invalid(
                "api.admin_listen",
                "must differ from api.listen: the operators' routes are kept off the public listener",
            ));
        }
        Ok(())
    }

    /// The collector's bounds on bodies, events, rates and time, and its secret.
    fn validate_collector(&self) -> Result<(), ConfigError> {
        let c = &self.collector;
        if c.max_body_bytes == 0 || c.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "collector.max_body_bytes",
                "must be between 1 and 16777216",
            ));
        }
        if c.max_events_per_request == 0 || c.max_events_per_request > 10_000 {
            return Err(invalid(
                "collector.max_events_per_request",
                "must be between 1 and 10000",
            ));
        }
        if c.requests_per_second_per_ip == 0 {
            return Err(invalid(
                "collector.requests_per_second_per_ip",
                "must be greater than zero",
            ));
        }
        if c.burst == 0 {
            return Err(invalid("collector.burst", "must be greater than zero"));
        }
        for cidr in &c.trusted_proxies {
            cidr.parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "collector.trusted_proxies",
                        format!("{cidr:?} is not an address or a CIDR such as 10.0.0.0/8"),
                    )
                })?;
        }
        let secret = c.visitor_secret.as_ref().map(|s| s.0.as_str());
        if secret.is_some_and(|k| k.len() < 16) {
            return Err(invalid(
                "collector.visitor_secret",
                "must be at least 16 characters",
            ));
        }
        // A secret copied from an example is known to everyone: visitors
        // could be recognised from outside (DESIGN §13).
        if secret.is_some_and(|k| SAMPLE_SECRETS.contains(&k) || k.starts_with("change-me")) {
            return Err(invalid(
                "collector.visitor_secret",
                "is a sample value from the documentation; generate one (openssl rand -hex 32)",
            ));
        }
        positive("collector.produce_timeout", c.produce_timeout)?;
        positive("collector.body_timeout", self.collector.body_timeout)?;
        if !(c.max_engaged_seconds.is_finite() && c.max_engaged_seconds > 0.0) {
            return Err(invalid(
                "collector.max_engaged_seconds",
                "must be a number greater than zero",
            ));
        }
        if c.events_per_second_per_site == 0 {
            return Err(invalid(
                "collector.events_per_second_per_site",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The consumer's batches, messages and times.
    fn validate_ingest(&self) -> Result<(), ConfigError> {
        positive("ingest.flush_interval", self.ingest.flush_interval)?;
        if self.ingest.max_batch_events == 0 {
            return Err(invalid("ingest.max_batch_events", "must be at least 1"));
        }
        if self.ingest.max_message_bytes == 0 {
            return Err(invalid("ingest.max_message_bytes", "must be at least 1"));
        }
        if !(1..=MAX_DECODE_THREADS).contains(&self.ingest.decode_threads) {
            return Err(invalid(
                "ingest.decode_threads",
                format!("must be between 1 and {MAX_DECODE_THREADS}"),
            ));
        }
        positive("ingest.max_event_age", self.ingest.max_event_age)?;
        positive("ingest.shutdown_deadline", self.ingest.shutdown_deadline)?;
        Ok(())
    }

    /// The ranking profiles and the bound of a ranking.
    fn validate_scoring(&self) -> Result<(), ConfigError> {
        if self.scoring.profiles.is_empty() {
            return Err(invalid(
                "scoring.profiles",
                "at least one profile is needed",
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.scoring.profiles.iter().enumerate() {
            let key = format!("scoring.profiles[{i}]");
            if p.name.is_empty() || slug(&p.name) != p.name {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} must be a lowercase slug like \"trending\"", p.name),
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice", p.name),
                ));
            }
            positive(&format!("{key}.half_life"), p.half_life)?;
            for (field, w) in [
                ("page_view", p.weights.page_view),
                ("share", p.weights.share),
                ("engaged_second", p.weights.engaged_second),
            ] {
                if !w.is_finite() || w < 0.0 {
                    return Err(invalid(
                        format!("{key}.weights.{field}"),
                        format!("{w} must be a finite number >= 0"),
                    ));
                }
            }
        }
        if self.scoring.max_members == 0 {
            return Err(invalid("scoring.max_members", "must be at least 1"));
        }
        Ok(())
    }

    /// Traces go to an http(s) URL, under a name.
    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if t.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if t.otlp_endpoint.is_empty() {
            return Ok(());
        }
        let url = t
            .otlp_endpoint
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if url.is_none() {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!(
                    "{:?} is not an http(s) URL such as http://127.0.0.1:4318",
                    super::redacted(&t.otlp_endpoint)
                ),
            ));
        }
        Ok(())
    }

    /// The rising list compares a shorter profile with a longer one.
    fn validate_rising(&self) -> Result<(), ConfigError> {
        let r = &self.rising;
        let profile = |key: &str, name: &str| {
            self.scoring
                .profiles
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    invalid(
                        key,
                        format!("{name:?} is not a profile of scoring.profiles"),
                    )
                })
        };
        let (short, long) = (
            profile("rising.short", &r.short)?,
            profile("rising.long", &r.long)?,
        );
        if short.half_life >= long.half_life {
            return Err(invalid(
                "rising.short",
                format!(
                    "{:?} must have a shorter half-life than rising.long {:?}",
                    r.short, r.long
                ),
            ));
        }
        if !(r.floor.is_finite() && r.floor > 0.0) {
            return Err(invalid(
                "rising.floor",
                "must be a number greater than zero",
            ));
        }
        if !(r.min_score.is_finite() && r.min_score >= 0.0) {
            return Err(invalid("rising.min_score", "must be a finite number >= 0"));
        }
        Ok(())
    }

    /// Alerts go to http(s) URLs, signed with secrets of some length, and
    /// not into a private network unless allowed.
    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let a = &self.alerts;
        if !(a.threshold.is_finite() && a.threshold > 0.0) {
            return Err(invalid(
                "alerts.threshold",
                "must be a number greater than zero",
            ));
        }
        for (key, d) in [
            ("alerts.cooldown", a.cooldown),
            ("alerts.interval", a.interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        for (i, w) in a.webhooks.iter().enumerate() {
            let key = format!("alerts.webhooks[{i}]");
            let url =
                w.url.parse::<axum::http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
            let Some(url) = url else {
                return Err(invalid(
                    format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", super::redacted(&w.url)),
                ));
            };
            if !a.allow_private_targets
                && crate::alerts::private_host(url.host().unwrap_or_default())
            {
                return Err(invalid(
                    format!("{key}.url"),
                    "points at a loopback or private address; set alerts.allow_private_targets to allow it",
                ));
            }
            if w.secret.0.len() < 16 {
                return Err(invalid(
                    format!("{key}.secret"),
                    "must be at least 16 characters",
                ));
            }
        }
        Ok(())
    }

    /// Site ids are short unique slugs, their origins origins.
    fn validate_sites(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let key = format!("sites[{i}]");
            let id = &site.id;
            if id.is_empty() || id.len() > 32 || slug(id) != *id {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{id:?} must be a lowercase slug of at most 32 bytes, like \"jakarta-globe\""),
                ));
            }
            if !ids.insert(id.as_str()) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{id:?} is used twice"),
                ));
            }
            if site.name.trim().is_empty() || site.name.chars().count() > 100 {
                return Err(invalid(
                    format!("{key}.name"),
                    "must be between 1 and 100 characters",
                ));
            }
            for origin in &site.origins {
                if origin != "*" && !is_origin(origin) {
                    return Err(invalid(
                        format!("{key}.origins"),
                        format!(
                            "{origin:?} is not an origin such as https://news.example.com, nor *"
                        ),
                    ));
                }
            }
            if site.events_per_second == Some(0) {
                return Err(invalid(
                    format!("{key}.events_per_second"),
                    "must be greater than zero",
                ));
            }
        }
        Ok(())
    }

    /// Admin tokens are named and stored as SHA-256 digests.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, t) in self.admin.tokens.iter().enumerate() {
            let key = format!("admin.tokens[{i}]");
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    "must be non-empty and unique",
                ));
            }
            for site in &t.sites {
                let known = if self.sites.is_empty() {
                    site == crate::site::DEFAULT_SITE
                } else {
                    self.sites.iter().any(|s| s.id == *site)
                };
                if !known {
                    return Err(invalid(
                        format!("{key}.sites"),
                        format!("{site:?} is not a configured site"),
                    ));
                }
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("{key}.sha256"),
                    "must be the SHA-256 of the token in 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with an http(s) scheme and nothing after: what a
/// browser sends as `Origin`.
/// Secrets that appear in this project's examples.
const SAMPLE_SECRETS: [&str; 2] = [
    "change-me-to-a-long-random-secret",
    "<openssl rand -hex 32>",
];

fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '*'])
        && rest.split(':').count() <= 2
        && rest
            .split(':')
            .nth(1)
            .is_none_or(|p| p.parse::<u16>().is_ok())
}

impl StoreSettings {
    /// The Redis topology: URLs that parse, as many as the mode takes, and
    /// bounds on replicas and shards.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let urls = self.redis_urls();
        if self.redis_mode == RedisMode::Standalone && urls.len() != 1 {
            return Err(invalid(
                "store.redis_url",
                "takes one URL in standalone mode (lists are for sentinel and cluster)",
            ));
        }
        if urls.is_empty() {
            return Err(invalid("store.redis_url", "must not be empty"));
        }
        for url in &urls {
            redis::Client::open(*url).map_err(|e| {
                invalid(
                    "store.redis_url",
                    format!("{:?} is not a Redis URL: {e}", super::redacted(url)),
                )
            })?;
        }
        if self.redis_mode == RedisMode::Sentinel && self.sentinel_master.trim().is_empty() {
            return Err(invalid("store.sentinel_master", "must not be empty"));
        }
        if self.wait_replicas > 16 {
            return Err(invalid("store.wait_replicas", "must be between 0 and 16"));
        }
        if self.shards == 0 || self.shards > 256 {
            return Err(invalid("store.shards", "must be between 1 and 256"));
        }
        Ok(())
    }
}

/// `v` unless blank.
fn nonempty(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        Err(invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

/// `d` unless zero.
fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}
