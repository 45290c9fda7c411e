//! Alerts (DESIGN §14): an article taking off is announced once per
//! cooldown across replicas, to signed webhooks (retried, bounded) and on
//! `GET /v1/stream/alerts`. The receivers are the test's own, on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fixtures::*;
use crate::helpers::*;

const SECRET: &str = "a-webhook-secret-for-tests";

/// What a receiver got: each request's headers and body.
type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver on loopback answering with `answers` in turn (the
/// last one from then on); `None` never answers.
async fn receiver(answers: Vec<Option<u16>>) -> (String, Got) {
    let got: Got = Arc::default();
    let (g, answers) = (got.clone(), Arc::new(answers));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (g, answers) = (g.clone(), answers.clone());
            async move {
                let n = {
                    let mut g = g.lock();
                    g.push((headers, body));
                    g.len()
                };
                match answers[(n - 1).min(answers.len() - 1)] {
                    Some(code) => StatusCode::from_u16(code).unwrap(),
                    None => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        StatusCode::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn alerting(kafka: &Kafka, redis: &RedisServer, hooks: &[&str]) -> popularity::config::Settings {
    let mut s = settings(kafka, Some(redis));
    // Replicas join one group at once, and the dev broker now and then
    // assigns only after a member's session has passed (about 44 s more
    // with librdkafka's default 45 s session, which once outlasted the 60 s
    // wait under load; 15 s more with 6 s): a short session, as the fault
    // tests' consumers have.
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        s.kafka.properties.insert(k.to_string(), v.to_string());
    }
    s.alerts.interval = Duration::from_millis(200);
    s.alerts.threshold = 0.001;
    s.alerts.allow_private_targets = true;
    s.alerts.webhooks = hooks
        .iter()
        .map(|url| popularity::config::WebhookSettings {
            url: url.to_string(),
            secret: popularity::config::Secret(SECRET.into()),
        })
        .collect();
    s
}

/// Publishes `id` and sends it `n` page views now.
async fn surge(kafka: &Kafka, app: &TestApp, id: &str, n: usize) {
    let a = json!({"type":"article_published","article_id":id,"title":format!("Title {id}"),
                   "url":format!("https://news.example.com/{id}"),"published_at":now_ms() - MIN});
    kafka.send_json(&kafka.articles, id, &a).await;
    wait_published(app, &[id]).await;
    for i in 0..n {
        let e = json!({"type":"page_view","article_id":id,"visitor_id":format!("{id}-{i}"),"occurred_at":now_ms()});
        kafka.send_json(&kafka.events, id, &e).await;
    }
}

async fn wait_for(got: &Got, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while got.lock().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} requests, waited for {n}",
            got.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check_signed(headers: &HeaderMap, body: &[u8]) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-popularity-signature"],
        format!("sha256={want}").as_str()
    );
    assert_eq!(headers["content-type"], "application/json");
    let alert: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(headers["idempotency-key"], alert["id"].as_str().unwrap());
    alert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_article_taking_off_is_alerted_once_signed_and_on_the_stream() {
    let (redis, kafka) = (redis_server(), Kafka::start(1));
    let (url, got) = receiver(vec![Some(200)]).await;
    let app = spawn_app(alerting(&kafka, &redis, &[&url])).await;
    let stream = alert_stream(&app);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the stream is open
    surge(&kafka, &app, "surge", 60).await;
    wait_for(&got, 1, Duration::from_secs(20)).await;
    let (headers, body) = got.lock()[0].clone();
    let alert = check_signed(&headers, &body);
    assert_eq!(alert["article_id"], "surge");
    assert_eq!(alert["scope"], "network");
    assert!(alert["rising"].as_f64().unwrap() >= 0.001, "{alert}");
    assert!(
        alert["text"].as_str().unwrap().contains("Title surge"),
        "{alert}"
    );
    // Checked every 200 ms for 2 s more: still one alert (the cooldown).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got.lock().len(), 1);
    assert_eq!(app.metric("popularity_alerts_total").await, 1.0);
    assert_eq!(
        app.metric("popularity_alert_deliveries_total{outcome=\"delivered\"}")
            .await,
        1.0
    );
    let text = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream sends the alert")
        .unwrap();
    assert!(text.starts_with("event: alert\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let streamed: Value = serde_json::from_str(data).unwrap();
    assert_eq!(streamed["id"], alert["id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_one_alert_and_both_streams_see_it() {
    let (redis, kafka) = (redis_server(), Kafka::start(2));
    let (url, got) = receiver(vec![Some(200)]).await;
    let s = alerting(&kafka, &redis, &[&url]);
    let (a, b) = (spawn_app(s.clone()).await, spawn_app(s).await);
    let second = alert_stream(&b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    surge(&kafka, &a, "surge", 60).await;
    wait_for(&got, 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got.lock().len(), 1, "one alert for two replicas");
    let recorded =
        a.metric("popularity_alerts_total").await + b.metric("popularity_alerts_total").await;
    assert_eq!(recorded, 1.0);
    let text = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the other replica's stream sends it too")
        .unwrap();
    assert!(text.contains("\"article_id\":\"surge\""), "{text}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_and_a_silent_one_given_up_while_ingest_goes_on() {
    let (redis, kafka) = (redis_server(), Kafka::start(1));
    let (flaky, flaky_got) = receiver(vec![Some(500), Some(503), Some(200)]).await;
    let (silent, silent_got) = receiver(vec![None]).await;
    let app = spawn_app(alerting(&kafka, &redis, &[&flaky, &silent])).await;
    surge(&kafka, &app, "surge", 60).await;
    // Twice refused, then taken: three attempts with the same key.
    wait_for(&flaky_got, 3, Duration::from_secs(20)).await;
    let keys: Vec<String> = flaky_got
        .lock()
        .iter()
        .map(|(h, _)| h["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    // The silent receiver holds nothing else up: ingest goes on.
    for i in 0..10 {
        let e = json!({"type":"page_view","article_id":"other","visitor_id":format!("o{i}"),"occurred_at":now_ms()});
        kafka.send_json(&kafka.events, "other", &e).await;
    }
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        70.0,
    )
    .await;
    // Four attempts of at most 5 s, 1 + 2 + 4 s apart, then given up.
    let failed = "popularity_alert_deliveries_total{outcome=\"failed\"}";
    let deadline = Instant::now() + Duration::from_secs(45);
    while app.metric(failed).await < 1.0 {
        assert!(Instant::now() < deadline, "never given up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        silent_got.lock().len(),
        popularity::alerts::ATTEMPTS as usize
    );
    assert_eq!(flaky_got.lock().len(), 3);
    assert_eq!(
        app.metric("popularity_alert_deliveries_total{outcome=\"delivered\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("popularity_alert_deliveries_total{outcome=\"retried\"}")
            .await,
        2.0 + 3.0
    );
    app.stop().await;
}

/// Three replicas, one of them killed with SIGKILL before the article takes
/// off: the two left deliver one alert between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_from_the_replicas_left_after_a_kill_9() {
    use std::process::{Command, Stdio};
    let (redis, kafka) = (redis_server(), Kafka::start(1));
    let (url, got) = receiver(vec![Some(200)]).await;
    let s = alerting(&kafka, &redis, &[&url]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alerts.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nthreshold = 0.001\ncooldown = \"6h\"\ninterval = \"200ms\"\nallow_private_targets = true\n\
             [[alerts.webhooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let replica = || {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_popularity"))
            .args(["serve", "--role", "api", "--config"])
            .arg(&config)
            .env("POPULARITY__STORE__REDIS_URL", &s.store.redis_url)
            .env("POPULARITY__STORE__KEY_PREFIX", &s.store.key_prefix)
            .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{port}"))
            .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, port)
    };
    let (mut killed, killed_port) = replica();
    let (mut left, left_port) = replica();
    for port in [killed_port, left_port] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "a replica never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let app = spawn_app(s).await;
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    surge(&kafka, &app, "surge", 60).await;
    wait_for(&got, 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got.lock().len(), 1, "one alert from the replicas left");
    let (headers, body) = got.lock()[0].clone();
    assert_eq!(check_signed(&headers, &body)["article_id"], "surge");
    let _ = left.kill();
    let _ = left.wait();
    app.stop().await;
}

/// The first event frame of `app`'s alert stream, read by a task of its
/// own (opened at once, past heartbeat comments: `:` lines every 15 s, which
/// a slow run may see before the alert).
fn alert_stream(app: &TestApp) -> tokio::task::JoinHandle<String> {
    let (http, base) = (app.http.clone(), app.base.clone());
    tokio::spawn(async move {
        let mut r = http
            .get(format!("{base}/v1/stream/alerts"))
            .send()
            .await
            .unwrap();
        first_event(&mut r).await
    })
}

/// The first event frame of a stream, past its heartbeat comments.
async fn first_event(r: &mut reqwest::Response) -> String {
    let mut text = String::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let frame = text[..end + 2].to_string();
            if !frame.starts_with(':') {
                return frame;
            }
            text.drain(..end + 2);
        }
        let chunk = r.chunk().await.unwrap().expect("an alert");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}
