//! Invalid messages go to the dead-letter topic with their reason.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_go_to_the_dead_letter_topic_with_their_reason() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    publish_ids(&kafka, &app, &["g"]).await;
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
    // A JSON object is JSON whatever its header says (DESIGN §2): counted.
    let e = good(50);
    weights.push((e["occurred_at"].as_i64().unwrap(), 1.0));
    let labelled = serde_json::to_vec(&e).unwrap();
    kafka
        .send(
            &kafka.events,
            "g",
            &labelled,
            Some("application/x-protobuf"),
        )
        .await;

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
    let consumer = dead_letter_reader(&kafka);
    let mut seen = Vec::new();
    while seen.len() < bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let headers = headers_of(&m);
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

/// Messages larger than any dead-letter topic takes (2 MB and 20 MB, with
/// Kafka's default limit of 1 MB a message; the test's producer raises its
/// own) go there truncated, with their size and origin in headers, and
/// ingest goes on: before, the refused dead-letter produce kept the flush
/// failing and every partition paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_to_dead_letter_goes_there_truncated_and_ingest_goes_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = Kafka::start(2);
    let app = spawn_app(settings(&kafka, None)).await;
    publish_ids(&kafka, &app, &["after"]).await;
    let big: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("message.max.bytes", "30000000")
        .create()
        .unwrap();
    // Each alone in a partition of its own: the dev broker keeps at most
    // 5 MiB of a partition, a larger message only when it is the only one.
    let consumer = dead_letter_reader(&kafka);
    for (i, size) in [2_000_000usize, 20_000_000].iter().enumerate() {
        let payload = format!(
            "{{\"type\":\"page_view\",\"pad\":\"{}\"}}",
            "x".repeat(*size)
        );
        big.send(
            FutureRecord::to(&kafka.events)
                .key(&format!("big{i}"))
                .partition(i as i32)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("the dead letter arrives")
            .unwrap();
        let headers = headers_of(&m);
        assert_eq!(m.key(), Some(format!("big{i}").as_bytes()));
        assert!(headers["x-error"].starts_with("oversized"), "{headers:?}");
        assert_eq!(headers["x-original-size"], (size + 29).to_string());
        assert_eq!(headers["x-source-topic"], kafka.events);
        assert_eq!(headers["x-source-partition"], i.to_string());
        assert_eq!(headers["x-source-offset"], "0");
        let payload = m.payload().unwrap();
        assert_eq!(payload.len(), 256 * 1024, "truncated to 256 KiB");
        assert!(payload.starts_with(b"{\"type\":\"page_view\",\"pad\":\"xxx"));
    }
    // A good event after them counts: nothing stopped the consumer.
    let e =
        json!({"type":"page_view","article_id":"after","visitor_id":"v","occurred_at":now_ms()})
            .to_string();
    big.send(
        FutureRecord::to(&kafka.events)
            .key("after")
            .partition(0)
            .payload(&e),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        1.0,
    )
    .await;
    app.stop().await;
}

/// A dead letter's headers, by name.
fn headers_of(m: &impl Message) -> HashMap<String, String> {
    m.headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                String::from_utf8_lossy(h.value.unwrap()).into_owned(),
            )
        })
        .collect()
}

