//! Lists that live on the news site: the ranking stream (Server-Sent
//! Events), cross-origin access, and the summary and image of articles.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::{publish_ids, views};
use crate::helpers::*;

/// One `event: ranking` read from a stream: its id and JSON.
struct Pushed {
    id: u64,
    body: serde_json::Value,
}

/// Reads a stream's bytes until the next ranking event, for at most `within`.
async fn next_ranking(
    resp: &mut reqwest::Response,
    buf: &mut String,
    within: Duration,
) -> Option<Pushed> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            if field("event:").as_deref() != Some("ranking") {
                continue; // a heartbeat comment
            }
            return Some(Pushed {
                id: field("id:")?.parse().ok()?,
                body: serde_json::from_str(&field("data:")?).ok()?,
            });
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.ok()?;
        buf.push_str(&String::from_utf8_lossy(&chunk.ok()??));
    }
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_the_list_at_connect_and_again_when_its_order_changes() {
    let kafka = Kafka::start(2);
    let mut s = settings(&kafka, None);
    s.api.max_streams = 2;
    let app = spawn_app(s).await;
    publish_ids(&kafka, &app, &["s1", "s2", "s3"]).await;
    views(&kafka, "s1", 0..3).await;
    views(&kafka, "s2", 0..1).await;
    let api = |app: &TestApp| {
        let app = app.base.clone();
        async move {
            let b: serde_json::Value = reqwest::get(format!("{app}/v1/rankings/trending?limit=3"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids(&b)
        }
    };
    wait_until("two ranked articles", Duration::from_secs(60), || async {
        api(&app).await == ["s1", "s2"]
    })
    .await;
    let url = format!("{}/v1/stream/rankings/trending?limit=3", app.base);
    let mut first = app.http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let a = next_ranking(&mut first, &mut buf, Duration::from_secs(10))
        .await
        .expect("the list at connect");
    assert_eq!(ids(&a.body), ["s1", "s2"]);
    assert_eq!(a.body["profile"], "trending");

    // A second reader of the same list, and a third stream is one too many.
    let mut second = app.http.get(&url).send().await.unwrap();
    let mut buf2 = String::new();
    let b = next_ranking(&mut second, &mut buf2, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(b.id, a.id, "one computation shared by both readers");
    let refused = app.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    drop(second);

    // Readers move the list: s2 overtakes s1.
    views(&kafka, "s2", 1..6).await;
    let c = next_ranking(&mut first, &mut buf, Duration::from_secs(20))
        .await
        .expect("an update after the change");
    assert!(c.id > a.id, "ids increase: {} then {}", a.id, c.id);
    assert_eq!(ids(&c.body), ["s2", "s1"]);
    assert_eq!(ids(&c.body), api(&app).await);

    // Reconnecting with the last id gets nothing until the list changes.
    drop(first);
    let mut again = app
        .http
        .get(&url)
        .header("Last-Event-ID", c.id.to_string())
        .send()
        .await
        .unwrap();
    let mut buf3 = String::new();
    assert!(
        next_ranking(&mut again, &mut buf3, Duration::from_millis(1500))
            .await
            .is_none(),
        "the same list was sent again"
    );
    // Nine views, sent one by one: a flush may fall between them, and a
    // list with s3 below s2 is a change too. Every update has a higher id;
    // the last one has s3 on top.
    views(&kafka, "s3", 0..9).await;
    let mut last = c.id;
    loop {
        let d = next_ranking(&mut again, &mut buf3, Duration::from_secs(20))
            .await
            .expect("an update after the change");
        assert!(d.id > last, "ids increase: {last} then {}", d.id);
        last = d.id;
        let top = ids(&d.body);
        assert!(top.contains(&"s3".to_string()), "{top:?}");
        if top[0] == "s3" {
            break;
        }
    }
    // Open streams do not hold the shutdown up.
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_allowed_origins_may_call_and_preflights_never_reach_the_store() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, Some(&redis));
    s.api.cors_allowed_origins = vec!["https://news.example.com".into()];
    let app = spawn_app(s).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/stream/rankings/trending", app.base),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "last-event-id")
            .send()
    };
    // With the store gone, a read fails but a preflight is still answered.
    drop(redis);
    let (status, _) = app.get("/v1/rankings/trending").await;
    assert_eq!(status, 503);
    let ok = preflight("https://news.example.com").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://news.example.com"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("last-event-id"), "{allowed}");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let get = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("Origin", "https://news.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://news.example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_and_images_reach_rankings_the_index_and_article_pages() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    let now = now_ms();
    kafka
        .send_json(
            &kafka.articles,
            "m1",
            &json!({"type":"article_published","article_id":"m1","title":"Storm reaches the coast",
                    "section":"news","published_at":now - 60_000,
                    "summary":"Thousands leave their homes <b>tonight</b>.",
                    "image_url":"https://img.example.com/m1.jpg"}),
        )
        .await;
    kafka
        .send_json(
            &kafka.articles,
            "m2",
            &json!({"type":"article_published","article_id":"m2","title":"No picture","section":"news",
                    "published_at":now - 120_000,"image_url":"javascript:alert(1)"}),
        )
        .await;
    views(&kafka, "m1", 0..2).await;
    wait_until("the ranked article", Duration::from_secs(60), || async {
        app.get("/v1/rankings/trending").await.1["items"][0]["summary"].is_string()
    })
    .await;
    let (_, r) = app.get("/v1/rankings/trending").await;
    assert_eq!(
        r["items"][0]["summary"],
        "Thousands leave their homes <b>tonight</b>."
    );
    assert_eq!(r["items"][0]["image_url"], "https://img.example.com/m1.jpg");
    let (_, index) = app.get("/v1/index?section=news").await;
    let items = index["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "the article with a javascript: URL was refused: {index}"
    );
    assert_eq!(items[0]["image_url"], "https://img.example.com/m1.jpg");
    let (_, page) = app.get("/v1/articles/m1").await;
    assert_eq!(
        page["summary"], "Thousands leave their homes <b>tonight</b>.",
        "{page}"
    );
    app.wait_metric(
        "popularity_events_total{outcome=\"dead_lettered\",type=\"unknown\"}",
        1.0,
    )
    .await;
}

/// One client cannot hold every stream of a replica: at most
/// `api.max_streams_per_client` (here 3) from one address, the others
/// still served. Before, 10,000 streams from one address were accepted and
/// a new widget's stream refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_the_streams() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.max_streams_per_client = 3;
    // Behind a proxy on this machine: X-Forwarded-For names the client.
    s.collector.trusted_proxies = vec!["127.0.0.1".into()];
    let app = spawn_app(s).await;
    let open = |client: &'static str| {
        app.http
            .get(format!("{}/v1/stream/rankings/trending", app.base))
            .header("x-forwarded-for", client)
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let r = open("203.0.113.7").await.unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let refused = open("203.0.113.7").await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another reader is served; a closed stream frees its place.
    let other = open("198.51.100.9").await.unwrap();
    assert_eq!(other.status(), 200);
    drop(held.pop());
    wait_until(
        "the closed stream's place",
        Duration::from_secs(10),
        || async { open("203.0.113.7").await.unwrap().status() == 200 },
    )
    .await;
}
