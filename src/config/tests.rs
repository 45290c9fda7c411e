//! The settings' unit tests: loading, environment forms, validation.

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
    assert_eq!(s.ingest.max_batch_events, 500_000);
    assert_eq!(s.ingest.decode_threads, 1);
    assert_eq!(s.ingest.dedupe_window, Duration::from_secs(30 * 60));
    assert_eq!(s.ingest.dedupe_lateness, Duration::from_secs(3_600));
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
        (
            "POPULARITY__INGEST__DECODE_THREADS",
            "0",
            "ingest.decode_threads",
        ),
        (
            "POPULARITY__INGEST__DECODE_THREADS",
            "65",
            "ingest.decode_threads",
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
        ("POPULARITY__API__ADMIN_LISTEN", "9464", "api.admin_listen"),
        (
            "POPULARITY__API__ADMIN_LISTEN",
            "0.0.0.0:8080",
            "api.admin_listen",
        ),
        (
            "POPULARITY__API__HEADER_TIMEOUT",
            "0s",
            "api.header_timeout",
        ),
        (
            "POPULARITY__API__MAX_CONNECTIONS",
            "0",
            "api.max_connections",
        ),
        (
            "POPULARITY__API__CACHE_MAX_BYTES",
            "100",
            "api.cache_max_bytes",
        ),
        (
            "POPULARITY__COLLECTOR__BODY_TIMEOUT",
            "0s",
            "collector.body_timeout",
        ),
        (
            "POPULARITY__COLLECTOR__VISITOR_SECRET",
            "change-me-to-a-long-random-secret",
            "collector.visitor_secret",
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

#[test]
fn passwords_in_urls_are_redacted_for_logs_and_errors() {
    assert_eq!(
        redacted("redis://:S3cret@127.0.0.1:6379"),
        "redis://:***@127.0.0.1:6379"
    );
    assert_eq!(
        redacted("rediss://app:p@ss:w0rd@r1:6380/0,redis://r2:6379"),
        "rediss://app:***@r1:6380/0,redis://r2:6379"
    );
    assert_eq!(redacted("redis://127.0.0.1"), "redis://127.0.0.1");
    let e = err_of(&[("POPULARITY__STORE__REDIS_URL", "redis://:S3cret@[oops")]);
    assert!(!e.contains("S3cret"), "{e}");
}

#[test]
fn a_sites_origins_are_origins_or_any_and_its_id_a_short_unique_slug() {
    let site = |id: &str, origin: &str| SiteSettings {
        id: id.into(),
        name: "A site".into(),
        origins: vec![origin.into()],
        events_per_second: None,
    };
    let mut s = Settings::defaults();
    s.sites = vec![
        site("btv", "*"),
        site("jakarta-globe", "https://jakartaglobe.id"),
    ];
    assert!(s.validate().is_ok());
    for (sites, key) in [
        (vec![site("btv", "jakartaglobe.id")], "sites[0].origins"),
        (vec![site("BTV", "*")], "sites[0].id"),
        (vec![site("btv", "*"), site("btv", "*")], "sites[1].id"),
        (vec![site(&"x".repeat(33), "*")], "sites[0].id"),
    ] {
        s.sites = sites;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("`{key}`")), "{e}");
    }
}

#[test]
fn the_debug_form_of_the_settings_shows_no_secret() {
    let s = Settings::load(
        None,
        env(&[
            (
                "POPULARITY__STORE__REDIS_URL",
                "redis://:R3disPass@10.0.0.1:6379",
            ),
            ("POPULARITY__KAFKA__PROPERTIES__SASL_PASSWORD", "KafkaPass1"),
            (
                "POPULARITY__KAFKA__PROPERTIES__SSL_KEY_PASSWORD",
                "KeyPass22",
            ),
            ("POPULARITY__KAFKA__PROPERTIES__SASL_USERNAME", "popularity"),
            (
                "POPULARITY__COLLECTOR__VISITOR_SECRET",
                "a-visitor-secret-of-some-length",
            ),
        ]),
    )
    .unwrap();
    let shown = format!("{s:?}");
    for secret in ["R3disPass", "KafkaPass1", "KeyPass22", "a-visitor-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("redis://:***@10.0.0.1:6379"), "{shown}");
    assert!(shown.contains("\"popularity\""), "names are not secrets");
}

#[test]
fn alert_webhooks_are_http_urls_off_private_networks_unless_allowed() {
    let hook = |url: &str, secret: &str| WebhookSettings {
        url: url.into(),
        secret: Secret(secret.into()),
    };
    let with = |hooks: Vec<WebhookSettings>, allow: bool| {
        let mut s = Settings::defaults();
        s.alerts.webhooks = hooks;
        s.alerts.allow_private_targets = allow;
        s.validate()
    };
    let secret = "a-secret-of-length";
    assert!(with(
        vec![hook("https://hooks.slack.com/services/T/B/X", secret)],
        false
    )
    .is_ok());
    for (url, key) in [
        ("http://127.0.0.1:9000/hook", "alerts.webhooks[0].url"),
        ("http://localhost/hook", "alerts.webhooks[0].url"),
        ("http://169.254.169.254/latest", "alerts.webhooks[0].url"),
        ("http://[fd00::1]/hook", "alerts.webhooks[0].url"),
        ("ftp://example.com/hook", "alerts.webhooks[0].url"),
    ] {
        let e = with(vec![hook(url, secret)], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{key}`")), "{url}: {e}");
    }
    assert!(with(vec![hook("http://127.0.0.1:9000/hook", secret)], true).is_ok());
    let e = with(vec![hook("https://example.com/", "short")], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`alerts.webhooks[0].secret`"), "{e}");
    let mut s = Settings::defaults();
    s.alerts.threshold = 0.0;
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("`alerts.threshold`"));
}

#[test]
fn telemetry_is_off_by_default_and_its_endpoint_an_http_url() {
    let s = Settings::defaults();
    assert_eq!(s.telemetry.otlp_endpoint, "");
    assert_eq!(s.telemetry.service_name, "popularity");
    assert!(!s.telemetry.access_log);
    let s = Settings::load(
        None,
        env(&[
            (
                "POPULARITY__TELEMETRY__OTLP_ENDPOINT",
                "https://otel.example.com:4318",
            ),
            ("POPULARITY__TELEMETRY__SERVICE_NAME", "popularity-eu"),
            ("POPULARITY__TELEMETRY__ACCESS_LOG", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(s.telemetry.otlp_endpoint, "https://otel.example.com:4318");
    assert_eq!(s.telemetry.service_name, "popularity-eu");
    assert!(s.telemetry.access_log);
    for url in [
        "127.0.0.1:4318",
        "otel-collector",
        "grpc://otel:4317",
        "http://",
    ] {
        let e = err_of(&[("POPULARITY__TELEMETRY__OTLP_ENDPOINT", url)]);
        assert!(e.contains("`telemetry.otlp_endpoint`"), "{url}: {e}");
    }
    let e = err_of(&[("POPULARITY__TELEMETRY__SERVICE_NAME", " ")]);
    assert!(e.contains("`telemetry.service_name`"), "{e}");
    let e = err_of(&[("POPULARITY__TELEMETRY__ACCESS_LOG", "maybe")]);
    assert!(e.contains("`telemetry.access_log`"), "{e}");
}
