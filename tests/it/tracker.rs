//! The tracker (`/tracker.js`) on an article page of another origin, in
//! headless Chromium over WebDriver: a reader opens the page, stays, clicks
//! a share button and leaves; the rankings then count exactly one page
//! view, one share, and the engaged seconds of the visit. Also its size,
//! and that while its collector is down the script throws nothing and
//! writes nothing to the console (the browser still reports each failed
//! request there itself, which no script can prevent).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::webdriver::Browser;

fn article_page(collector: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A story</title>
<script>window.__errors = [];
addEventListener("error", (e) => window.__errors.push(String(e.message)));
addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));</script>
<script defer src="{collector}/tracker.js" data-article-id="t1" data-section="news" data-tags="budget"></script>
</head><body><h1>The council approves the budget</h1><p>Story text.</p>
<button id="share" data-popularity-share="whatsapp">Share on WhatsApp</button></body></html>"#
    )
}

/// Serves `html` at `/` on `listener` (the news site's origin).
async fn serve(listener: tokio::net::TcpListener, html: String) {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_a_page_with_the_tracker_counts_one_view_one_share_and_the_time_spent() {
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", site.local_addr().unwrap());
    let kafka = Kafka::start(2);
    let mut s = settings(&kafka, None);
    s.api.cors_allowed_origins = vec![origin.clone()];
    let app = spawn_app(s).await;
    // Its section comes from its metadata, not from the page.
    kafka
        .send_json(
            &kafka.articles,
            "t1",
            &serde_json::json!({"type": "article_published", "article_id": "t1", "title": "T1",
                                "section": "News", "published_at": popularity::now_ms()}),
        )
        .await;
    tokio::spawn(serve(site, article_page(&app.base)));

    let browser = Browser::start().await;
    let opened = Instant::now();
    browser.open(&format!("{origin}/")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    browser.click("#share").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = browser.eval("return window.__errors;").await;
    // Leaving the page sends the engaged time with a beacon.
    browser.open("about:blank").await;
    let stayed = opened.elapsed().as_secs_f64();
    assert_eq!(errors, Value::Array(vec![]), "errors in the page");

    let counts = || async { app.get("/v1/articles/t1").await.1["counts"].clone() };
    wait_until("the visit counted", Duration::from_secs(30), || async {
        counts().await["engagement"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = counts().await;
    assert_eq!(
        (c["page_view"].clone(), c["share"].clone()),
        (1.into(), 1.into()),
        "{c}"
    );
    assert_eq!(c["engagement"], 1, "{c}");
    // The trending score is 1 per view, 5 per share and 0.05 per engaged
    // second, decayed by at most a few seconds of a 2-hour half-life.
    let (_, page) = app.get("/v1/articles/t1").await;
    let score = page["profiles"][0]["score"].as_f64().unwrap();
    let seconds = (score - 6.0) / 0.05;
    println!("tracker: {seconds:.1} engaged seconds counted for a visit of {stayed:.1} s");
    // Active while input is less than 5 s old: from load until 5 s after the
    // click, and never more than the visit.
    assert!(
        seconds >= 4.5 && seconds <= stayed + 1.0,
        "{seconds} engaged seconds for a visit of {stayed} s"
    );
    let (_, section) = app.get("/v1/rankings/trending?section=news").await;
    assert_eq!(section["items"][0]["article_id"], "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_is_small_and_quiet_when_the_collector_is_down() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    let r = app
        .http
        .get(format!("{}/tracker.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=86400"));
    let script = r.bytes().await.unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &script).unwrap();
    let gzipped = gz.finish().unwrap().len();
    println!("tracker.js: {} bytes, {gzipped} gzipped", script.len());
    assert!(gzipped < 2048, "tracker.js is {gzipped} bytes gzipped");

    // The page loads the script from a collector that then goes away.
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", site.local_addr().unwrap());
    let script_host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script_origin = format!("http://{}", script_host.local_addr().unwrap());
    let body = String::from_utf8(script.to_vec()).unwrap();
    // The script's origin serves it, but its collector is down: every
    // post is a 503, as a collector without Kafka answers.
    let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let counted = posts.clone();
    let only_script = axum::Router::new()
        .route(
            "/tracker.js",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "text/javascript")], body) }
            }),
        )
        .route(
            "/v1/events",
            axum::routing::post(move |body: String| {
                counted.lock().unwrap().push(body);
                async {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("access-control-allow-origin", "*"), ("retry-after", "5")],
                        "",
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(script_host, only_script).await.unwrap() });
    tokio::spawn(serve(site, article_page(&script_origin)));
    let browser = Browser::start().await;
    browser.open(&format!("{origin}/")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser.click("#share").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = browser.eval("return window.__errors;").await;
    assert_eq!(errors, Value::Array(vec![]), "errors in the page");
    // The browser reports each failed request itself (source "network");
    // the script adds nothing of its own to the console.
    let console = browser.console().await;
    let own: Vec<&Value> = console
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] != "network")
        .collect();
    assert!(own.is_empty(), "the tracker wrote to the console: {own:?}");
    // It sent the page view, and with the share the page view again from
    // its queue of failed sends.
    let posts = posts.lock().unwrap().clone();
    assert!(posts.len() >= 2, "{posts:?}");
    assert!(posts[0].contains("\"page_view\""), "{posts:?}");
    let retried = posts[1..]
        .iter()
        .any(|p| p.contains("\"share\"") && p.contains("\"page_view\""));
    assert!(
        retried,
        "the failed page view was not sent again: {posts:?}"
    );
}
