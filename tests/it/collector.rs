//! The collector (`POST /v1/events`) against the dev broker and the running
//! service: events posted over HTTP are counted as the formula of DESIGN §3
//! says, computed here from what was posted and the duplicate rule; every
//! limit and error gets its status, and nothing of a refused request counts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::publish_ids;
use crate::helpers::*;

const MIN: i64 = 60_000;
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

struct Post {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post(app: &TestApp, body: String, content_type: &str, user_agent: &str) -> Post {
    let r = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("content-type", content_type)
        .header("user-agent", user_agent)
        .header("origin", "https://news.example.com")
        .body(body)
        .send()
        .await
        .unwrap();
    Post {
        status: r.status().as_u16(),
        retry_after: r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

async fn post_json(app: &TestApp, body: &Value, user_agent: &str) -> Post {
    post(app, body.to_string(), "application/json", user_agent).await
}

/// Settings whose one site's pages are at https://news.example.com, the
/// origin every request here is sent from.
fn collector_settings(kafka: &Kafka) -> popularity::config::Settings {
    let mut s = settings(kafka, None);
    s.api.cors_allowed_origins = vec!["https://news.example.com".into()];
    s
}

fn view(article: &str, visitor: Option<&str>, at: i64) -> Value {
    let mut e = json!({"type": "page_view", "article_id": article, "occurred_at": at});
    if let Some(v) = visitor {
        e["visitor_id"] = json!(v);
    }
    e
}

async fn counts(app: &TestApp, article: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/articles/{article}")).await;
    if status == 200 {
        body["counts"].clone()
    } else {
        json!({"page_view": 0, "share": 0, "engagement": 0})
    }
}

/// The trending score of counted (time, weight × units) at `at`.
fn trending(events: &[(i64, f64)], at: i64) -> f64 {
    direct_score(events, at, TRENDING_H)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_over_http_count_as_the_formula_says() {
    events_posted_over_http_count_as_the_formula_says_on(BrokerKind::Dev).await
}

/// The collector's produce, and the consumer behind it, on a second
/// implementation of the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_events_posted_over_http_count_as_the_formula_says() {
    events_posted_over_http_count_as_the_formula_says_on(BrokerKind::Tansu).await
}

async fn events_posted_over_http_count_as_the_formula_says_on(kind: BrokerKind) {
    let kafka = Kafka::on(kind, 2);
    let app = spawn_app(collector_settings(&kafka)).await;
    publish_ids(&kafka, &app, &["c1", "c2", "c3"]).await;
    let now = now_ms();
    // One event, JSON. The visitor it names is not believed: the reader is
    // the collector's daily visitor of this address and browser.
    let r = post_json(&app, &view("c1", Some("v1"), now - 20 * MIN), FIREFOX).await;
    assert_eq!(
        (r.status, r.body["accepted"].clone()),
        (202, json!(1)),
        "{:?}",
        r.body
    );
    // A batch as the tracker's beacon sends it: text/plain.
    let batch = json!([
        view("c1", Some("v2"), now - 10 * MIN),
        {"type": "share", "article_id": "c1", "visitor_id": "v2", "occurred_at": now - 9 * MIN, "network": "whatsapp"},
        {"type": "engagement", "article_id": "c2", "visitor_id": "v3", "occurred_at": now - 5 * MIN, "engaged_seconds": 30},
        {"type": "engagement", "article_id": "c2", "visitor_id": "v3", "occurred_at": now - 4 * MIN, "engaged_seconds": 15},
    ]);
    let r = post(&app, batch.to_string(), "text/plain;charset=UTF-8", FIREFOX).await;
    assert_eq!(
        (r.status, r.body["accepted"].clone()),
        (202, json!(4)),
        "{:?}",
        r.body
    );
    // The view of c1 at -10 min is the same reader's second within the
    // dedupe window: not counted. The same reader twice is one view;
    // another browser on the same address is another reader.
    for ua in [FIREFOX, FIREFOX, CHROME] {
        let r = post_json(&app, &view("c2", None, now - 3 * MIN), ua).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    // A crawler is dropped at the door.
    let r = post_json(&app, &view("c2", Some("bot"), now - 3 * MIN), GOOGLEBOT).await;
    assert_eq!((r.status, r.body["accepted"].clone()), (202, json!(0)));
    // A time from a month ago (a tracker's queue, a wrong clock) becomes
    // the receive time.
    let before = now_ms();
    let r = post_json(
        &app,
        &view("c3", Some("v4"), now - 30 * 24 * 60 * MIN),
        FIREFOX,
    )
    .await;
    let after = now_ms();
    assert_eq!(r.status, 202);
    // So does a valid time before 1970 (the document declares RFC 3339
    // text, which includes those).
    let mut moon = view("c4", Some("v5"), now);
    moon["occurred_at"] = json!("1969-07-20T20:17:40Z");
    let r = post_json(&app, &moon, FIREFOX).await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    wait_until(
        "every posted event counted",
        Duration::from_secs(60),
        || async {
            counts(&app, "c1").await == json!({"page_view": 1, "share": 1, "engagement": 0})
                && counts(&app, "c2").await == json!({"page_view": 2, "share": 0, "engagement": 2})
                && counts(&app, "c3").await["page_view"] == 1
                && counts(&app, "c4").await["page_view"] == 1
        },
    )
    .await;
    let (_, body) = app.get("/v1/rankings/trending?limit=10").await;
    let at = parse_time(body["generated_at"].as_str().unwrap());
    let score = |id: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["article_id"] == id)
            .and_then(|i| i["score"].as_f64())
            .unwrap_or_else(|| panic!("{id} not ranked: {body}"))
    };
    // Weights of trending: view 1, share 5, engaged second 0.05.
    let c1 = trending(&[(now - 20 * MIN, 1.0), (now - 9 * MIN, 5.0)], at);
    let c2 = trending(
        &[
            (now - 5 * MIN, 30.0 * 0.05),
            (now - 4 * MIN, 15.0 * 0.05),
            (now - 3 * MIN, 1.0),
            (now - 3 * MIN, 1.0),
        ],
        at,
    );
    assert!(
        rel_err(score("c1"), c1) < 1e-9,
        "c1 {} against {c1}",
        score("c1")
    );
    assert!(
        rel_err(score("c2"), c2) < 1e-9,
        "c2 {} against {c2}",
        score("c2")
    );
    let (lo, hi) = (
        trending(&[(before, 1.0)], at),
        trending(&[(after, 1.0)], at),
    );
    let c3 = score("c3");
    assert!(
        c3 >= lo * (1.0 - 1e-9) && c3 <= hi * (1.0 + 1e-9),
        "c3 {c3} not in [{lo}, {hi}]"
    );
    let accepted = app.metric("popularity_collector_events_total").await;
    assert_eq!(accepted, 10.0);
    assert_eq!(
        app.metric("popularity_collector_bot_events_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_nothing_of_them_counts() {
    let kafka = Kafka::start(1);
    let mut s = collector_settings(&kafka);
    s.collector.max_events_per_request = 5;
    s.collector.max_body_bytes = 4096;
    let app = spawn_app(s).await;
    let now = now_ms();
    // One invalid event refuses the whole request, naming it.
    let batch = json!([view("r1", Some("v1"), now), {"type": "page_view", "occurred_at": now}]);
    let r = post_json(&app, &batch, FIREFOX).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "invalid_event");
    assert_eq!(r.body["error"]["index"], 1);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("event 1: missing_field: article_id"),
        "{message}"
    );
    for (body, content_type, status, code) in [
        (
            json!({"type": "article_published", "article_id": "r1"}).to_string(),
            "application/json",
            400,
            "invalid_event",
        ),
        ("not json".to_string(), "text/plain", 400, "invalid_event"),
        ("[]".to_string(), "application/json", 400, "invalid_event"),
        (
            json!((0..6)
                .map(|i| view("r1", Some(&format!("v{i}")), now))
                .collect::<Vec<_>>())
            .to_string(),
            "application/json",
            400,
            "too_many_events",
        ),
        (
            format!(
                "[{}]",
                vec![view("r1", Some("v"), now).to_string(); 60].join(",")
            ),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            view("r1", Some("v1"), now).to_string(),
            "application/xml",
            415,
            "unsupported_media_type",
        ),
    ] {
        let r = post(&app, body, content_type, FIREFOX).await;
        assert_eq!(r.status, status, "{code}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], code);
    }
    // A valid request after them is the only thing counted.
    let r = post_json(&app, &view("r2", Some("v1"), now), FIREFOX).await;
    assert_eq!(r.status, 202);
    wait_until(
        "the valid request counted",
        Duration::from_secs(60),
        || async { counts(&app, "r2").await["page_view"] == 1 },
    )
    .await;
    assert_eq!(counts(&app, "r1").await["page_view"], 0);
    let rejected = "popularity_collector_rejected_total{reason=\"invalid_event\"}";
    assert_eq!(app.metric(rejected).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_is_rate_limited_with_retry_after() {
    let kafka = Kafka::start(1);
    let mut s = collector_settings(&kafka);
    s.collector.requests_per_second_per_ip = 1;
    s.collector.burst = 3;
    let app = spawn_app(s).await;
    let now = now_ms();
    let mut statuses = Vec::new();
    let mut retry = None;
    // One article per request: one reader's views of one article are one.
    let ids: Vec<String> = (0..5).map(|i| format!("l{i}")).collect();
    for id in &ids {
        let r = post_json(&app, &view(id, None, now), FIREFOX).await;
        statuses.push(r.status);
        if r.status == 429 {
            retry = r.retry_after;
            assert_eq!(r.body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(&statuses[..3], [202, 202, 202], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // The limited requests were not produced.
    let views = || async {
        let mut n = 0;
        for id in &ids {
            n += counts(&app, id).await["page_view"].as_u64().unwrap();
        }
        n
    };
    wait_until("the admitted views", Duration::from_secs(60), || async {
        views().await >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counted = views().await;
    assert_eq!(
        counted,
        statuses.iter().filter(|s| **s == 202).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_requests_get_503_and_retries_after_it_count_once() {
    let kafka = Kafka::start(1);
    let mut s = collector_settings(&kafka);
    s.collector.produce_timeout = Duration::from_secs(1);
    let app = spawn_app(s).await;
    let now = now_ms();
    let r = post_json(&app, &view("k1", Some("v0"), now), FIREFOX).await;
    assert_eq!(r.status, 202);
    wait_until("the first view", Duration::from_secs(60), || async {
        counts(&app, "k1").await["page_view"] == 1
    })
    .await;

    kafka.broker.set_down(true);
    let started = std::time::Instant::now();
    let mut refused = Vec::new();
    // Other articles: one reader's views of one article are one.
    for i in 2..=4 {
        let e = view(&format!("k{i}"), None, now);
        let r = post_json(&app, &e, FIREFOX).await;
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.retry_after.as_deref(), Some("5"));
        refused.push(e);
    }
    let took = started.elapsed();
    println!("collector: three requests refused in {took:?} while the broker was down");
    assert!(took < Duration::from_secs(10), "{took:?}");
    kafka.broker.set_down(false);
    // The client retries what was refused, as the tracker does.
    for e in &refused {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = post_json(&app, e, FIREFOX).await;
            if r.status == 202 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never accepted again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let views = || async {
        let mut n = 0;
        for i in 1..=4 {
            n += counts(&app, &format!("k{i}")).await["page_view"]
                .as_u64()
                .unwrap();
        }
        n
    };
    wait_until("every retried view", Duration::from_secs(60), || async {
        views().await == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 1..=4 {
        let k = format!("k{i}");
        assert_eq!(
            counts(&app, &k).await["page_view"],
            1,
            "{k} counted other than once"
        );
    }
    assert!(app.metric("popularity_collector_kafka_errors_total").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_for_the_collector_follow_the_allowed_origins() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.cors_allowed_origins = vec!["https://news.example.com".into()];
    let app = spawn_app(s).await;
    for (origin, allowed) in [
        ("https://news.example.com", true),
        ("https://elsewhere.example", false),
    ] {
        let r = app
            .http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/events", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        let allow = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            allow.as_deref() == Some(origin),
            allowed,
            "{origin}: {allow:?}"
        );
    }
}
