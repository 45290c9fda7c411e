//! End-to-end tests: real `redis-server`, real Kafka-protocol broker, the
//! service on port 0. Expected scores come from the formula of DESIGN §3,
//! computed here from the events the test produced.

mod browser;
mod faults;
mod helpers;
mod store_contract;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use helpers::*;
use popularity::scoring::{Aggregate, Group};
use popularity::store::memory::MemoryStore;
use popularity::store::redis::RedisStore;
use popularity::store::Store;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

struct Article {
    id: &'static str,
    section: &'static str,
    tags: &'static [&'static str],
}

const ARTICLES: &[Article] = &[
    Article {
        id: "a1",
        section: "news",
        tags: &["politics", "europe"],
    },
    Article {
        id: "a2",
        section: "news",
        tags: &["politics"],
    },
    Article {
        id: "a3",
        section: "news",
        tags: &["sport"],
    },
    Article {
        id: "a4",
        section: "business",
        tags: &["markets", "europe"],
    },
    Article {
        id: "a5",
        section: "business",
        tags: &["markets"],
    },
];

async fn publish_articles(kafka: &Kafka, app: &TestApp) {
    for (i, a) in ARTICLES.iter().enumerate() {
        let tags: Vec<String> = a.tags.iter().map(|t| t.to_uppercase()).collect();
        kafka
            .send_json(
                &kafka.articles,
                a.id,
                &json!({"type":"article_published","article_id":a.id,"title":format!("Title {}", a.id),
                        "url":format!("https://example.com/{}", a.id),"section":a.section.to_uppercase(),
                        "tags":tags,"published_at":now_ms() - (i as i64 + 1) * HOUR,"author":"Desk"}),
            )
            .await;
    }
    let ids: Vec<String> = ARTICLES.iter().map(|a| a.id.to_string()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while app
        .store
        .articles(&ids)
        .await
        .unwrap()
        .into_iter()
        .any(|a| a.live().is_none())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "metadata never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events produced by a test: per article, the (time, weight) pairs of the
/// trending and popular profiles (the default weights are the same).
#[derive(Default)]
struct Truth {
    by_article: BTreeMap<String, Vec<(i64, f64)>>,
}

impl Truth {
    fn add(&mut self, article: &str, at: i64, weight: f64) {
        self.by_article
            .entry(article.to_string())
            .or_default()
            .push((at, weight));
    }

    /// Expected (member, score) for a ranking, highest first.
    fn expected(&self, at: i64, h: f64, keep: impl Fn(&str) -> Vec<String>) -> Vec<(String, f64)> {
        let mut sums: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for (article, events) in &self.by_article {
            for member in keep(article) {
                sums.entry(member).or_default().extend(events);
            }
        }
        let mut out: Vec<_> = sums
            .into_iter()
            .map(|(m, e)| (m, direct_score(&e, at, h)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        out
    }
}

fn article(id: &str) -> Option<&'static Article> {
    ARTICLES.iter().find(|a| a.id == id)
}

/// Checks an answer's items against the expected ranking, in order, to 1e-9.
fn check_items(body: &serde_json::Value, member_field: &str, expected: &[(String, f64)]) {
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), expected.len().min(100), "{body}");
    for (i, (item, (member, score))) in items.iter().zip(expected).enumerate() {
        assert_eq!(item["rank"], i + 1);
        assert_eq!(
            item[member_field],
            member.as_str(),
            "rank {}: {body}",
            i + 1
        );
        let got = item["score"].as_f64().unwrap();
        assert!(rel_err(got, *score) <= 1e-9, "{member}: {got} vs {score}");
    }
}

/// GETs a ranking and checks it against `want(generated_at)`; returns the body.
async fn check_ranking(
    app: &TestApp,
    path: &str,
    member_field: &str,
    want: impl FnOnce(i64) -> Vec<(String, f64)>,
) -> serde_json::Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let at = parse_time(body["generated_at"].as_str().unwrap());
    check_items(&body, member_field, &want(at));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_overall_per_section_per_tag_and_tags_match_the_formula() {
    let redis = RedisServer::start();
    let kafka = Kafka::start(6);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    publish_articles(&kafka, &app).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut truth = Truth::default();
    let now = now_ms();
    let ids = ["a1", "a2", "a3", "a4", "a5", "a6"]; // a6 was never published
    let n = 400;
    for i in 0..n {
        let id = ids[rng.random_range(0..ids.len())];
        let at = now - rng.random_range(0..6 * HOUR);
        let (kind, weight, extra) = match rng.random_range(0..3) {
            0 => ("page_view", 1.0, json!({})),
            1 => ("share", 5.0, json!({"network":"whatsapp"})),
            _ => {
                let s = rng.random_range(1..120) as f64;
                ("engagement", 0.05 * s, json!({"engaged_seconds": s}))
            }
        };
        truth.add(id, at, weight);
        let mut e = json!({"type":kind,"event_id":format!("e{i}"),"article_id":id,"visitor_id":format!("v{i}")});
        // Half the events carry their section and tags; the rest rely on metadata.
        if i % 2 == 0 {
            if let Some(a) = article(id) {
                e["section"] = json!(a.section);
                e["tags"] = json!(a.tags);
            }
        }
        // Times in both accepted forms.
        e["occurred_at"] = if i % 3 == 0 {
            json!(
                time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            )
        } else {
            json!(at)
        };
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        if i % 5 == 0 {
            // Some producers speak protobuf.
            kafka
                .send(
                    &kafka.events,
                    id,
                    &to_proto(&e).encode_to_vec(),
                    Some("application/x-protobuf"),
                )
                .await;
        } else {
            kafka.send_json(&kafka.events, id, &e).await;
        }
    }
    let mut total = 0.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while total < n as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {total} of {n} applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        total = 0.0;
        for t in ["page_view", "share", "engagement"] {
            total += app
                .metric(&format!(
                    "popularity_events_total{{outcome=\"applied\",type=\"{t}\"}}"
                ))
                .await;
        }
    }
    // `applied` is counted once the store acknowledged the flush.
    assert_eq!(total, n as f64);

    let all = |a: &str| vec![a.to_string()];
    for (profile, h) in [("trending", TRENDING_H), ("popular", POPULAR_H)] {
        let path = format!("/v1/rankings/{profile}?limit=100");
        let body = check_ranking(&app, &path, "article_id", |at| truth.expected(at, h, all)).await;
        assert_eq!(body["profile"], profile);
    }

    // Per section: a section from the event or, failing that, from metadata.
    let in_section = |s: &'static str| {
        move |a: &str| {
            article(a)
                .filter(|x| x.section == s)
                .map(|x| vec![x.id.to_string()])
                .unwrap_or_default()
        }
    };
    let body = check_ranking(
        &app,
        "/v1/rankings/trending?section=News&limit=100",
        "article_id",
        |at| truth.expected(at, TRENDING_H, in_section("news")),
    )
    .await;
    assert_eq!(body["section"], "news");
    let first = &body["items"][0];
    let meta = article(first["article_id"].as_str().unwrap()).unwrap();
    assert_eq!(first["title"], format!("Title {}", meta.id));
    assert_eq!(first["section"], meta.section);
    assert_eq!(first["url"], format!("https://example.com/{}", meta.id));
    assert_eq!(first["author"], "Desk");

    // Per tag.
    let with_tag = |tag: &'static str| {
        move |a: &str| {
            article(a)
                .filter(|x| x.tags.contains(&tag))
                .map(|x| vec![x.id.to_string()])
                .unwrap_or_default()
        }
    };
    check_ranking(
        &app,
        "/v1/rankings/trending?tag=europe&limit=100",
        "article_id",
        |at| truth.expected(at, TRENDING_H, with_tag("europe")),
    )
    .await;

    // Popular tags rank tags by the events of their articles.
    let tags_of = |a: &str| {
        article(a)
            .map(|x| x.tags.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    };
    check_ranking(&app, "/v1/rankings/trending/tags?limit=100", "tag", |at| {
        truth.expected(at, TRENDING_H, tags_of)
    })
    .await;

    // The unpublished article is ranked overall with null metadata.
    let (_, body) = app.get("/v1/rankings/weekly?limit=100").await;
    let a6 = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["article_id"] == "a6")
        .unwrap();
    assert!(a6["title"].is_null() && a6["section"].is_null() && a6["tags"].is_null());

    // Pagination continues the same order.
    let (_, page2) = app.get("/v1/rankings/weekly?limit=2&offset=2").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(page2["items"][0]["article_id"], items[2]["article_id"]);
    assert_eq!(page2["items"][0]["rank"], 3);
    app.stop().await;
}

