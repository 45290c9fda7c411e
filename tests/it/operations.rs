//! Operations: the metrics the alert rules and dashboard use.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Every metric the alert rules and the dashboard use is one the service
/// exports. The scrape is also written for `deploy/validate.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_metrics_the_service_exports() {
    let redis = redis_server();
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
    wait_until("consumer lag", Duration::from_secs(30), || async {
        app.metrics().await.contains("popularity_consumer_lag{")
    })
    .await;
    let scrape = app.metrics().await;
    // Only the operators' listener serves them (DESIGN §13).
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, 404, "/metrics on the public listener");
    let exported: std::collections::HashSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = crate::helpers::CHECKOUT;
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
