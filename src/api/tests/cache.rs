//! The response cache through the router: cache headers and 304s, one
//! entry per path and query, hits answered before the handler (and before
//! routing), failures never kept.

use super::*;

#[tokio::test]
async fn answers_carry_cache_headers_and_revalidate_with_304() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    for uri in [
        "/v1/rankings",
        "/v1/rankings/trending",
        "/v1/rankings/trending/tags",
        "/v1/index",
        "/v1/articles/a",
        "/openapi.json",
    ] {
        let r = api.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.headers["cache-control"], "public, max-age=1", "{uri}");
        let etag = r.headers["etag"].clone();
        let again = api
            .send(
                Request::get(uri)
                    .header("if-none-match", etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(again.body.is_empty());
        // A weak tag (what a compressing proxy or CDN sends back) too.
        let weak = format!("W/{}", r.headers["etag"].to_str().unwrap());
        let again = api
            .send(
                Request::get(uri)
                    .header("if-none-match", weak)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{uri} weak");
    }
}

/// Answers are cached by path and parsed query: routes that share a
/// query string, or a profile, never answer for each other, and an invalid
/// query is refused even right after a valid one was cached.
#[tokio::test]
async fn each_route_is_cached_under_its_own_path_and_query() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    type Shape = fn(&Value) -> bool;
    let shapes: [(&str, Shape); 5] = [
        ("/v1/rankings", |v| v["profiles"].is_array()),
        ("/v1/rankings/trending?limit=2", |v| {
            v["items"][0]["article_id"].is_string() && v["profile"] == "trending"
        }),
        ("/v1/rankings/popular?limit=2", |v| {
            v["profile"] == "popular"
        }),
        ("/v1/rankings/trending/tags?limit=2", |v| {
            v["items"][0]["tag"].is_string()
        }),
        ("/v1/index?limit=2", |v| {
            v["items"].is_array() && v.get("next_before").is_some()
        }),
    ];
    let mut first = Vec::new();
    for (uri, shape) in shapes {
        let r = api.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(shape(&r.json()), "{uri}: {}", r.json());
        first.push(r);
    }
    for ((uri, shape), before) in shapes.iter().zip(&first) {
        let r = api.get(uri).await;
        assert!(shape(&r.json()), "{uri} from the cache: {}", r.json());
        assert_eq!(r.headers["etag"], before.headers["etag"], "{uri}");
        assert_eq!(r.body, before.body, "{uri}");
    }
    let refused = api.get("/v1/rankings/trending?limit=2&limit=0").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let refused = api.get("/v1/rankings/trending?limit=0").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let message = refused.json()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap_or_default().contains("limit"),
        "{message}"
    );
}

/// A fresh answer is served from the cache without its handler (a change
/// in the store shows only after the TTL); what is not a 200, and what is
/// not a GET, is neither kept nor given the cache's headers.
#[tokio::test]
async fn the_cache_answers_before_the_handler_and_keeps_only_successes() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    let uri = "/v1/rankings/trending?limit=1";
    let top = |r: &Answer| r.json()["items"][0]["article_id"].clone();
    let first = api.get(uri).await;
    assert_eq!(top(&first), "a");
    assert_eq!(api.cache_counts(), (0, 1));
    api.apply(&[(EventType::PageView, "b", now_ms(), 10_000.0)])
        .await;
    let cached = api.get(uri).await;
    assert_eq!((cached.status, top(&cached)), (StatusCode::OK, "a".into()));
    assert_eq!(cached.headers["etag"], first.headers["etag"]);
    assert_eq!(api.cache_counts(), (1, 1));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = api.get(uri).await;
    assert_eq!(top(&fresh), "b");
    assert_ne!(fresh.headers["etag"], first.headers["etag"]);
    assert_eq!(api.cache_counts(), (1, 2));

    for _ in 0..2 {
        let missing = api.get("/v1/rankings/nope").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(missing.headers.get("etag").is_none());
        assert!(missing.headers.get("cache-control").is_none());
    }
    assert_eq!(api.cache_counts(), (1, 4), "a 404 is computed every time");

    let head = api
        .send(Request::head(uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(api.cache_counts(), (1, 4), "a HEAD goes to the handler");
}

#[tokio::test]
async fn hits_answered_before_routing_keep_cors_gzip_and_their_route_in_the_metrics() {
    use std::io::Read as _;
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    let uri = "/v1/rankings/trending?limit=2";
    let ask = |headers: &[(&str, &str)]| {
        let mut req = Request::get(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Body::empty()).unwrap()
    };
    let origin = ("origin", "https://news.example.com");
    let first = api.send(ask(&[origin])).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(api.cache_counts(), (0, 1));

    let hit = api.send(ask(&[origin, ("accept-encoding", "gzip")])).await;
    assert_eq!(api.cache_counts(), (1, 1));
    assert_eq!(hit.headers["access-control-allow-origin"], origin.1);
    assert_eq!(hit.headers["content-encoding"], "gzip");
    let plain_etag = first.headers["etag"].to_str().unwrap();
    let gzip_etag = format!("{}-gzip\"", plain_etag.trim_end_matches('"'));
    assert_eq!(hit.headers["etag"], gzip_etag.as_str());
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(&hit.body[..])
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, first.body);

    let stranger = api.send(ask(&[("origin", "https://evil.example")])).await;
    assert_eq!(stranger.status, StatusCode::OK);
    assert!(stranger
        .headers
        .get("access-control-allow-origin")
        .is_none());
    let etag = first.headers["etag"].to_str().unwrap();
    let revalidated = api.send(ask(&[("if-none-match", etag)])).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(api.cache_counts(), (3, 1));

    let route = "/v1/rankings/{profile}";
    let m = &api.metrics;
    let count = |status| m.http_requests.with_label_values(&[route, status]).get();
    assert_eq!((count("200"), count("304")), (3, 1));
    let timed = m
        .http_duration
        .with_label_values(&[route])
        .get_sample_count();
    assert_eq!(timed, 4);
}