/// The protobuf form of a JSON behaviour event built by the tests.
fn to_proto(e: &serde_json::Value) -> popularity::event::proto::Event {
    use popularity::event::proto::{self, event::Payload};
    let at = match &e["occurred_at"] {
        serde_json::Value::String(s) => parse_time(s),
        v => v.as_i64().unwrap(),
    };
    let b = proto::Behaviour {
        event_id: e["event_id"].as_str().unwrap_or("").into(),
        article_id: e["article_id"].as_str().unwrap_or("").into(),
        occurred_at_ms: at,
        visitor_id: e["visitor_id"].as_str().unwrap_or("").into(),
        section: e["section"].as_str().unwrap_or("").into(),
        tags: e["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        user_agent: e["user_agent"].as_str().unwrap_or("").into(),
        bot: e["bot"].as_bool().unwrap_or(false),
    };
    let payload = match e["type"].as_str().unwrap() {
        "page_view" => Payload::PageView(proto::PageView { event: Some(b) }),
        "share" => Payload::Share(proto::Share {
            event: Some(b),
            network: String::new(),
        }),
        _ => Payload::Engagement(proto::Engagement {
            event: Some(b),
            engaged_seconds: e["engaged_seconds"].as_f64().unwrap(),
        }),
    };
    proto::Event {
        payload: Some(payload),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_bots_and_stale_events_are_not_counted() {
    let redis = RedisServer::start();
    let kafka = Kafka::start(3);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    let ev = |kind: &str, visitor: &str, at: i64| json!({"type":kind,"article_id":"x1","visitor_id":visitor,"occurred_at":at,"section":"news"});
    let mut counted: Vec<(i64, f64)> = Vec::new();
    // Counted: first view of v1, first share of v1, first view of v2.
    for (e, w) in [
        (ev("page_view", "v1", now - 20 * MIN), Some(1.0)),
        (ev("page_view", "v1", now - 10 * MIN), None), // duplicate within 30 min
        (ev("share", "v1", now - 9 * MIN), Some(5.0)),
        (ev("share", "v1", now - 8 * MIN), None), // duplicate
        (ev("page_view", "v2", now - 5 * MIN), Some(1.0)),
        (ev("page_view", "v3", now - 8 * 24 * 60 * MIN), None), // stale: older than 7 days
    ] {
        if let Some(w) = w {
            counted.push((e["occurred_at"].as_i64().unwrap(), w));
        }
        kafka.send_json(&kafka.events, "x1", &e).await;
    }
    let mut bot = ev("page_view", "v4", now - MIN);
    bot["user_agent"] =
        json!("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    kafka.send_json(&kafka.events, "x1", &bot).await;
    let mut flagged = ev("page_view", "v5", now - MIN);
    flagged["bot"] = json!(true);
    kafka.send_json(&kafka.events, "x1", &flagged).await;
    // Engagement: summed, capped at 3600 s per visitor and article per window.
    let mut e1 = ev("engagement", "v6", now - 3 * MIN);
    e1["engaged_seconds"] = json!(3000);
    let mut e2 = ev("engagement", "v6", now - 2 * MIN);
    e2["engaged_seconds"] = json!(1000);
    kafka.send_json(&kafka.events, "x1", &e1).await;
    kafka.send_json(&kafka.events, "x1", &e2).await;
    counted.push((now - 3 * MIN, 0.05 * 3000.0));
    counted.push((now - 2 * MIN, 0.05 * 600.0));

    let m = |t: &str, o: &str| format!("popularity_events_total{{outcome=\"{o}\",type=\"{t}\"}}");
    app.wait_metric(&m("engagement", "applied"), 2.0).await;
    assert_eq!(app.metric(&m("page_view", "applied")).await, 2.0);
    assert_eq!(app.metric(&m("share", "applied")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "duplicate")).await, 1.0);
    assert_eq!(app.metric(&m("share", "duplicate")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "stale")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "bot")).await, 2.0);
    check_ranking(
        &app,
        "/v1/rankings/trending?section=news",
        "article_id",
        |at| vec![("x1".to_string(), direct_score(&counted, at, TRENDING_H))],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_go_to_the_dead_letter_topic_with_their_reason() {
    let redis = RedisServer::start();
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    let good = |i: i64| json!({"type":"page_view","article_id":"g","visitor_id":format!("v{i}"),"occurred_at":now - i * MIN});
    let bad: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (b"{not json".to_vec(), None, "malformed"),
        (vec![0xff, 0x01, 0x02], Some("application/x-protobuf"), "malformed"),
        (br#"{"type":"click","article_id":"g","occurred_at":1}"#.to_vec(), None, "unknown_type"),
        (format!(r#"{{"type":"page_view","occurred_at":{now}}}"#).into_bytes(), None, "missing_field"),
        (format!(r#"{{"type":"page_view","article_id":"g","occurred_at":{}}}"#, now + 3_600_000).into_bytes(), None, "future_timestamp"),
        (format!(r#"{{"type":"page_view","article_id":"g","occurred_at":{now},"pad":"{}"}}"#, "x".repeat(70_000)).into_bytes(), None, "oversized"),
        (format!(r#"{{"type":"engagement","article_id":"g","occurred_at":{now},"engaged_seconds":-3}}"#).into_bytes(), None, "invalid_field"),
    ];
    let mut weights = Vec::new();
    for (i, (payload, ct, _)) in bad.iter().enumerate() {
        let e = good(i as i64);
        weights.push((e["occurred_at"].as_i64().unwrap(), 1.0));
        kafka.send_json(&kafka.events, "g", &e).await;
        kafka.send(&kafka.events, "g", payload, *ct).await;
    }
    let e = good(50);
    weights.push((e["occurred_at"].as_i64().unwrap(), 1.0));
    kafka.send_json(&kafka.events, "g", &e).await;

    app.wait_metric(
        "popularity_events_total{outcome=\"dead_lettered\",type=\"unknown\"}",
        bad.len() as f64,
    )
    .await;
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        weights.len() as f64,
    )
    .await;
    assert_eq!(
        app.metric("popularity_invalid_messages_total{reason=\"malformed\"}")
            .await,
        2.0
    );
    assert_eq!(
        app.metric("popularity_invalid_messages_total{reason=\"oversized\"}")
            .await,
        1.0
    );

    // Read the dead-letter topic back.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("group.id", random_name("dlq-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.dead_letter, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    while seen.len() < bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let headers: HashMap<String, String> = m
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers["x-source-topic"], kafka.events);
        assert_eq!(headers["x-source-partition"], "0");
        let offset: usize = headers["x-source-offset"].parse().unwrap();
        // Bad message i was produced at offset 2i + 1, between two good ones.
        let i = (offset - 1) / 2;
        assert_eq!(offset, 2 * i + 1);
        assert_eq!(
            m.payload().unwrap(),
            &bad[i].0[..],
            "the original payload is kept"
        );
        assert!(
            headers["x-error"].starts_with(bad[i].2),
            "{}: {}",
            bad[i].2,
            headers["x-error"]
        );
        assert!(
            headers["x-error"].len() > bad[i].2.len() + 5,
            "a reason, not just a code"
        );
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..bad.len()).collect::<Vec<_>>());

    check_ranking(&app, "/v1/rankings/trending", "article_id", |at| {
        vec![("g".to_string(), direct_score(&weights, at, TRENDING_H))]
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_api_parameters_get_400_with_a_message_and_unknown_profiles_404() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    for (path, needle) in [
        (
            "/v1/rankings/trending?limit=0",
            "limit must be between 1 and 100",
        ),
        (
            "/v1/rankings/trending?limit=101",
            "limit must be between 1 and 100",
        ),
        (
            "/v1/rankings/trending?limit=ten",
            "limit must be between 1 and 100",
        ),
        (
            "/v1/rankings/trending?offset=-1",
            "offset must be between 0 and 10000",
        ),
        (
            "/v1/rankings/trending?section=news&tag=x",
            "at most one of section and tag",
        ),
        ("/v1/rankings/trending?section=", "section must be"),
        (
            "/v1/rankings/trending?published_within=soon",
            "published_within must be",
        ),
        ("/v1/rankings/trending?limt=5", "unknown parameter limt"),
        (
            "/v1/rankings/trending/tags?limit=1000",
            "limit must be between 1 and 100",
        ),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let (status, body) = app.get("/v1/rankings/hourly").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.get("/v1/nothing").await;
    assert_eq!(status, 404);
    let (status, body) = app.get("/v1/rankings").await;
    assert_eq!(status, 200);
    let names: Vec<_> = body["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("trending"), json!("popular"), json!("weekly")]
    );
    assert_eq!(body["profiles"][0]["half_life_seconds"], 7200.0);
    assert_eq!(body["profiles"][0]["weights"]["share"], 5.0);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        app.metric(
            "popularity_http_requests_total{route=\"/v1/rankings/{profile}\",status=\"400\"}"
        )
        .await
            >= 7.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_cache_control_and_etag_and_identical_queries_hit_the_cache() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.cache_ttl = Duration::from_secs(5);
    let app = spawn_app(s).await;
    let url = format!("{}/v1/rankings/trending?limit=5", app.base);
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=5");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let first = r.text().await.unwrap();
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.text().await.unwrap(), first, "served from the cache");
    let r = app
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(
        app.metric("popularity_cache_requests_total{result=\"miss\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("popularity_cache_requests_total{result=\"hit\"}")
            .await,
        2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_a_reachable_store_and_an_assigned_consumer() {
    let redis = RedisServer::start();
    let kafka = Kafka::start(2);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    // The first group assignment takes a few seconds in the dev broker.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get("/readyz").await;
        if status == 200 {
            assert_eq!(body["status"], "ready");
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.metric("popularity_partitions_assigned").await, 4.0);
    drop(redis);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reasons"][0], "store unreachable");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "liveness checks no dependency");
    let (status, body) = app.get("/v1/rankings/trending").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        !body.to_string().contains("redis"),
        "no internals in the body: {body}"
    );
}

/// Random flushes applied to both backends must give the same rankings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_redis_stores_give_the_same_rankings() {
    let redis = RedisServer::start();
    let mut s = popularity::config::Settings::defaults();
    s.scoring.max_members = 25;
    // A short half-life so the stream crosses rebases.
    s.scoring.profiles[0].half_life = Duration::from_secs(60);
    let profiles = popularity::scoring::profiles(&s.scoring);
    let ttl = Duration::from_secs(3600);
    let redis_store = RedisStore::connect(&redis.url, &random_name("d"), profiles.clone(), 25, ttl)
        .await
        .unwrap();
    let memory = MemoryStore::new(profiles.clone(), 25, ttl);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let kinds = popularity::event::EventType::ALL;
    let sections = ["news", "business", "sport"];
    let tags = ["a", "b", "c", "d"];
    let mut r = 1_700_000_000_000i64;
    for _ in 0..60 {
        // Two hours between flushes: 120 half-lives of the first profile.
        r += rng.random_range(0..2 * HOUR);
        let mut agg = Aggregate::new(profiles.clone(), r);
        for _ in 0..rng.random_range(1..300) {
            let id = format!("art{}", rng.random_range(0..60));
            let section = sections[rng.random_range(0..3)];
            let t: Vec<String> = (0..rng.random_range(0..3))
                .map(|_| tags[rng.random_range(0..4)].to_string())
                .collect();
            let kind = kinds[rng.random_range(0..3)];
            let units = if kind == popularity::event::EventType::Engagement {
                rng.random_range(1.0..100.0)
            } else {
                1.0
            };
            agg.add(
                kind,
                &id,
                Some(section),
                &t,
                r - rng.random_range(0..3 * HOUR),
                units,
            );
        }
        redis_store.apply(&agg).await.unwrap();
        memory.apply(&agg).await.unwrap();
    }
    let at = r + HOUR;
    let mut groups = vec![Group::All, Group::Tags];
    groups.extend(sections.iter().map(|s| Group::Section(s.to_string())));
    groups.extend(tags.iter().map(|t| Group::Tag(t.to_string())));
    let mut compared = 0;
    for g in &groups {
        for p in 0..profiles.len() {
            let a = redis_store.top(g, p, 0, 100, at).await.unwrap();
            let b = memory.top(g, p, 0, 100, at).await.unwrap();
            assert_eq!(a.items.len(), b.items.len(), "{g:?} {p}");
            assert!(a.items.len() <= 25, "trimmed to max_members");
            for (x, y) in a.items.iter().zip(&b.items) {
                assert_eq!(x.member, y.member, "{g:?} profile {p}");
                assert!(
                    rel_err(x.score, y.score) <= 1e-9,
                    "{g:?} {p} {}: {} vs {}",
                    x.member,
                    x.score,
                    y.score
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 200, "only {compared} members compared");
}

/// Publications that move articles between sections and tags, with and
/// without a score to carry, succeed on both stores and move exactly the
/// scored article.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republications_move_scored_and_unscored_articles_on_both_stores() {
    let redis = RedisServer::start();
    let s = popularity::config::Settings::defaults();
    let profiles = popularity::scoring::profiles(&s.scoring);
    let ttl = Duration::from_secs(3600);
    let redis_store =
        RedisStore::connect(&redis.url, &random_name("m"), profiles.clone(), 100, ttl)
            .await
            .unwrap();
    let memory = MemoryStore::new(profiles.clone(), 100, ttl);
    let stores: [(&str, &dyn popularity::store::Store); 2] =
        [("redis", &redis_store), ("memory", &memory)];
    let meta = |id: &str, section: &str, tags: &[&str]| popularity::event::ArticleMeta {
        article_id: id.to_string(),
        title: Some(format!("T {id}")),
        section: Some(section.to_string()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        published_at_ms: Some(now_ms()),
        ..Default::default()
    };
    for (name, store) in stores {
        // First publications: nothing is scored yet, nothing to move.
        store
            .publish(&[meta("read", "news", &["x"]), meta("unread", "news", &["x"])])
            .await
            .unwrap_or_else(|e| panic!("{name}: first publication: {e}"));
        let r = now_ms();
        let mut agg = Aggregate::new(profiles.clone(), r);
        for _ in 0..3 {
            agg.add(
                popularity::event::EventType::PageView,
                "read",
                Some("news"),
                &["x".to_string()],
                r,
                1.0,
            );
        }
        store.apply(&agg).await.unwrap();
        // Both move to another section and tag; only one has a score to carry.
        store
            .publish(&[
                meta("read", "sport", &["y"]),
                meta("unread", "sport", &["y"]),
            ])
            .await
            .unwrap_or_else(|e| panic!("{name}: republication: {e}"));
        let at = now_ms();
        let members = |g: Group| async move {
            let page = store.top(&g, 0, 0, 10, at).await.unwrap();
            page.items
                .iter()
                .map(|i| (i.member.clone(), i.score))
                .collect::<Vec<_>>()
        };
        let overall = members(Group::All).await;
        assert_eq!(overall.len(), 1, "{name}: {overall:?}");
        assert_eq!(overall[0].0, "read");
        // Three views at r, decayed to `at` with the first profile's half-life.
        let want = 3.0 * (-((at - r) as f64) / profiles[0].half_life_ms).exp2();
        assert!(
            rel_err(overall[0].1, want) <= 1e-9,
            "{name}: {overall:?} vs {want}"
        );
        assert!(
            members(Group::Section("news".into())).await.is_empty(),
            "{name}"
        );
        assert!(members(Group::Tag("x".into())).await.is_empty(), "{name}");
        for g in [Group::Section("sport".into()), Group::Tag("y".into())] {
            let m = members(g.clone()).await;
            assert_eq!(m.len(), 1, "{name} {g:?}: {m:?}");
            assert_eq!(m[0].0, "read", "{name} {g:?}");
            assert!(rel_err(m[0].1, overall[0].1) <= 1e-9, "{name} {g:?}: {m:?}");
        }
    }
}

#[test]
fn a_bad_config_value_fails_at_start_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["serve", "--role", "api"])
        .env("POPULARITY__INGEST__FLUSH_INTERVAL", "whenever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`ingest.flush_interval`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[api]\nlisten = \"0.0.0.0:8080\"\ncache_tll = \"1s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api") && err.contains("cache_tll"), "{err}");
}

/// The README's flow with the real binary: `dev-broker` on a fixed port,
/// `serve` with the memory store, events from a Kafka client, rankings over
/// HTTP, then SIGTERM for a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_rankings_from_the_dev_broker_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_popularity");
    let port = free_port();
    let mut broker = Command::new(exe)
        .args([
            "dev-broker",
            "--port",
            &port.to_string(),
            "--partitions",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), format!("bootstrap.servers=127.0.0.1:{port}"));

    let api_port = free_port();
    let mut serve = Command::new(exe)
        .args(["serve"])
        .env("POPULARITY__KAFKA__BROKERS", format!("127.0.0.1:{port}"))
        .env("POPULARITY__STORE__BACKEND", "memory")
        .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{api_port}"))
        .env("POPULARITY__INGEST__FLUSH_INTERVAL", "50ms")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .unwrap();
    let now = now_ms();
    for (i, id) in ["hot", "hot", "hot", "warm"].iter().enumerate() {
        let e = json!({"type":"page_view","article_id":id,"visitor_id":format!("v{i}"),"occurred_at":now});
        producer
            .send(
                rdkafka::producer::FutureRecord::to("events")
                    .key(*id)
                    .payload(&e.to_string()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api_port}/v1/rankings/trending");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok(r) = http.get(&url).send().await {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["items"].as_array().is_some_and(|a| a.len() == 2) {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rankings never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let at = parse_time(body["generated_at"].as_str().unwrap());
    check_items(
        &body,
        "article_id",
        &[
            (
                "hot".to_string(),
                direct_score(&[(now, 1.0); 3], at, TRENDING_H),
            ),
            (
                "warm".to_string(),
                direct_score(&[(now, 1.0)], at, TRENDING_H),
            ),
        ],
    );

    let started = std::time::Instant::now();
    for child in [&serve, &broker] {
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    for (name, child) in [("serve", &mut serve), ("dev-broker", &mut broker)] {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name} did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{name} exited with {status}");
    }
}

/// Pages through `/v1/index` with `next_before` until the end.
async fn whole_index(app: &TestApp, section: Option<&str>, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/index?limit={limit}");
        if let Some(s) = section {
            path += &format!("&section={s}");
        }
        if let Some(b) = &before {
            path += &format!("&before={b}");
        }
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        ids.extend(
            items
                .iter()
                .map(|i| i["article_id"].as_str().unwrap().to_string()),
        );
        match body["next_before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => return ids,
        }
    }
    panic!("the index never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_lifecycle_news_index_article_pages_and_recent_reads_on_both_stores() {
    let redis = RedisServer::start();
    for backend in ["redis", "memory"] {
        let kafka = Kafka::start(3);
        let app = spawn_app(settings(&kafka, (backend == "redis").then_some(&redis))).await;
        let base = now_ms() - 10 * MIN;
        // 25 articles, one a minute; n10 and n11 share a publication time;
        // n20..n24 are three days old.
        let mut expected: Vec<(i64, String, &str)> = Vec::new();
        for i in 0..25 {
            let id = format!("n{i:02}");
            let mut at = base - i * MIN;
            if i == 11 {
                at = base - 10 * MIN;
            }
            if i >= 20 {
                at = base - 72 * HOUR - i * MIN;
            }
            let section = if i % 2 == 0 { "news" } else { "business" };
            expected.push((at, id.clone(), section));
            kafka
                .send_json(
                    &kafka.articles,
                    &id,
                    &json!({"type":"article_published","article_id":id,"title":format!("T {id}"),
                            "section":section,"tags":["t"],"published_at":at}),
                )
                .await;
        }
        expected.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let all: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
        wait_until("the index", Duration::from_secs(60), || async {
            whole_index(&app, None, 100).await.len() == 25
        })
        .await;
        assert_eq!(
            whole_index(&app, None, 7).await,
            all,
            "{backend}: paging repeats or misses"
        );
        assert_eq!(whole_index(&app, None, 1).await, all);
        let news: Vec<String> = expected
            .iter()
            .filter(|e| e.2 == "news")
            .map(|e| e.1.clone())
            .collect();
        assert_eq!(whole_index(&app, Some("news"), 4).await, news);

        // A republication with a new section moves the article.
        kafka
            .send_json(
                &kafka.articles,
                "n04",
                &json!({"type":"article_published","article_id":"n04","title":"Moved","section":"business","published_at":base - 4 * MIN}),
            )
            .await;
        wait_until("the move", Duration::from_secs(60), || async {
            !whole_index(&app, Some("news"), 100)
                .await
                .contains(&"n04".to_string())
        })
        .await;
        assert!(whole_index(&app, Some("business"), 100)
            .await
            .contains(&"n04".to_string()));
        let (_, body) = app.get("/v1/articles/n04").await;
        assert_eq!(body["title"], "Moved");
        assert_eq!(body["section"], "business");

        // Traffic: n20 (three days old) is the most read, then n02, then n06.
        let now = now_ms();
        let mut v = 0;
        let mut send = |id: &'static str, n: usize| {
            let events: Vec<_> = (0..n)
                .map(|_| {
                    v += 1;
                    json!({"type":"page_view","article_id":id,"visitor_id":format!("v{v}"),"occurred_at":now})
                })
                .collect();
            (id, events)
        };
        let batches = [send("n20", 5), send("n02", 3), send("n06", 2)];
        for (id, events) in &batches {
            for e in events {
                kafka.send_json(&kafka.events, id, e).await;
            }
        }
        app.wait_metric(
            "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
            10.0,
        )
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=3").await;
        let ids: Vec<_> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["article_id"].clone())
            .collect();
        assert_eq!(ids, [json!("n20"), json!("n02"), json!("n06")]);
        // Published within an hour: n20 drops out and the page is still full.
        let (_, body) = app
            .get("/v1/rankings/trending?limit=2&published_within=1h")
            .await;
        let ids: Vec<_> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["article_id"].clone())
            .collect();
        assert_eq!(ids, [json!("n02"), json!("n06")], "{backend}");
        assert_eq!(body["items"][1]["rank"], 2);
        let (_, body) = app
            .get("/v1/rankings/trending?limit=1&offset=1&published_within=1h")
            .await;
        assert_eq!(body["items"][0]["article_id"], "n06");

        // The article page: metadata, scores, ranks and counts.
        let (status, body) = app.get("/v1/articles/n02").await;
        assert_eq!(status, 200, "{body}");
        let at = parse_time(body["generated_at"].as_str().unwrap());
        assert_eq!(body["title"], "T n02");
        assert_eq!(body["counts"]["page_view"], 3);
        assert_eq!(body["counts"]["share"], 0);
        let trending = &body["profiles"][0];
        assert_eq!(trending["profile"], "trending");
        assert!(
            rel_err(
                trending["score"].as_f64().unwrap(),
                direct_score(&[(now, 1.0); 3], at, TRENDING_H)
            ) <= 1e-9
        );
        assert_eq!(trending["rank_overall"], 2);
        assert_eq!(trending["rank_in_section"], 2, "after n20 in news");
        let (status, body) = app.get("/v1/articles/nope").await;
        assert_eq!(status, 404, "{body}");

        // A move to another section takes the article's scores along; an
        // article read before its publication enters its section on publication.
        kafka
            .send_json(
                &kafka.events,
                "late1",
                &json!({"type":"share","article_id":"late1","visitor_id":"w1","occurred_at":now}),
            )
            .await;
        app.wait_metric(
            "popularity_events_total{outcome=\"applied\",type=\"share\"}",
            1.0,
        )
        .await;
        for (id, section) in [("n06", "business"), ("late1", "sport")] {
            kafka
                .send_json(
                    &kafka.articles,
                    id,
                    &json!({"type":"article_published","article_id":id,"title":"Moved","section":section,"published_at":base}),
                )
                .await;
        }
        let in_section = |body: serde_json::Value, id: &str| {
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["article_id"] == id)
                .map(|i| i["score"].as_f64().unwrap())
        };
        wait_until("the moves", Duration::from_secs(60), || async {
            let (_, b) = app.get("/v1/rankings/trending?section=sport").await;
            in_section(b, "late1").is_some()
        })
        .await;
        let (_, news) = app
            .get("/v1/rankings/trending?section=news&limit=100")
            .await;
        assert!(in_section(news, "n06").is_none(), "n06 left news");
        let (_, business) = app
            .get("/v1/rankings/trending?section=business&limit=100")
            .await;
        let at = parse_time(business["generated_at"].as_str().unwrap());
        let moved = in_section(business, "n06").expect("n06 entered business");
        let want = direct_score(&[(now, 1.0); 2], at, TRENDING_H);
        assert!(rel_err(moved, want) <= 1e-9, "{moved} vs {want}");
        let (_, sport) = app.get("/v1/rankings/trending?section=sport").await;
        let at = parse_time(sport["generated_at"].as_str().unwrap());
        let late = in_section(sport, "late1").unwrap();
        assert!(rel_err(late, direct_score(&[(now, 5.0)], at, TRENDING_H)) <= 1e-9);

        // Unpublishing removes n02 everywhere, and its late events do not count.
        kafka
            .send_json(
                &kafka.articles,
                "n02",
                &json!({"type":"article_unpublished","article_id":"n02"}),
            )
            .await;
        wait_until("the withdrawal", Duration::from_secs(60), || async {
            app.get("/v1/articles/n02").await.0 == 404
        })
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=10").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        let (_, body) = app.get("/v1/rankings/trending?section=news").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        assert!(!whole_index(&app, None, 100)
            .await
            .contains(&"n02".to_string()));
        kafka
            .send_json(&kafka.events, "n02", &json!({"type":"page_view","article_id":"n02","visitor_id":"late","occurred_at":now}))
            .await;
        app.wait_metric(
            "popularity_events_total{outcome=\"unpublished\",type=\"page_view\"}",
            1.0,
        )
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=10").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        app.stop().await;
    }
}

/// The response schema the OpenAPI document gives for `path` and `status`,
/// as a standalone JSON Schema (its `$ref`s resolve against `components`).
fn response_schema(doc: &serde_json::Value, path: &str, status: u16) -> serde_json::Value {
    let schema = &doc["paths"][path]["get"]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(!schema.is_null(), "no schema for {path} {status}");
    json!({"allOf": [schema], "components": doc["components"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_real_responses() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    let now = now_ms();
    kafka
        .send_json(
            &kafka.articles,
            "o1",
            &json!({"type":"article_published","article_id":"o1","title":"T","section":"news","tags":["x"],"published_at":now - MIN}),
        )
        .await;
    for (i, id) in ["o1", "o1", "o2"].iter().enumerate() {
        kafka
            .send_json(&kafka.events, id, &json!({"type":"share","article_id":id,"visitor_id":format!("v{i}"),"occurred_at":now}))
            .await;
    }
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"share\"}",
        3.0,
    )
    .await;

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let calls: &[(&str, &str, u16)] = &[
        ("/v1/rankings", "/v1/rankings", 200),
        (
            "/v1/rankings/{profile}",
            "/v1/rankings/trending?limit=5",
            200,
        ),
        (
            "/v1/rankings/{profile}",
            "/v1/rankings/trending?section=news&published_within=1h",
            200,
        ),
        (
            "/v1/rankings/{profile}",
            "/v1/rankings/trending?limit=0",
            400,
        ),
        ("/v1/rankings/{profile}", "/v1/rankings/nope", 404),
        (
            "/v1/rankings/{profile}/tags",
            "/v1/rankings/popular/tags",
            200,
        ),
        (
            "/v1/rankings/{profile}/tags",
            "/v1/rankings/popular/tags?limit=x",
            400,
        ),
        ("/v1/index", "/v1/index?limit=1", 200),
        ("/v1/index", "/v1/index?before=yesterday", 400),
        ("/v1/articles/{id}", "/v1/articles/o1", 200),
        ("/v1/articles/{id}", "/v1/articles/o2", 200),
        ("/v1/articles/{id}", "/v1/articles/o3", 404),
    ];
    let mut covered = std::collections::HashSet::new();
    for (template, url, want) in calls {
        let (status, body) = app.get(url).await;
        assert_eq!(status, *want, "{url}: {body}");
        let schema = response_schema(&doc, template, status);
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{url}: {errors:?}\n{body}");
        covered.insert(*template);
    }
    // Every documented route was exercised, and a wrong body is caught.
    let documented: std::collections::HashSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, covered);
    let schema = response_schema(&doc, "/v1/rankings/{profile}", 200);
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&json!({"profile": "trending", "items": [{"rank": "first"}]})));
    app.stop().await;
}

/// Every metric the alert rules and the dashboard use is one the service
/// exports. The scrape is also written for `deploy/validate.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_metrics_the_service_exports() {
    let redis = RedisServer::start();
    let kafka = Kafka::start(2);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    for i in 0..20 {
        let e = json!({"type":"page_view","article_id":"m","visitor_id":format!("v{i}"),"occurred_at":now});
        kafka.send_json(&kafka.events, "m", &e).await;
    }
    kafka.send(&kafka.events, "m", b"not json", None).await;
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        20.0,
    )
    .await;
    for path in [
        "/v1/rankings/trending",
        "/v1/rankings/trending?limit=0",
        "/v1/index",
    ] {
        app.get(path).await;
    }
    // Lag is reported with librdkafka's statistics, every 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let text = app.text("/metrics").await;
        if text.contains("popularity_consumer_lag{") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no consumer lag reported"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let exported: std::collections::HashSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut used = std::collections::BTreeSet::new();
    for file in [
        "deploy/prometheus/popularity.rules.yml",
        "deploy/kubernetes/base/grafana/popularity-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("popularity_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert((file, name.clone()));
            rest = &rest[i + name.len()..];
        }
    }
    assert!(used.len() > 10, "found only {used:?}");
    for (file, name) in &used {
        assert!(
            exported.contains(name.as_str()),
            "{file} uses {name}, which /metrics does not export"
        );
    }
    std::fs::write(
        format!("{}/metrics-scrape.txt", env!("CARGO_TARGET_TMPDIR")),
        &scrape,
    )
    .unwrap();
    app.stop().await;
}

#[test]
fn the_demo_stops_on_a_sigint_sent_right_after_its_banner_even_when_started_with_sigint_ignored() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_popularity");
    for round in 0..3 {
        let port = free_port();
        // As a background job of a non-interactive shell starts it: SIGINT ignored.
        let mut demo = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' INT; exec '{exe}' demo --listen 127.0.0.1:{port} --rate 50"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(demo.stdout.take().unwrap()).lines();
        let mut banner = false;
        for line in lines {
            if line.unwrap().contains("Ctrl-C stops it") {
                banner = true;
                break;
            }
        }
        assert!(banner, "round {round}: no banner");
        Command::new("kill")
            .args(["-INT", &demo.id().to_string()])
            .status()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = demo.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = demo.kill();
                panic!("round {round}: the demo ignored SIGINT for 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "round {round}: exited with {status}");
    }
}