/// A dead-letter topic that accepts nothing stops ingest without losing or
/// committing anything: the consumer reports not ready with the reason,
/// its lag keeps counting while its partitions are paused, and once the
/// topic accepts again every event counts exactly once and the invalid one
/// is dead-lettered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_everything_stops_ingest_and_loses_nothing() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, Some(&redis));
    // A dead letter not acknowledged within 1.5 s fails its flush.
    s.kafka
        .properties
        .insert("message.timeout.ms".into(), "1500".into());
    let group = s.kafka.group_id.clone();
    let app = spawn_app(s).await;
    publish_ids(&kafka, &app, &["g"]).await;
    kafka
        .broker
        .dev()
        .set_partition_leader(&kafka.dead_letter, 0, false)
        .unwrap();
    let now = now_ms();
    let mut weights = Vec::new();
    let mut send_good = |i: i64| {
        let at = now - i * 1_000;
        weights.push((at, 1.0));
        json!({"type":"page_view","article_id":"g","visitor_id":format!("v{i}"),"occurred_at":at})
    };
    let first: Vec<_> = (0..5).map(&mut send_good).collect();
    for e in &first {
        kafka.send_json(&kafka.events, "g", e).await;
    }
    kafka.send(&kafka.events, "g", b"{not json", None).await;
    let later: Vec<_> = (5..30).map(&mut send_good).collect();
    for e in &later {
        kafka.send_json(&kafka.events, "g", e).await;
    }

    // Not ready, with the reason.
    let readyz = format!("{}/readyz", app.base);
    let mut reasons = serde_json::Value::Null;
    for _ in 0..200 {
        let r = app.http.get(&readyz).send().await.unwrap();
        if r.status() == 503 {
            reasons = r.json::<serde_json::Value>().await.unwrap()["reasons"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = reasons[0].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("dead-letter topic"), "{reasons}");
    // Events produced while the partitions are paused count in the lag:
    // librdkafka's own statistics no longer see the watermark move.
    let paused: Vec<_> = (30..50).map(&mut send_good).collect();
    for e in &paused {
        kafka.send_json(&kafka.events, "g", e).await;
    }
    // Nothing past the invalid message (offset 5) is applied or committed,
    // and the lag counts the 45 events behind it.
    let lag =
        "popularity_consumer_lag{partition=\"0\",topic=\"".to_string() + &kafka.events + "\"}";
    let mut seen_lag = 0.0;
    for _ in 0..150 {
        seen_lag = app.metric(&lag).await;
        if seen_lag >= 45.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_lag >= 45.0, "lag while paused: {seen_lag}");
    let applied = app
        .metric("popularity_events_total{outcome=\"applied\",type=\"page_view\"}")
        .await;
    assert!(
        applied <= 5.0,
        "{applied} applied past the stuck dead letter"
    );
    assert!(
        committed(&kafka, &group) <= 5,
        "committed past the invalid message"
    );

    // The topic accepts again: everything counts once, the dead letter once.
    kafka
        .broker
        .dev()
        .set_partition_leader(&kafka.dead_letter, 0, true)
        .unwrap();
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        50.0,
    )
    .await;
    let r = app.http.get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let consumer = dead_letter_reader(&kafka);
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("the dead letter arrives")
        .unwrap();
    assert_eq!(m.payload(), Some(&b"{not json"[..]));
    let again = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await;
    assert!(again.is_err(), "the dead letter was sent twice");
    check_ranking(&app, "/v1/rankings/trending", "article_id", |at| {
        vec![("g".to_string(), direct_score(&weights, at, TRENDING_H))]
    })
    .await;
    for _ in 0..100 {
        if committed(&kafka, &group) == 51 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed(&kafka, &group), 51);
    app.stop().await;
}

/// The offset `group` committed on partition 0 of the events topic (-1: none).
fn committed(kafka: &Kafka, group: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&kafka.events, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    got.find_partition(&kafka.events, 0)
        .and_then(|p| p.offset().to_raw())
        .unwrap_or(-1)
}

/// A service on the memory store reads its topics from the beginning at
/// every start: each invalid message still reaches the dead-letter topic
/// once, across restarts (before, once per start), while every ranking is
/// rebuilt exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_message_is_dead_lettered_once_across_restarts_of_a_memory_store() {
    let kafka = Kafka::start(2);
    let s = settings(&kafka, None);
    let now = now_ms();
    let mut weights = Vec::new();
    let app = spawn_app(s.clone()).await;
    publish_ids(&kafka, &app, &["g"]).await;
    for i in 0..30i64 {
        let at = now - i * 1_000;
        weights.push((at, 1.0));
        let e = json!({"type":"page_view","article_id":"g","visitor_id":format!("v{i}"),"occurred_at":at});
        kafka.send_json(&kafka.events, &format!("k{i}"), &e).await;
        if i % 10 == 0 {
            let bad = format!("{{not json {i}");
            kafka
                .send(&kafka.events, &format!("bad{i}"), bad.as_bytes(), None)
                .await;
        }
    }
    let applied = "popularity_events_total{outcome=\"applied\",type=\"page_view\"}";
    let dead = "popularity_events_total{outcome=\"dead_lettered\",type=\"unknown\"}";
    app.wait_metric(applied, 30.0).await;
    app.wait_metric(dead, 3.0).await;
    app.stop().await;
    for _ in 0..2 {
        let app = spawn_app(s.clone()).await;
        app.wait_metric(applied, 30.0).await;
        check_ranking(&app, "/v1/rankings/trending", "article_id", |at| {
            vec![("g".to_string(), direct_score(&weights, at, TRENDING_H))]
        })
        .await;
        assert_eq!(app.metric(dead).await, 0.0, "dead-lettered again");
        app.stop().await;
    }
    let consumer = dead_letter_reader(&kafka);
    let mut payloads = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
        payloads.push(String::from_utf8_lossy(m.unwrap().payload().unwrap()).into_owned());
    }
    payloads.sort();
    assert_eq!(
        payloads,
        ["{not json 0", "{not json 10", "{not json 20"],
        "each invalid message once"
    );
}
