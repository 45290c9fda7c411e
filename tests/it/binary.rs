//! The binary as a user runs it: configuration errors, the dev broker and serve, signals.

use std::time::Duration;

use rdkafka::ClientConfig;
use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

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

/// A store that cannot be reached does not stop the service (DESIGN §15):
/// it is logged once, named without its password, and retried.
#[test]
fn a_store_that_cannot_be_reached_is_named_without_its_password() {
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["serve", "--role", "api"])
        .env(
            "POPULARITY__STORE__REDIS_URL",
            format!("redis://:S3cretPassw0rd@127.0.0.1:{port}"),
        )
        .env("POPULARITY__API__LISTEN", "127.0.0.1:0")
        .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(child.try_wait().unwrap().is_none(), "serve exited");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("S3cretPassw0rd"), "{err}");
    assert_eq!(err.matches("store is down").count(), 1, "{err}");
    assert!(
        err.contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{err}"
    );
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

    let (api_port, admin_port) = (free_port(), free_port());
    let mut serve = Command::new(exe)
        .args(["serve"])
        .env("POPULARITY__KAFKA__BROKERS", format!("127.0.0.1:{port}"))
        .env("POPULARITY__STORE__BACKEND", "memory")
        .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{api_port}"))
        .env(
            "POPULARITY__API__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("POPULARITY__INGEST__FLUSH_INTERVAL", "50ms")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .unwrap();
    let now = now_ms();
    // Only published articles are listed.
    for id in ["hot", "warm"] {
        let a = json!({"type":"article_published","article_id":id,"title":format!("T {id}"),"published_at":now});
        producer
            .send(
                rdkafka::producer::FutureRecord::to("articles")
                    .key(id)
                    .payload(&a.to_string()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
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
    let ranked = || async {
        let r = http.get(&url).send().await.ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        body["items"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
            .then_some(body)
    };
    wait_until("the rankings", Duration::from_secs(60), || async {
        ranked().await.is_some()
    })
    .await;
    let body = ranked().await.expect("still ranked");
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

    // The binary counts its heap's live bytes: more than its structures'
    // least, less than what is resident.
    let metrics = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let heap = value("popularity_heap_bytes");
    let rss = value("process_resident_memory_bytes");
    assert!(
        heap > 256.0 * 1024.0 && heap < rss,
        "heap {heap}, RSS {rss}"
    );
    // And what librdkafka holds in glibc's malloc, apart.
    let in_use = value("popularity_libc_heap_bytes{state=\"in_use\"}");
    let held = value("popularity_libc_heap_bytes{state=\"held\"}");
    assert!(
        in_use > 0.0 && in_use <= held && held < rss,
        "{in_use}, {held}, RSS {rss}"
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
        let status = exited_by(child, started + Duration::from_secs(20), name);
        assert!(status.success(), "{name} exited with {status}");
    }
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
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = exited_by(
            &mut demo,
            deadline,
            &format!("round {round}: the demo on SIGINT"),
        );
        assert!(status.success(), "round {round}: exited with {status}");
    }
}

/// Logs written to a pipe carry no colour codes; `log.format = json` makes
/// one JSON object per line.
#[test]
fn logs_to_a_file_are_plain_text_or_one_json_object_per_line() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    for format in ["text", "json"] {
        let mut broker = Command::new(env!("CARGO_BIN_EXE_popularity"))
            .arg("dev-broker")
            .env("POPULARITY__LOG__FORMAT", format)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(broker.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("bootstrap.servers="), "{first}");
        Command::new("kill")
            .args(["-TERM", &broker.id().to_string()])
            .status()
            .unwrap();
        let mut err = String::new();
        broker
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(broker.wait().unwrap().success());
        assert!(!err.contains('\u{1b}'), "{format}: colour codes in {err:?}");
        let logged: Vec<&str> = err.lines().filter(|l| l.contains("SIGTERM")).collect();
        assert_eq!(logged.len(), 1, "{format}: {err}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(logged[0]).unwrap();
            assert_eq!(v["level"], "INFO", "{v}");
            assert_eq!(v["message"], "SIGTERM received, shutting down", "{v}");
        }
    }
}

/// A collector that cannot reach Kafka over SASL logs its trouble at
/// debug level without its password (DESIGN §13).
#[test]
fn kafka_credentials_never_reach_the_logs() {
    let broker_port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["serve", "--role", "collector"])
        .env(
            "POPULARITY__KAFKA__BROKERS",
            format!("127.0.0.1:{broker_port}"),
        )
        .env(
            "POPULARITY__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
            "sasl_plaintext",
        )
        .env("POPULARITY__KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN")
        .env("POPULARITY__KAFKA__PROPERTIES__SASL_USERNAME", "popularity")
        .env(
            "POPULARITY__KAFKA__PROPERTIES__SASL_PASSWORD",
            "KafkaS3cretPass",
        )
        .env(
            "POPULARITY__KAFKA__PROPERTIES__DEBUG",
            "broker,security,conf",
        )
        .env("POPULARITY__API__LISTEN", "127.0.0.1:0")
        .env("POPULARITY__API__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("popularity"), "the run logged: {err}");
    assert!(err.lines().count() > 5, "debug logs: {err}");
    assert!(!err.contains("KafkaS3cretPass"), "{err}");
}
