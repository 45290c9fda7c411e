//! The HTTP API: parameters, caching, readiness, and the OpenAPI document against real responses.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

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
        ("/v1/rankings/trending?section=", "section must be"),
        (
            "/v1/rankings/trending?published_within=soon",
            "published_within must be",
        ),
        ("/v1/rankings/trending?limt=5", "unknown field `limt`"),
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
    // The profiles and the OpenAPI document are cached like the rest.
    for path in ["/v1/rankings", "/openapi.json"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public, max-age="),
            "{path}"
        );
        let etag = r.headers()["etag"].clone();
        let again = app
            .http
            .get(format!("{}{path}", app.base))
            .header("If-None-Match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_a_reachable_store_and_an_assigned_consumer() {
    let redis = redis_server();
    let kafka = Kafka::start(2);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    // The first group assignment takes a few seconds in the dev broker.
    wait_until("readiness", Duration::from_secs(30), || async {
        let (status, body) = app.get("/readyz").await;
        assert!(status == 200 || status == 503, "{status} {body}");
        status == 200 && body["status"] == "ready"
    })
    .await;
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

/// The response schema the OpenAPI document gives for `path` and `status`,
/// as a standalone JSON Schema (its `$ref`s resolve against `components`).
fn response_schema(doc: &serde_json::Value, path: &str, status: u16) -> serde_json::Value {
    let method = if path == "/v1/events" { "post" } else { "get" };
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]
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
        ("/v1/sites", "/v1/sites", 200),
        (
            "/v1/rankings/{profile}",
            "/v1/rankings/trending?site=nope",
            404,
        ),
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
        ("/v1/rising", "/v1/rising?limit=5", 200),
        ("/v1/rising", "/v1/rising?site=nope", 404),
        ("/v1/rising", "/v1/rising?limit=0", 400),
        ("/healthz", "/healthz", 200),
        ("/healthz", "/healthz?x=1", 400),
        ("/readyz", "/readyz", 200),
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
    // The streams' events carry their routes' bodies.
    for (stream, route) in [
        (
            "/v1/stream/rankings/trending?limit=2",
            "/v1/rankings/{profile}",
        ),
        ("/v1/stream/rising?limit=2", "/v1/rising"),
    ] {
        let (_, data) = app.first_frame(stream).await;
        let schema = response_schema(&doc, route, 200);
        let errors: Vec<String> = jsonschema::validator_for(&schema)
            .unwrap()
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{stream}: {errors:?}");
    }
    covered.insert("/v1/stream/rankings/{profile}");
    // The alert stream opens at once; an unknown site is a 404 with the
    // error body (its alerts are checked in tests/it/alerts.rs).
    let r = app
        .http
        .get(format!("{}/v1/stream/alerts", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    drop(r);
    let (status, body) = app.get("/v1/stream/alerts?site=nope").await;
    assert_eq!(status, 404);
    let schema = response_schema(&doc, "/v1/stream/alerts", 404);
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(&body),
        "{body}"
    );
    covered.insert("/v1/stream/alerts");
    covered.insert("/v1/stream/rising");
    // The collector: a request the document describes, and its answers.
    let events = json!([{"type":"page_view","article_id":"o3","occurred_at":now}]);
    let request =
        &doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["text/plain"]["schema"];
    let request = json!({"allOf": [request], "components": doc["components"]});
    let validator = jsonschema::validator_for(&request).unwrap();
    assert!(
        validator.is_valid(&events),
        "the document refuses a valid request"
    );
    assert!(!validator.is_valid(&json!([{"type":"click","article_id":"o3"}])));
    for (body, status) in [(events.clone(), 202), (json!([{"type":"page_view"}]), 400)] {
        // From a page of this service's own origin, which any site may use.
        let r = app
            .http
            .post(format!("{}/v1/events", app.base))
            .header("content-type", "text/plain")
            .header("origin", &app.base)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let data: serde_json::Value = r.json().await.unwrap();
        let schema = response_schema(&doc, "/v1/events", status);
        let errors: Vec<String> = jsonschema::validator_for(&schema)
            .unwrap()
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "/v1/events {status}: {errors:?} in {data}"
        );
    }
    covered.insert("/v1/events");
    // The scripts: JavaScript, as declared.
    for script in ["/widget.js", "/tracker.js"] {
        let r = app
            .http
            .get(format!("{}{script}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{script}");
        let declared = doc["paths"][script]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let served = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            served.starts_with(&declared),
            "{script}: {served} is not {declared}"
        );
        covered.insert(script);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_streams_are_not_bodies_are_bounded_and_slow_answers_time_out() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let ids: Vec<String> = (0..30).map(|v| format!("c{v}")).collect();
    publish_ids(
        &kafka,
        &app,
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let now = now_ms();
    for v in 0..30 {
        let id = format!("c{v}");
        let e = json!({"type":"page_view","article_id":id,"visitor_id":"v","occurred_at":now});
        kafka.send_json(&kafka.events, &id, &e).await;
    }
    wait_until(
        "thirty ranked articles",
        Duration::from_secs(60),
        || async {
            app.get("/v1/rankings/trending?limit=100").await.1["items"]
                .as_array()
                .is_some_and(|a| a.len() == 30)
        },
    )
    .await;
    let gz = |path: &str| {
        app.http
            .get(format!("{}{path}", app.base))
            .header("Accept-Encoding", "gzip")
            .send()
    };
    let r = gz("/v1/rankings/trending?limit=100").await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let stream = gz("/v1/stream/rankings/trending").await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers().get("content-encoding").is_none(),
        "a compressed stream buffers events"
    );
    drop(stream);
    let big = app
        .http
        .get(format!("{}/v1/rankings", app.base))
        .body(vec![b'x'; popularity::api::MAX_REQUEST_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    // A store that hangs: the answer is a 503 at the timeout, not a hang.
    let pid = redis.pid().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    let slow = app.get("/v1/rankings/popular?limit=7").await;
    let took = started.elapsed();
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(slow.0, 503, "{:?}", slow.1);
    assert!(
        took >= popularity::api::REQUEST_TIMEOUT
            && took < popularity::api::REQUEST_TIMEOUT + Duration::from_secs(3),
        "answered after {took:?}"
    );
}

/// Every client error is answered with the JSON error body, the
/// framework's own included: before, a method not allowed had an empty
/// body and a path that is not UTF-8 a text one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_has_a_json_error_body() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    for (method, path, status, code) in [
        (
            reqwest::Method::POST,
            "/v1/rankings/trending",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/v1/articles/%FF",
            400,
            "invalid_parameter",
        ),
        (reqwest::Method::GET, "/nowhere", 404, "not_found"),
        (
            reqwest::Method::GET,
            "/v1/rankings/trending?limit=0",
            400,
            "invalid_parameter",
        ),
    ] {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}
