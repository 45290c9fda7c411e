//! Starting without dependencies (DESIGN §15): the binary comes up with
//! Kafka and Redis down, says what is missing, logs each dependency once,
//! and becomes ready and counts events when they come up; the memory store
//! is not ready before it has read the topics' history.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// `popularity serve` of the test's broker, topics and Redis (`redis_url`,
/// or the memory store), logging to a file the test reads.
fn serve(kafka: &Kafka, redis_url: Option<&str>, port: u16, log: &std::path::Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popularity"));
    cmd.arg("serve")
        .env(
            "POPULARITY__KAFKA__BROKERS",
            kafka.broker.bootstrap_servers(),
        )
        .env("POPULARITY__KAFKA__GROUP_ID", random_name("group"))
        .env("POPULARITY__KAFKA__TOPICS__EVENTS", &kafka.events)
        .env("POPULARITY__KAFKA__TOPICS__ARTICLES", &kafka.articles)
        .env("POPULARITY__KAFKA__TOPICS__DEAD_LETTER", &kafka.dead_letter)
        .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
        .env("POPULARITY__API__CACHE_TTL", "0s")
        .env("POPULARITY__INGEST__FLUSH_INTERVAL", "50ms")
        .env("POPULARITY__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match redis_url {
        Some(url) => cmd
            .env("POPULARITY__STORE__BACKEND", "redis")
            .env("POPULARITY__STORE__REDIS_URL", url)
            .env("POPULARITY__STORE__KEY_PREFIX", random_name("t")),
        None => cmd.env("POPULARITY__STORE__BACKEND", "memory"),
    };
    cmd.spawn().unwrap()
}

async fn get(port: u16, path: &str) -> (u16, Value) {
    match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn message(line: &Value) -> String {
    line["message"].as_str().unwrap_or_default().to_string()
}

async fn publish_and_view(kafka: &Kafka, ids: &[&str], views: usize) {
    let now = now_ms();
    for id in ids {
        let a = json!({"type":"article_published","article_id":id,"title":format!("T {id}"),"published_at":now - 60_000});
        kafka.send_json(&kafka.articles, id, &a).await;
    }
    for i in 0..views {
        let id = ids[i % ids.len()];
        let e = json!({"type":"page_view","article_id":id,"visitor_id":format!("v{i}"),"occurred_at":now});
        kafka.send_json(&kafka.events, id, &e).await;
    }
}

/// The views of every listed article of the all-time counts.
async fn counted_views(port: u16, ids: &[&str]) -> u64 {
    let mut total = 0;
    for id in ids {
        let (status, body) = get(port, &format!("/v1/articles/{id}")).await;
        if status == 200 {
            total += body["counts"]["page_view"].as_u64().unwrap_or(0);
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_kafka_and_redis_down_says_what_is_missing_and_recovers() {
    let kafka = Kafka::start(2);
    let mut redis = redis_server();
    redis.down();
    kafka.broker.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let started = Instant::now();
    let child = serve(&kafka, Some(&redis.url), port, &log);

    wait_until("the listener", Duration::from_secs(3), || async {
        get(port, "/healthz").await.0 == 200
    })
    .await;
    let up_after = started.elapsed();
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"store unreachable"), "{reasons:?}");
    assert!(
        reasons.contains(&"consumer has no partitions assigned"),
        "{reasons:?}"
    );
    let (status, body) = get(port, "/v1/rankings/trending").await;
    assert_eq!(status, 503, "a read without the store: {body}");

    // Ten seconds down: each dependency is logged once, not per attempt.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, body) = get(port, "/readyz").await;
    assert!(
        body["reasons"].to_string().contains("kafka unreachable"),
        "{body}"
    );
    let lines = json_log_lines(&log);
    let messages: Vec<String> = lines.iter().map(message).collect();
    eprintln!(
        "listening after {up_after:?}; {} log lines over 10 s down: {messages:#?}",
        lines.len()
    );
    let said = |what: &str| messages.iter().filter(|m| m.contains(what)).count();
    assert_eq!(said("store is down"), 1, "{messages:#?}");
    assert_eq!(said("kafka is down"), 1, "{messages:#?}");
    assert!(
        lines.len() <= 12,
        "{} lines in 10 s: {messages:#?}",
        lines.len()
    );
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("127.0.0.1:") && m.contains("redis://:")),
        "no password"
    );

    redis.up().unwrap();
    kafka.broker.set_down(false);
    wait_until("ready", Duration::from_secs(40), || async {
        get(port, "/readyz").await.0 == 200
    })
    .await;
    let ids = ["up-a", "up-b", "up-c"];
    publish_and_view(&kafka, &ids, 30).await;
    wait_until("30 views counted", Duration::from_secs(30), || async {
        counted_views(port, &ids).await == 30
    })
    .await;
    // The topics are read apart: the views may be counted before the
    // articles are known, and only published articles are listed.
    wait_until("the articles listed", Duration::from_secs(30), || async {
        get(port, "/v1/rankings/trending?limit=10").await.1["items"]
            .as_array()
            .is_some_and(|items| items.len() == 3)
    })
    .await;
    let (_, body) = get(port, "/v1/rankings/trending?limit=10").await;
    let listed: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{body}");
    let messages: Vec<String> = json_log_lines(&log).iter().map(message).collect();
    assert_eq!(said_in(&messages, "store is up"), 1, "{messages:#?}");
    assert_eq!(said_in(&messages, "kafka is up"), 1, "{messages:#?}");
    assert_eq!(said_in(&messages, "store is down"), 1, "{messages:#?}");
    sigterm(child);
}

