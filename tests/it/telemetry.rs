//! Traces (DESIGN's operations: telemetry): `popularity serve` sends its
//! spans over OTLP/HTTP to a receiver this test runs, one per HTTP request
//! named for its route and one per flush with its steps, continues a
//! caller's valid `traceparent` and ignores a malformed one, puts the trace
//! id in its JSON log lines and its access log; and sends nothing when no
//! endpoint is set.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use serde_json::{json, Value};

use crate::helpers::*;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    trace_state: String,
    attributes: Vec<(String, Value)>,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

fn any(v: Option<Any>) -> Value {
    match v {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(f)) => json!(f),
        Some(Any::BoolValue(b)) => json!(b),
        other => json!(format!("{other:?}")),
    }
}

/// Flattens one export into its spans.
fn spans_of(request: ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| any(a.value.clone().and_then(|v| v.value)))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Exported {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                trace_state: span.trace_state,
                attributes: span
                    .attributes
                    .into_iter()
                    .map(|a| (a.key, any(a.value.and_then(|v| v.value))))
                    .collect(),
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on a random port: `POST /v1/traces` with a
/// protobuf `ExportTraceServiceRequest`, whose spans it keeps.
async fn receiver() -> (String, Arc<Mutex<Vec<Exported>>>) {
    use axum::routing::post;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                kept.lock().unwrap().extend(spans_of(request));
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// `popularity serve` on `port` and `admin`, JSON logs and the access log
/// to `log`, spans to the receiver at `otlp` when `traces` (the
/// OpenTelemetry SDK's own variable names it either way).
fn serve(
    kafka: &Kafka,
    redis: &RedisServer,
    (port, admin): (u16, u16),
    otlp: &str,
    traces: bool,
    log: &std::path::Path,
) -> Child {
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
        .env(
            "POPULARITY__API__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )
        .env("POPULARITY__API__CACHE_TTL", "0s")
        .env("POPULARITY__INGEST__FLUSH_INTERVAL", "50ms")
        .env("POPULARITY__STORE__BACKEND", "redis")
        .env("POPULARITY__STORE__REDIS_URL", &redis.url)
        .env("POPULARITY__STORE__KEY_PREFIX", random_name("t"))
        .env("POPULARITY__LOG__FORMAT", "json")
        .env("POPULARITY__TELEMETRY__ACCESS_LOG", "true")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp);
    if traces {
        cmd.env("POPULARITY__TELEMETRY__OTLP_ENDPOINT", otlp);
    } else {
        cmd.env_remove("POPULARITY__TELEMETRY__OTLP_ENDPOINT");
    }
    cmd.spawn().unwrap()
}

async fn get(port: u16, path: &str, traceparent: Option<&str>) -> u16 {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = traceparent {
        // A caller's tracestate, long, is not taken along.
        let state = format!("vendor={}", "x".repeat(200));
        request = request.header("traceparent", t).header("tracestate", state);
    }
    match request.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Publishes two articles and `views` page views of them.
async fn produce(kafka: &Kafka, views: usize) -> [&'static str; 2] {
    let ids = ["otel-a", "otel-b"];
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
    ids
}

/// Waits until the service is ready and has counted `views`.
async fn wait_counted(port: u16, views: u64) {
    wait_until("ready", Duration::from_secs(40), || async {
        get(port, "/readyz", None).await == 200
    })
    .await;
    wait_until("views counted", Duration::from_secs(30), || async {
        let client = reqwest::Client::new();
        let mut total = 0;
        for id in ["otel-a", "otel-b"] {
            let url = format!("http://127.0.0.1:{port}/v1/articles/{id}");
            if let Ok(r) = client.get(url).send().await {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                total += body["counts"]["page_view"].as_u64().unwrap_or(0);
            }
        }
        total == views
    })
    .await;
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_flushes_are_traced_with_their_trace_id_in_the_logs() {
    let (otlp, spans) = receiver().await;
    let kafka = Kafka::start(2);
    let redis = redis_server();
    let views = 12;
    produce(&kafka, views).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let (port, admin) = (free_port(), free_port());
    let child = serve(&kafka, &redis, (port, admin), &otlp, true, &log);
    wait_counted(port, views as u64).await;

    let valid = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(get(port, "/v1/rankings/trending", Some(&valid)).await, 200);
    for garbage in [
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "not a traceparent at all",
        "",
    ] {
        assert_eq!(
            get(port, "/v1/rankings/popular", Some(garbage)).await,
            200,
            "{garbage:?}"
        );
    }
    assert_eq!(get(port, "/no/such/route", None).await, 404);
    assert_eq!(get(admin, "/metrics", None).await, 200);
    sigterm(child);

    // Everything was sent before the process exited.
    let spans = spans.lock().unwrap().clone();
    let lines = json_log_lines(&log);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    eprintln!("{} spans: {names:?}", spans.len());
    assert!(
        spans.iter().all(|s| s.service == "popularity"),
        "{spans:#?}"
    );
    let named =
        |name: &str| -> Vec<&Exported> { spans.iter().filter(|s| s.name == name).collect() };

    // Requests: named for the route template, with method, route, status.
    let rankings = named("GET /v1/rankings/{profile}");
    assert_eq!(rankings.len(), 5, "{names:?}");
    for s in &rankings {
        assert_eq!(s.attribute("http.request.method"), Some(&json!("GET")));
        assert_eq!(
            s.attribute("http.route"),
            Some(&json!("/v1/rankings/{profile}"))
        );
        assert_eq!(s.attribute("http.response.status_code"), Some(&json!(200)));
    }
    let continued: Vec<_> = rankings
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    assert_eq!(continued.len(), 1, "{rankings:#?}");
    assert_eq!(continued[0].parent, CALLER_SPAN);
    assert_eq!(continued[0].trace_state, "", "tracestate is not taken");
    for s in rankings.iter().filter(|s| s.trace_id != CALLER_TRACE) {
        assert_eq!(
            s.parent, "",
            "a malformed traceparent starts a trace: {s:?}"
        );
        assert_eq!(s.trace_id.len(), 32);
    }
    let unmatched = named("GET");
    assert_eq!(unmatched.len(), 1, "{names:?}");
    assert_eq!(
        unmatched[0].attribute("http.response.status_code"),
        Some(&json!(404))
    );
    assert_eq!(unmatched[0].attribute("http.route"), None);
    let metrics = named("GET /metrics");
    assert_eq!(metrics.len(), 1, "the operators' listener: {names:?}");
    assert!(!named("GET /v1/articles/{id}").is_empty(), "{names:?}");

    // Flushes: read, fold, write, commit under each flush, counting events.
    let flushes = named("flush");
    let events: i64 = flushes
        .iter()
        .map(|f| f.attribute("events").and_then(Value::as_i64).unwrap())
        .sum();
    assert_eq!(events, views as i64, "{flushes:#?}");
    let counted = flushes
        .iter()
        .find(|f| f.attribute("events") != Some(&json!(0)))
        .unwrap();
    assert_eq!(counted.parent, "");
    for step in ["read", "fold", "write", "commit"] {
        let child = spans
            .iter()
            .find(|s| s.name == step && s.parent == counted.span_id)
            .unwrap_or_else(|| panic!("no {step} under {counted:?}: {spans:#?}"));
        assert_eq!(child.trace_id, counted.trace_id);
        assert_eq!(child.attribute("events"), counted.attribute("events"));
    }
    eprintln!("flush spans: {flushes:#?}");

    // The access log: a line per request, with the trace id of its span.
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "popularity::access")
        .collect();
    for s in rankings.iter().chain(&metrics).chain(&unmatched) {
        let route = s
            .attribute("http.route")
            .cloned()
            .unwrap_or(json!("unmatched"));
        let line = access
            .iter()
            .find(|l| l["trace_id"] == json!(s.trace_id))
            .unwrap_or_else(|| panic!("no access line for {s:?}: {access:#?}"));
        assert_eq!(line["route"], route, "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(
            Some(&line["status"]),
            s.attribute("http.response.status_code"),
            "{line}"
        );
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(line.get("spans").is_none(), "{line}");
    }
    let caller = access
        .iter()
        .filter(|l| l["trace_id"] == CALLER_TRACE)
        .count();
    assert_eq!(caller, 1, "{access:#?}");
    eprintln!("access log, e.g.: {}", access[access.len() - 1]);
    // Lines outside any request or flush carry no trace id.
    let serving = lines
        .iter()
        .find(|l| l["message"] == "popularity serving")
        .unwrap();
    assert!(serving.get("trace_id").is_none(), "{serving}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_sent_and_logs_carry_no_trace_id() {
    let (otlp, spans) = receiver().await;
    let kafka = Kafka::start(2);
    let redis = redis_server();
    produce(&kafka, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let (port, admin) = (free_port(), free_port());
    // OTEL_EXPORTER_OTLP_ENDPOINT alone does not turn traces on.
    let child = serve(&kafka, &redis, (port, admin), &otlp, false, &log);
    wait_counted(port, 4).await;
    let valid = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(get(port, "/v1/rankings/trending", Some(&valid)).await, 200);
    sigterm(child);

    assert!(spans.lock().unwrap().is_empty());
    let lines = json_log_lines(&log);
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "popularity::access")
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l["route"] == "/v1/rankings/{profile}" && l["status"] == 200),
        "{access:#?}"
    );
    assert!(
        lines.iter().all(|l| l.get("trace_id").is_none()),
        "{lines:#?}"
    );
    eprintln!("access log, e.g.: {}", access[0]);
}
