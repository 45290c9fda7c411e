//! The routes through the router, without a socket, over the memory store:
//! parameters, answers checked against the formula of DESIGN §3, CORS,
//! limits, and the OpenAPI document against the code. The response cache
//! and its headers: [`cache`].

mod cache;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

use super::{edge, router, ApiState, Edge, MAX_LIMIT, MAX_OFFSET};
use crate::config::{Backend, Settings};
use crate::event::{ArticleMeta, EventType};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::scoring::Aggregate;

const HOUR: i64 = 3_600_000;
/// The trending profile's half-life (DESIGN §3 defaults).
const TRENDING_HALF_LIFE_MS: f64 = 2.0 * HOUR as f64;

struct Api {
    router: Edge,
    cache: std::sync::Arc<crate::api::cache::Cache>,
    store: std::sync::Arc<dyn crate::store::Store>,
    articles: Vec<ArticleMeta>,
    metrics: Metrics,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Api {
    /// The router over a memory store holding `articles`, with `events`
    /// applied; the cache as configured by default (1 s).
    async fn new(articles: &[ArticleMeta], events: &[(EventType, &str, i64, f64)]) -> Api {
        let mut settings = Settings::defaults();
        settings.store.backend = Backend::Memory;
        settings.api.cors_allowed_origins = vec!["https://news.example.com".into()];
        let store = crate::store::connect(&settings).await.unwrap();
        store.publish(articles).await.unwrap();
        let metrics = Metrics::new();
        let store_state = crate::dependency::Dependency::new("store", metrics.clone());
        let state = ApiState::new(&settings, store.clone(), metrics.clone(), None, store_state);
        let cache = Some(state.cache.clone());
        let cors = settings.api.cors_allowed_origins.clone();
        let api = Api {
            cache: state.cache.clone(),
            router: edge(router(state, None), &metrics, &cors, cache),
            store,
            articles: articles.to_vec(),
            metrics,
        };
        api.apply(events).await;
        api
    }

    /// `events` (kind, article, time, units) applied to the store, each
    /// article's in its section and tags.
    async fn apply(&self, events: &[(EventType, &str, i64, f64)]) {
        let profiles = crate::scoring::profiles(&Settings::defaults().scoring);
        let mut batch = Aggregate::new(profiles, now_ms());
        for (kind, id, at, units) in events {
            let meta = self.articles.iter().find(|a| a.article_id == *id);
            let section = meta.and_then(|m| m.section.as_deref());
            let tags = meta.map(|m| m.tags.clone()).unwrap_or_default();
            batch.add(*kind, id, section, &tags, *at, *units);
        }
        assert!(self.store.apply(&batch).await.unwrap().conflicts.is_empty());
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The cache's (hits, misses) so far.
    fn cache_counts(&self) -> (u64, u64) {
        let count = |l| self.metrics.cache.with_label_values(&[l]).get();
        (count("hit"), count("miss"))
    }

    /// Answers the cache holds.
    fn cache_entries(&self) -> u64 {
        self.cache.entries()
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }
}

fn article(id: &str, section: &str, tags: &[&str], published_at_ms: i64) -> ArticleMeta {
    ArticleMeta {
        article_id: id.into(),
        title: Some(format!("Title of {id}")),
        url: Some(format!("https://news.example.com/{id}")),
        section: Some(section.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        published_at_ms: Some(published_at_ms),
        summary: Some(format!("What {id} is about.")),
        ..ArticleMeta::default()
    }
}

/// Σ weight · units · 2^(−(at − t)/h) under trending's default weights.
fn trending(events: &[(EventType, &str, i64, f64)], id: &str, at: i64) -> f64 {
    events
        .iter()
        .filter(|e| e.1 == id)
        .map(|(kind, _, t, units)| {
            let w = match kind {
                EventType::PageView => 1.0,
                EventType::Share => 5.0,
                EventType::Engagement => 0.05,
            };
            w * units * (-((at - t) as f64) / TRENDING_HALF_LIFE_MS).exp2()
        })
        .sum()
}

fn traffic(now: i64) -> Vec<(EventType, &'static str, i64, f64)> {
    let mut events = Vec::new();
    for i in 0..40 {
        events.push((EventType::PageView, "a", now - i * 90_000, 1.0));
    }
    for i in 0..25 {
        events.push((EventType::PageView, "b", now - 3 * HOUR + i * 60_000, 1.0));
        events.push((EventType::Engagement, "b", now - 2 * HOUR, 30.0));
    }
    events.push((EventType::Share, "c", now - 10 * 60_000, 1.0));
    events.push((EventType::PageView, "c", now - 5 * HOUR, 1.0));
    events
}

fn newsroom(now: i64) -> Vec<ArticleMeta> {
    vec![
        article("a", "news", &["budget"], now - 2 * HOUR),
        article("b", "sport", &["football"], now - 30 * HOUR),
        article("c", "news", &["budget", "council"], now - HOUR),
    ]
}

#[tokio::test]
async fn rankings_follow_the_formula_and_filter_by_section_tag_and_age() {
    let now = now_ms();
    let events = traffic(now);
    let api = Api::new(&newsroom(now), &events).await;
    let before = now_ms();
    let r = api.get("/v1/rankings/trending?limit=3").await;
    let after = now_ms();
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    let items = body["items"].as_array().unwrap();
    let mut want: Vec<(&str, f64)> = ["a", "b", "c"]
        .iter()
        .map(|id| (*id, trending(&events, id, before)))
        .collect();
    want.sort_by(|x, y| y.1.total_cmp(&x.1));
    let got: Vec<&str> = items
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want.iter().map(|w| w.0).collect::<Vec<_>>());
    for (item, (id, _)) in items.iter().zip(&want) {
        // Decayed to a moment between the request and its answer.
        let (hi, lo) = (trending(&events, id, before), trending(&events, id, after));
        let score = item["score"].as_f64().unwrap();
        assert!(
            score <= hi * (1.0 + 1e-12) && score >= lo * (1.0 - 1e-12),
            "{id}: {score} not in [{lo}, {hi}]"
        );
        assert_eq!(item["summary"], format!("What {id} is about."));
    }

    let news = api.get("/v1/rankings/trending?section=News").await.json();
    let ids: Vec<&str> = news["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(news["section"], "news");
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| *i == "a" || *i == "c"), "{ids:?}");
    // A tag and a section: the tag's articles in that section.
    let both = api
        .get("/v1/rankings/trending?tag=budget&section=news")
        .await
        .json();
    let ids: Vec<&str> = both["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{both}");
    let none = api
        .get("/v1/rankings/trending?tag=budget&section=sport")
        .await
        .json();
    assert_eq!(none["items"], serde_json::json!([]));
    let council = api.get("/v1/rankings/trending?tag=council").await.json();
    assert_eq!(council["items"][0]["article_id"], "c");
    assert_eq!(council["items"].as_array().unwrap().len(), 1);
    // b was published 30 hours ago.
    let recent = api
        .get("/v1/rankings/trending?published_within=24h&limit=5")
        .await
        .json();
    let ids: Vec<&str> = recent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"b") && ids.len() == 2, "{ids:?}");
    assert_eq!(recent["published_within_seconds"], 86_400);
    // A window is rounded up to one of a few: 20h and 86400s are the same
    // list as 24h (one stream poller); 1441m, a minute more, and 25h are
    // 2 days, which takes b in.
    for within in ["20h", "1441m", "86400s"] {
        let same = api
            .get(&format!(
                "/v1/rankings/trending?published_within={within}&limit=5"
            ))
            .await
            .json();
        let want = if within == "1441m" { 172_800 } else { 86_400 };
        assert_eq!(same["published_within_seconds"], want, "{within}");
    }
    let wider = api
        .get("/v1/rankings/trending?published_within=25h&limit=5")
        .await
        .json();
    assert_eq!(wider["published_within_seconds"], 172_800);
    assert_eq!(wider["items"].as_array().unwrap().len(), 3, "{wider}");
    let second = api
        .get("/v1/rankings/trending?limit=1&offset=1")
        .await
        .json();
    assert_eq!(second["items"][0]["rank"], 2);
    assert_eq!(second["items"][0]["article_id"], want[1].0);

    let before = now_ms();
    let tags = api.get("/v1/rankings/trending/tags?limit=2").await.json();
    let after = now_ms();
    // budget holds a and c: the sum of their scores, decayed to a moment
    // between the request and its answer.
    assert_eq!(tags["items"][0]["tag"], "budget");
    let budget = tags["items"][0]["score"].as_f64().unwrap();
    let sum = |at| trending(&events, "a", at) + trending(&events, "c", at);
    let (hi, lo) = (sum(before), sum(after));
    assert!(
        budget <= hi * (1.0 + 1e-6) && budget >= lo * (1.0 - 1e-6),
        "{budget} not in [{lo}, {hi}]"
    );
}