/// Spellings of one query are one answer, computed once (DESIGN §13):
/// 1,000 variants of `published_within` and of the order of parameters
/// are one entry per window, not one per spelling.
#[tokio::test]
async fn spellings_of_one_query_are_one_entry() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    let first = api
        .get("/v1/rankings/trending?limit=2&published_within=1h")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    for s in 1..=1_000 {
        let uri = if s % 2 == 0 {
            format!(
                "/v1/rankings/trending?published_within={}s&limit=2",
                3_600 - s
            )
        } else {
            format!(
                "/v1/rankings/trending?limit=2&published_within={}s",
                3_600 - s
            )
        };
        let r = api.get(&uri).await;
        assert_eq!(r.body, first.body, "{uri}");
    }
    // 2,600 to 3,599 s all round up to the 1h window: one computation.
    assert_eq!(api.cache_counts(), (1_000, 1));
    assert_eq!(api.cache_entries(), 1);
    let other = api
        .get("/v1/rankings/trending?limit=2&published_within=30m")
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(api.cache_entries(), 2);
}

/// No route takes a parameter it does not declare: each is a 400 naming it.
#[tokio::test]
async fn unknown_parameters_are_refused_on_every_route() {
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    for path in [
        "/v1/rankings",
        "/v1/sites",
        "/v1/rankings/trending",
        "/v1/rankings/trending/tags",
        "/v1/index",
        "/v1/articles/a",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/v1/stream/rankings/trending",
        "/v1/stream/rising",
        "/v1/stream/alerts",
        "/v1/rising",
    ] {
        let r = api.get(&format!("{path}?junk=1")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains("junk"), "{path}: {message}");
    }
}

/// A client that asks for brotli or zstd gets it, on a cached list and on
/// a script (before, only gzip was offered: a `br` client got the script
/// uncompressed).
#[tokio::test]
async fn brotli_and_zstd_clients_get_their_coding_on_lists_and_scripts() {
    use std::io::Read as _;
    let now = now_ms();
    let api = Api::new(&newsroom(now), &traffic(now)).await;
    for uri in ["/v1/rankings/trending?limit=5", "/widget.js"] {
        let plain = api.get(uri).await;
        assert_eq!(plain.status, StatusCode::OK);
        for (accept, coding) in [
            ("br", "br"),
            ("gzip, deflate, br, zstd", "br"),
            ("zstd", "zstd"),
            ("gzip;q=0.5, zstd", "zstd"),
        ] {
            let r = api
                .send(
                    Request::get(uri)
                        .header("accept-encoding", accept)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.headers["content-encoding"], coding, "{uri} {accept}");
            assert!(r.body.len() < plain.body.len(), "{uri} {coding}");
            let mut decoded = Vec::new();
            if coding == "br" {
                brotli::Decompressor::new(&r.body[..], 4096)
                    .read_to_end(&mut decoded)
                    .unwrap();
            } else {
                zstd::stream::read::Decoder::new(&r.body[..])
                    .unwrap()
                    .read_to_end(&mut decoded)
                    .unwrap();
            }
            assert_eq!(decoded, plain.body, "{uri} {coding}");
        }
    }
}