fn said_in(messages: &[String], what: &str) -> usize {
    messages.iter().filter(|m| m.contains(what)).count()
}

/// With the memory store, readiness waits for the topics' history: when
/// `/readyz` first says 200, every event of the history is counted; before,
/// it says how far the rebuild is, and the metric counts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_is_ready_only_when_it_has_read_the_history() {
    let kafka = Kafka::start(4);
    let ids = ["h-a", "h-b", "h-c", "h-d", "h-e"];
    let views = 20_000;
    let now = now_ms();
    for id in ids {
        let a = json!({"type":"article_published","article_id":id,"title":format!("T {id}"),"published_at":now - 60_000});
        kafka.send_json(&kafka.articles, id, &a).await;
    }
    let sends = (0..views).map(|i| {
        let id = ids[i % ids.len()];
        let e = json!({"type":"page_view","article_id":id,"visitor_id":format!("v{i}"),"occurred_at":now}).to_string();
        let producer = kafka.producer.clone();
        let topic = kafka.events.clone();
        async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(&topic).key(id).payload(&e),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce");
        }
    });
    futures::future::join_all(sends).await;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let child = serve(&kafka, None, port, &log);
    let mut seen_rebuilding = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(port, "/readyz").await;
        if status == 200 {
            break;
        }
        if let Some(r) = body["reasons"].as_array().and_then(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .find(|r| r.starts_with("rebuilding"))
        }) {
            seen_rebuilding.push(r.to_string());
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // At the first 200, the whole history is counted.
    let counted = counted_views(port, &ids).await;
    assert_eq!(counted, views as u64, "counted when first ready");
    let messages: Vec<String> = json_log_lines(&log).iter().map(message).collect();
    eprintln!(
        "rebuild seen by readiness {} times, first {:?}",
        seen_rebuilding.len(),
        seen_rebuilding.first()
    );
    assert!(
        seen_rebuilding
            .iter()
            .all(|r| r.ends_with(&format!("of {} messages read", views + ids.len()))),
        "{seen_rebuilding:?}"
    );
    assert!(
        !seen_rebuilding.is_empty(),
        "readiness never named the rebuild"
    );
    assert!(
        messages.iter().any(|m| m == "memory store rebuilt"),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "rebuilding the memory store from the topics"),
        "{messages:#?}"
    );
    sigterm(child);
}

/// The example configuration with a broker that cannot be reached comes up
/// and answers `/healthz` (before, it logged 274 librdkafka errors in
/// 10 s and exited with `fetching topic metadata`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_with_an_unreachable_broker_comes_up() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["serve", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../popularity.example.toml"
        ))
        .env("POPULARITY__STORE__BACKEND", "memory")
        .env(
            "POPULARITY__KAFKA__BROKERS",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("/healthz", Duration::from_secs(5), || async {
        get(port, "/healthz").await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"].to_string().contains("kafka unreachable"),
        "{body}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    eprintln!("{lines} log lines in 10 s:\n{text}");
    assert!(lines <= 12, "{lines} lines in 10 s");
    sigterm(child);
}