#[tokio::test]
async fn bad_parameters_are_400s_that_name_the_parameter() {
    let api = Api::new(&[], &[]).await;
    for (uri, needle) in [
        (
            "/v1/rankings/trending?limit=0",
            "limit must be between 1 and 100",
        ),
        (
            "/v1/rankings/trending?limit=ten",
            "limit must be between 1 and 100",
        ),
        (
            "/v1/rankings/trending?limit=1&limit=2",
            "duplicate field `limit`",
        ),
        (
            "/v1/rankings/trending?offset=-1",
            "offset must be between 0 and 10000",
        ),
        ("/v1/rankings/trending?section=", "section must be a name"),
        (
            "/v1/rankings/trending?published_within=2days",
            "published_within must be",
        ),
        ("/v1/rankings/trending?limt=5", "unknown field `limt`"),
        (
            "/v1/rankings/trending/tags?section=news",
            "unknown field `section`",
        ),
        (
            "/v1/stream/rankings/trending?offset=5",
            "unknown field `offset`",
        ),
        (
            "/v1/index?before=yesterday",
            "before must be a next_before cursor",
        ),
        ("/v1/index?limit=101", "limit must be between 1 and 100"),
    ] {
        let r = api.get(uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        let body = r.json();
        assert_eq!(body["error"]["code"], "invalid_parameter", "{uri}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{uri}: {message}");
    }
    // A name with no letter or digit is no article's section: an empty list.
    let r = api.get("/v1/rankings/trending?section=%3F%3F").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["items"], serde_json::json!([]));
    let r = api.get("/v1/rankings/hourly").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json()["error"]["message"],
        "unknown ranking profile \"hourly\""
    );
    let long = "x".repeat(257);
    let r = api.get(&format!("/v1/articles/{long}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_bound_the_document_declares_is_the_one_the_code_enforces() {
    let api = Api::new(&[], &[]).await;
    let doc = api.get("/openapi.json").await.json();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{profile}", "trending").replace("{id}", "a");
        for p in item["get"]["parameters"].as_array().into_iter().flatten() {
            let (name, schema) = (p["name"].as_str().unwrap(), &p["schema"]);
            if p["in"] != "query" || schema["type"] != "integer" {
                continue;
            }
            let (min, max) = (
                schema["minimum"].as_u64().unwrap(),
                schema["maximum"].as_u64().unwrap(),
            );
            for (value, ok) in [(min, true), (max, true), (max + 1, false)]
                .into_iter()
                .chain((min > 0).then(|| (min - 1, false)))
            {
                let status = if path.starts_with("/v1/stream") {
                    // A stream answers its headers at once; its body is endless.
                    let req = Request::get(format!("{uri}?{name}={value}"))
                        .body(Body::empty())
                        .unwrap();
                    api.router.clone().oneshot(req).await.unwrap().status()
                } else {
                    api.get(&format!("{uri}?{name}={value}")).await.status
                };
                assert_eq!(status.is_success(), ok, "{uri}?{name}={value}: {status}");
                checked += 1;
            }
        }
    }
    // limit (1..=100) on six routes, offset (0..=10000) on three.
    assert_eq!(checked, 6 * 4 + 3 * 3, "{doc}");
    let param = |name: &str| {
        doc["paths"]["/v1/rankings/{profile}"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(param("limit")["schema"]["maximum"], MAX_LIMIT as u64);
    assert_eq!(param("limit")["required"], false);
    assert_eq!(param("offset")["schema"]["maximum"], MAX_OFFSET as u64);
}

#[tokio::test]
async fn the_index_pages_newest_first_and_article_pages_count_events() {
    let now = now_ms();
    let events = traffic(now);
    let api = Api::new(&newsroom(now), &events).await;
    let first = api.get("/v1/index?limit=2").await.json();
    let ids: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c", "a"]);
    let cursor = first["next_before"].as_str().unwrap();
    let rest = api
        .get(&format!("/v1/index?limit=2&before={cursor}"))
        .await
        .json();
    assert_eq!(rest["items"][0]["article_id"], "b");
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_before"], Value::Null);
    let sport = api.get("/v1/index?section=sport").await.json();
    assert_eq!(sport["items"].as_array().unwrap().len(), 1);

    let b = api.get("/v1/articles/b").await.json();
    assert_eq!(b["counts"]["page_view"], 25);
    assert_eq!(b["counts"]["engagement"], 25);
    assert_eq!(b["section"], "sport");
    assert_eq!(b["profiles"][0]["profile"], "trending");
    assert_eq!(b["profiles"][0]["rank_in_section"], 1);
    let r = api.get("/v1/articles/nobody").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only_and_bodies_are_bounded() {
    let api = Api::new(&[], &[]).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/rankings/trending")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = api.send(preflight("https://news.example.com")).await;
    assert!(allowed.status.is_success());
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://news.example.com"
    );
    let refused = api.send(preflight("https://elsewhere.example")).await;
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
    let big = Request::get("/v1/rankings")
        .header(
            "content-length",
            (super::MAX_REQUEST_BODY_BYTES + 1).to_string(),
        )
        .body(Body::from(vec![b'x'; super::MAX_REQUEST_BODY_BYTES + 1]))
        .unwrap();
    assert_eq!(api.send(big).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(api.get("/nowhere").await.status, StatusCode::NOT_FOUND);
}

/// The document declares every route a client or an operator calls, each
/// response with a body has an example, and `occurred_at` is declared as
/// what is accepted: an integer or RFC 3339 text (DESIGN §15).
#[tokio::test]
async fn the_document_declares_every_route_with_an_example_per_response() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    let doc = api.get("/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/healthz",
        "/readyz",
        "/widget.js",
        "/tracker.js",
        "/v1/events",
    ] {
        assert!(paths.contains_key(route), "{route} is not declared");
    }
    let schemas = &doc["components"]["schemas"];
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => schema.clone(),
        }
    };
    let mut missing = Vec::new();
    let mut with_bodies = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    with_bodies += 1;
                    let has = content.get("example").is_some()
                        || content.get("examples").is_some()
                        || resolve(&content["schema"]).get("example").is_some();
                    if !has {
                        missing.push(format!("{method} {path} {status} {media}"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "no example: {missing:#?}");
    assert!(with_bodies >= 50, "{with_bodies} responses with a body");
    let occurred_at = &schemas["Common"]["properties"]["occurred_at"];
    let kinds: Vec<&str> = occurred_at["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{occurred_at}"))
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["integer", "string"], "{occurred_at}");
    assert_eq!(occurred_at["oneOf"][1]["format"], "date-time");
}
