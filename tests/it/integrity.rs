//! Lists nobody outside can write (DESIGN §12): each attack a client can
//! make on the collector, tried as an outsider would, and what it cannot do.
//! Every test here failed on the commit before sites and integrity
//! (b027e3a) for the reason its name states.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::*;
use crate::helpers::*;

const ORIGIN: &str = "https://news.example.com";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const FAKE: &str = "BREAKING: Minister resigns — read more at evil.example";

/// Settings whose one site's pages are at [`ORIGIN`].
fn site_settings(kafka: &Kafka, redis: Option<&RedisServer>) -> popularity::config::Settings {
    let mut s = settings(kafka, redis);
    s.api.cors_allowed_origins = vec![ORIGIN.into()];
    s
}

/// POSTs `body` as a browser page at `origin` would (`None`: no Origin).
async fn post_from(
    app: &TestApp,
    origin: Option<&str>,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let mut r = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("content-type", content_type)
        .header("user-agent", FIREFOX);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    let r = r.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_applied(app: &TestApp, n: f64) {
    wait_until("the events applied", Duration::from_secs(90), || async {
        app.applied().await >= n
    })
    .await;
}

/// Every member of every list the page shows.
async fn everything_listed(app: &TestApp) -> String {
    let mut out = String::new();
    for path in [
        "/v1/rankings/trending?limit=100",
        "/v1/rankings/popular?limit=100",
        "/v1/rankings/weekly?limit=100",
        "/v1/rankings/trending/tags?limit=100",
        "/v1/rankings/trending?section=news&limit=100",
        "/v1/rankings/trending?tag=injected-tag&limit=100",
        "/v1/index?limit=100",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push_str(&body["items"].to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_headline_and_tag_posted_by_browsers_never_reach_a_list() {
    let kafka = Kafka::start(2);
    let app = spawn_app(site_settings(&kafka, None)).await;
    publish_articles(&kafka, &app).await;
    let now = now_ms();
    // A real reader of a real article.
    let real = json!({"type": "page_view", "article_id": "a1", "occurred_at": now - MIN});
    assert_eq!(
        post_from(&app, Some(ORIGIN), "application/json", &real)
            .await
            .0,
        202
    );
    // The attack: 400 shares of a made-up id with a tag of its own, each
    // with a visitor id of its own, as JSON and as text/plain.
    let mut sent = 1;
    for round in 0..4 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                json!({"type": "share", "article_id": FAKE, "visitor_id": format!("v-{round}-{i}"),
                       "tags": ["Injected Tag"], "section": "news", "network": "x",
                       "occurred_at": now - 1000})
            })
            .collect();
        let ct = if round % 2 == 0 {
            "application/json"
        } else {
            "text/plain"
        };
        let (status, body) = post_from(&app, Some(ORIGIN), ct, &json!(events)).await;
        assert_eq!(
            (status, body["accepted"].clone()),
            (202, json!(100)),
            "{body}"
        );
        sent += 100;
    }
    // The same against a published article: one reader is one share.
    let shares: Vec<Value> = (0..100)
        .map(|i| {
            json!({"type": "share", "article_id": "a5", "visitor_id": format!("w{i}"),
                        "network": "x", "occurred_at": now - 1000})
        })
        .collect();
    assert_eq!(
        post_from(&app, Some(ORIGIN), "text/plain", &json!(shares))
            .await
            .0,
        202
    );
    sent += 100;
    // Every event was read (repeats are filtered as duplicates).
    wait_until("every event read", Duration::from_secs(60), || async {
        app.metric("popularity_messages_read_total").await >= sent as f64
    })
    .await;
    wait_applied(&app, 3.0).await;

    let listed = everything_listed(&app).await;
    assert!(
        !listed.contains("evil.example"),
        "the made-up id is listed: {listed}"
    );
    assert!(
        !listed.contains("injected"),
        "the made-up tag is listed: {listed}"
    );
    // The server's visitor, not the browser's: 100 "readers" from one
    // browser are one share (and the made-up id's 400 are one too).
    let (status, a5) = app.get("/v1/articles/a5").await;
    assert_eq!(status, 200, "{a5}");
    assert_eq!(a5["counts"]["share"], 1, "{a5}");
    // a5's section and tags are its own, whatever the events said.
    let (_, tags) = app.get("/v1/rankings/trending/tags?limit=100").await;
    let names: Vec<&str> = tags["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    // a5's share, then a1's view (tie broken by name, descending).
    assert_eq!(names, ["markets", "politics", "europe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_post_events_even_as_text_plain() {
    let kafka = Kafka::start(1);
    let app = spawn_app(site_settings(&kafka, None)).await;
    let event = json!({"type": "page_view", "article_id": "a1"});
    for (origin, content_type) in [
        (Some("https://evil.example"), "text/plain"),
        (Some("https://evil.example"), "application/json"),
        (Some("null"), "text/plain"),
        (None, "text/plain"),
    ] {
        let (status, body) = post_from(&app, origin, content_type, &event).await;
        assert_eq!(status, 403, "{origin:?} {content_type}: {body}");
        assert_eq!(body["error"]["code"], "origin_not_allowed", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("site \"default\""), "{message}");
    }
    // A Referer of another site is refused; one of the site's pages is not.
    let referer = |r: &'static str| {
        app.http
            .post(format!("{}/v1/events", app.base))
            .header("content-type", "text/plain")
            .header("referer", r)
            .body(event.to_string())
            .send()
    };
    assert_eq!(
        referer("https://evil.example/page").await.unwrap().status(),
        403
    );
    assert_eq!(
        referer("https://news.example.com/a/1")
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        post_from(&app, Some(ORIGIN), "text/plain", &event).await.0,
        202
    );
    assert_eq!(
        app.metric("popularity_collector_rejected_total{reason=\"origin_not_allowed\"}")
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engaged_seconds_are_capped_per_event_and_per_reader() {
    let kafka = Kafka::start(1);
    let app = spawn_app(site_settings(&kafka, None)).await;
    publish_articles(&kafka, &app).await;
    let now = now_ms();
    // 150 reports of 1e308 seconds "from 150 readers", all from one browser.
    let mut times = Vec::new();
    for batch in 0..2 {
        let events: Vec<Value> = (0..75)
            .map(|i| {
                let at = now - 10 * MIN + (batch * 75 + i) * 1000;
                times.push(at);
                json!({"type": "engagement", "article_id": "a2", "visitor_id": format!("r{batch}-{i}"),
                       "engaged_seconds": 1e308, "occurred_at": at})
            })
            .collect();
        assert_eq!(
            post_from(&app, Some(ORIGIN), "application/json", &json!(events))
                .await
                .0,
            202
        );
    }
    // The first 120 count; the rest are past the reader's 3,600 s.
    wait_applied(&app, 120.0).await;
    app.wait_metric(
        "popularity_events_total{outcome=\"duplicate\",type=\"engagement\"}",
        30.0,
    )
    .await;
    // Each event counts at most collector.max_engaged_seconds (30), and one
    // reader at most 3,600 s per article and window: 120 events × 30 s.
    let max = popularity::config::Settings::defaults()
        .collector
        .max_engaged_seconds;
    assert_eq!(max, 30.0);
    let counted: Vec<(i64, f64)> = times.iter().take(120).map(|t| (*t, 0.05 * max)).collect();
    let body = check_ranking(&app, "/v1/rankings/trending?limit=10", "article_id", |at| {
        vec![("a2".to_string(), direct_score(&counted, at, TRENDING_H))]
    })
    .await;
    assert_eq!(body["items"][0]["title"], "Title a2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_over_its_quota_of_events_gets_429_with_retry_after() {
    let kafka = Kafka::start(1);
    let mut s = site_settings(&kafka, None);
    s.collector.events_per_second_per_site = 150;
    s.collector.requests_per_second_per_ip = 1000;
    s.collector.burst = 1000;
    let app = spawn_app(s).await;
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"type": "page_view", "article_id": format!("q{i}")}))
        .collect();
    assert_eq!(
        post_from(&app, Some(ORIGIN), "text/plain", &json!(events))
            .await
            .0,
        202
    );
    let r = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("origin", ORIGIN)
        .header("user-agent", FIREFOX)
        .body(json!(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "site_quota", "{body}");
}

/// Keys under `prefix` and Redis's `used_memory`.
fn keys_and_memory(url: &str, prefix: &str) -> (usize, u64) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (keys.len(), used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_ids_sections_and_tags_adds_no_key_and_bounded_memory() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let mut s = site_settings(&kafka, Some(&redis));
    s.collector.requests_per_second_per_ip = 1000;
    s.collector.burst = 1000;
    s.collector.events_per_second_per_site = 100_000;
    s.scoring.max_members = 10_000;
    let prefix = s.store.key_prefix.clone();
    let app = spawn_app(s).await;
    publish_articles(&kafka, &app).await;
    let now = now_ms();
    // Before: the articles read, and one made-up id, so every key a flood
    // could touch exists.
    for e in [
        json!({"type": "page_view", "article_id": "a1", "occurred_at": now - MIN}),
        json!({"type": "page_view", "article_id": "nobody", "occurred_at": now - MIN}),
    ] {
        assert_eq!(post_from(&app, Some(ORIGIN), "text/plain", &e).await.0, 202);
    }
    wait_applied(&app, 2.0).await;
    let (keys_before, memory_before) = keys_and_memory(&redis.url, &prefix);

    // 10,000 events from browsers, each a new id with a new section and 32 new tags ...
    let mut sent = 2.0;
    for r in 0..100 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let n = r * 100 + i;
                let tags: Vec<String> = (0..32).map(|t| format!("tag-{n}-{t}")).collect();
                json!({"type": "page_view", "article_id": format!("x{n}"), "section": format!("s{n}"),
                       "tags": tags, "occurred_at": now - 1000})
            })
            .collect();
        let (status, body) = post_from(&app, Some(ORIGIN), "text/plain", &json!(events)).await;
        assert_eq!(status, 202, "{body}");
        sent += 100.0;
    }
    // ... and 100,000 from a producer, which may name sections and tags.
    let mut in_flight = Vec::new();
    for n in 0..100_000 {
        let e = json!({"type": "page_view", "article_id": format!("k{n}"), "visitor_id": format!("v{n}"),
                       "section": format!("ks{n}"), "tags": [format!("kt{n}")], "occurred_at": now - 1000});
        let payload = e.to_string();
        let key = format!("k{n}");
        loop {
            match kafka.producer.send_result(
                rdkafka::producer::FutureRecord::to(&kafka.events)
                    .key(&key)
                    .payload(&payload),
            ) {
                Ok(d) => break in_flight.push(d),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for d in in_flight {
        d.await.unwrap().unwrap();
    }
    sent += 100_000.0;
    wait_until("the flood read", Duration::from_secs(120), || async {
        app.metric("popularity_messages_read_total").await >= sent
    })
    .await;
    wait_applied(&app, sent).await;

    let (keys_after, memory_after) = keys_and_memory(&redis.url, &prefix);
    let grown = memory_after.saturating_sub(memory_before);
    eprintln!(
        "flood of 110,000 unknown ids: keys {keys_before} -> {keys_after}, used_memory {memory_before} -> {memory_after} (+{grown} bytes)"
    );
    assert_eq!(keys_after, keys_before, "a flood created keys");
    // The bound: the overall rankings and the all-time counts keep at most
    // max_members members each (3 profiles + 3 event types, ~100 bytes a
    // member), plus the duplicate filter's windows of the flood (~60 bytes
    // each in its saved log): 6 × 10,000 × 100 + 110,000 × 60 ≈ 12.6 MB.
    assert!(grown < 13_000_000, "Redis grew by {grown} bytes");
    // And nothing of it is listed.
    let listed = everything_listed(&app).await;
    for id in ["\"x", "\"k", "nobody"] {
        assert!(
            !listed.contains(&format!("\"article_id\":{id}")),
            "{listed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_section_or_tag_longer_than_64_bytes_is_dead_lettered_with_its_reason() {
    let kafka = Kafka::start(1);
    // The service reads (and dead-letters) what is produced.
    let _app = spawn_app(site_settings(&kafka, None)).await;
    let long = "x".repeat(60_000);
    for (key, e) in [
        (
            "long-section",
            json!({"type": "page_view", "article_id": "l1", "section": long, "occurred_at": now_ms()}),
        ),
        (
            "long-tag",
            json!({"type": "page_view", "article_id": "l2", "tags": ["ok", "y".repeat(65)], "occurred_at": now_ms()}),
        ),
        (
            "long-published",
            json!({"type": "article_published", "article_id": "l3", "title": "T", "section": "z".repeat(65)}),
        ),
    ] {
        let topic = if key == "long-published" {
            &kafka.articles
        } else {
            &kafka.events
        };
        kafka.send_json(topic, key, &e).await;
    }
    // A 64-byte slug is fine.
    kafka
        .send_json(&kafka.events, "ok", &json!({"type": "page_view", "article_id": "l4", "section": "s".repeat(64), "occurred_at": now_ms()}))
        .await;
    let letters = read_dead_letters(&kafka, 3).await;
    for (key, reason) in letters {
        assert!(reason.starts_with("invalid_field: "), "{key}: {reason}");
        assert!(
            reason.contains("at most 64 are accepted"),
            "{key}: {reason}"
        );
    }
}

/// Every key under `prefix` on the server at `url`, with its time to live
/// in milliseconds (-1: none).
fn ttls(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            (k, ttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_group_expires_after_the_group_ttl_on_every_topology() {
    use popularity::config::{Backend, RedisMode, Settings};
    use popularity::event::{ArticleMeta, EventType};
    use popularity::scoring::Aggregate;
    let servers = topologies();
    let primaries: Vec<String> = servers
        .cluster
        .primaries()
        .unwrap()
        .into_iter()
        .map(|(i, _)| servers.cluster.nodes[i].url.clone())
        .collect();
    let master = servers.sentinels.servers[0].url.clone();
    for (name, mode, url, nodes) in [
        (
            "standalone",
            RedisMode::Standalone,
            servers.standalone.url.clone(),
            vec![servers.standalone.url.clone()],
        ),
        (
            "cluster",
            RedisMode::Cluster,
            servers.cluster.url.clone(),
            primaries,
        ),
        (
            "sentinel",
            RedisMode::Sentinel,
            servers.sentinels.url.clone(),
            vec![master],
        ),
    ] {
        let mut s = Settings::defaults();
        s.store.backend = Backend::Redis;
        s.store.redis_mode = mode;
        s.store.redis_url = url;
        s.store.sentinel_master = servers.sentinels.master_name.clone();
        s.store.key_prefix = random_name("ttl");
        s.store.group_ttl = Duration::from_secs(3600);
        let store = popularity::store::connect(&s).await.unwrap();
        let profiles = popularity::scoring::profiles(&s.scoring);
        // A published article (whose metadata has a TTL of its own) and its events.
        let meta = ArticleMeta {
            article_id: "a".into(),
            title: Some("T".into()),
            section: Some("news".into()),
            tags: vec!["x".into()],
            published_at_ms: Some(now_ms()),
            ..Default::default()
        };
        store.publish(&[meta]).await.unwrap();
        let mut agg = Aggregate::new(profiles.clone(), now_ms()).laid_out(store.layout());
        agg.add(
            EventType::PageView,
            "a",
            Some("news"),
            &["x".to_string()],
            now_ms(),
            1.0,
        );
        store.apply(&agg).await.unwrap();
        // Moved into a new tag by a republication: the group it enters expires too.
        let moved = ArticleMeta {
            article_id: "a".into(),
            title: Some("T".into()),
            section: Some("news".into()),
            tags: vec!["y".into()],
            published_at_ms: Some(now_ms()),
            ..Default::default()
        };
        store.publish(&[moved]).await.unwrap();
        let mut groups = 0;
        for node in &nodes {
            for (key, ttl) in ttls(node, &s.store.key_prefix) {
                // Group keys carry a hash tag other than the index's.
                if !key.contains(":{") || key.contains("{idx}") {
                    continue;
                }
                groups += 1;
                assert!(
                    ttl > 3_500_000 && ttl <= 3_600_000,
                    "{name}: {key} expires in {ttl} ms"
                );
            }
        }
        // Overall, section, tag x, tag y, tags: rankings, meta and counts.
        assert!(groups >= 15, "{name}: only {groups} group keys");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_names_no_browser_is_counted_as_a_crawlers() {
    let kafka = Kafka::start(1);
    let app = spawn_app(site_settings(&kafka, None)).await;
    let event = json!({"type": "page_view", "article_id": "a1"});
    let r = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("origin", ORIGIN)
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 0}));
    assert_eq!(
        app.metric("popularity_collector_bot_events_total").await,
        1.0
    );
    // The same from a browser is taken.
    assert_eq!(
        post_from(&app, Some(ORIGIN), "text/plain", &event).await.1,
        json!({"accepted": 1})
    );
}
