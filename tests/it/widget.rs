//! The embeddable widget in headless Chromium, on a page of another origin:
//! three widgets show what the API returns, follow a ranking change without
//! a reload, and show hostile titles and summaries as text.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::views;
use crate::helpers::*;

const HOSTILE_TITLE: &str = r#"<img src=x onerror="window.__pwned='title'">"#;
const HOSTILE_SUMMARY: &str = "<script>window.__pwned='summary'</script>";

/// The news site's page: three widgets, and a log of what each shows over
/// time (first article id and the time, whenever its list changes).
fn page(api: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A news site</title>
<script defer src="{api}/widget.js"></script></head><body>
<div id="w0" data-popularity-widget data-profile="trending" data-limit="5"></div>
<div id="w1" data-popularity-widget data-profile="trending" data-section="news" data-limit="3"></div>
<div id="w2" data-popularity-widget data-profile="popular" data-tag="red" data-limit="2"></div>
<pre id="log"></pre><p id="pwned"></p>
<!-- The page finishes loading, and is read, when the test releases this. -->
<img src="/hold" alt="" width="1" height="1">
<script>
  const log = document.getElementById("log");
  for (const id of ["w0", "w1", "w2"]) {{
    const root = document.getElementById(id);
    new MutationObserver(() => {{
      const ids = [...root.querySelectorAll("li[data-article-id]")].map((li) => li.dataset.articleId);
      log.textContent += id + " " + Date.now() + " " + ids.join(",") + "\n";
    }}).observe(root, {{ childList: true, subtree: true }});
  }}
  setInterval(() => {{ document.getElementById("pwned").textContent = "pwned:" + String(window.__pwned); }}, 200);
</script></body></html>"#
    )
}

/// Serves the page; its `/hold` image answers once `release` is notified,
/// which ends the page's loading (and makes Chromium write its DOM).
async fn serve_page(
    listener: tokio::net::TcpListener,
    html: String,
    release: std::sync::Arc<tokio::sync::Notify>,
) {
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                let html = html.clone();
                async move { axum::response::Html(html) }
            }),
        )
        .route(
            "/hold",
            axum::routing::get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
    axum::serve(listener, app).await.unwrap();
}

async fn publish(kafka: &Kafka, id: &str, title: &str, summary: &str, tags: &[&str]) {
    kafka
        .send_json(
            &kafka.articles,
            id,
            &json!({"type":"article_published","article_id":id,"title":title,"summary":summary,
                    "url":format!("https://news.example.com/{id}"),"section":"news","tags":tags,
                    "published_at":now_ms() - 30 * 60_000}),
        )
        .await;
}

/// (time, first article id) of each change of widget `id` in the log.
fn changes(dom: &str, id: &str) -> Vec<(i64, String)> {
    let start = dom.find("<pre id=\"log\">").expect("the log");
    let end = start + dom[start..].find("</pre>").unwrap();
    dom[start + 14..end]
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            (parts.next()? == id).then_some(())?;
            let at = parts.next()?.parse().ok()?;
            let first = parts.next().unwrap_or("").split(',').next()?.to_string();
            Some((at, first))
        })
        .collect()
}

/// A news site's origin (its listener, not yet serving) and the service,
/// which allows that origin.
struct Site {
    page_listener: tokio::net::TcpListener,
    page_origin: String,
    kafka: Kafka,
    app: TestApp,
}

impl Site {
    async fn start() -> Site {
        Site::start_with(|_| {}).await
    }

    async fn start_with(change: impl FnOnce(&mut popularity::config::Settings)) -> Site {
        let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let page_origin = format!("http://{}", page_listener.local_addr().unwrap());
        let kafka = Kafka::start(2);
        let mut s = settings(&kafka, None);
        s.api.cors_allowed_origins = vec![page_origin.clone()];
        change(&mut s);
        let app = spawn_app(s).await;
        Site {
            page_listener,
            page_origin,
            kafka,
            app,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widgets_on_another_origin_show_the_api_follow_changes_and_run_no_injected_code() {
    let Site {
        page_listener,
        page_origin,
        kafka,
        app,
    } = Site::start().await;
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn(serve_page(page_listener, page(&app.base), release.clone()));

    publish(&kafka, "x1", HOSTILE_TITLE, HOSTILE_SUMMARY, &["red"]).await;
    publish(
        &kafka,
        "x2",
        "Council approves the budget",
        "A short summary.",
        &["red"],
    )
    .await;
    views(&kafka, "x1", 0..4).await;
    views(&kafka, "x2", 0..1).await;
    wait_until("both articles ranked", Duration::from_secs(60), || async {
        app.get("/v1/rankings/trending").await.1["items"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a[0]["title"].is_string())
    })
    .await;

    let url = format!("{page_origin}/");
    let browser =
        std::thread::spawn(move || chromium(&["--timeout=60000", "--dump-dom", url.as_str()]));
    // Once the three widgets hold their streams, readers move the list.
    let streams =
        "popularity_http_requests_total{route=\"/v1/stream/rankings/{profile}\",status=\"200\"}";
    wait_until("three widget streams", Duration::from_secs(20), || async {
        app.metric(streams).await >= 3.0
    })
    .await;
    // The first frame goes out at connect; let the page draw it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed_at = now_ms();
    views(&kafka, "x2", 1..10).await;
    // Time for the change to reach the page, then the page may finish.
    tokio::time::sleep(Duration::from_secs(4)).await;
    release.notify_one();
    let dom = tokio::task::spawn_blocking(move || browser.join().unwrap())
        .await
        .unwrap();

    let w0 = changes(&dom, "w0");
    assert_eq!(w0.first().map(|c| c.1.as_str()), Some("x1"), "{dom}");
    let moved = w0
        .iter()
        .find(|(at, first)| *at >= changed_at && first == "x2")
        .unwrap_or_else(|| panic!("the widget never showed the change: {w0:?}"));
    let took = moved.0 - changed_at;
    println!("widget: list changed {took} ms after the readers moved it");
    assert!(took <= 2_000, "the widget took {took} ms");
    for (id, want) in [("w1", "x2"), ("w2", "x2")] {
        assert_eq!(
            changes(&dom, id).last().map(|c| c.1.as_str()),
            Some(want),
            "{id}: {dom}"
        );
    }
    // Hostile text shows as text and runs nothing.
    assert!(dom.contains("pwned:undefined"), "injected code ran: {dom}");
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "title not shown as text: {dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;window.__pwned"),
        "summary not shown as text"
    );
    assert!(
        !dom.contains("<img src=\"x\""),
        "the title became an element"
    );
    // Links come with their http(s) URL, the list is a list.
    assert!(dom.contains("href=\"https://news.example.com/x2\""));
    assert!(dom.contains("<ol class=\"popularity-list popularity-ranking\">"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_script_is_served_with_long_lived_caching() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    let r = app
        .http
        .get(format!("{}/widget.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let cache = r.headers()["cache-control"].to_str().unwrap().to_string();
    assert!(cache.contains("max-age=86400"), "{cache}");
    let etag = r.headers()["etag"].clone();
    assert!(r.text().await.unwrap().contains("data-popularity-widget"));
    let again = app
        .http
        .get(format!("{}/widget.js", app.base))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_event_source_the_widget_polls_and_still_follows_changes() {
    let Site {
        page_listener,
        page_origin,
        kafka,
        app,
    } = Site::start().await;
    // A browser without EventSource, as some embedded web views are.
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Old browser</title>
<script>window.EventSource = undefined;</script>
<script src="{}/widget.js"></script></head><body>
<div id="w" data-popularity-widget data-profile="trending" data-limit="3" data-refresh="2"></div>
</body></html>"#,
        app.base
    );
    tokio::spawn(serve_page(
        page_listener,
        html,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    ));
    publish(&kafka, "p1", "First", "One.", &["red"]).await;
    publish(&kafka, "p2", "Second", "Two.", &["red"]).await;
    views(&kafka, "p1", 0..3).await;
    views(&kafka, "p2", 0..1).await;
    wait_until("both articles ranked", Duration::from_secs(60), || async {
        app.get("/v1/rankings/trending").await.1["items"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;

    let browser = crate::webdriver::Browser::start().await;
    browser.open(&format!("{page_origin}/")).await;
    let first = "const li = document.querySelector('#w li[data-article-id]'); return li && li.dataset.articleId;";
    let shown = browser
        .wait_for("the polled list", Duration::from_secs(10), first)
        .await;
    assert_eq!(shown, "p1");
    let changed = std::time::Instant::now();
    views(&kafka, "p2", 1..10).await;
    browser
        .wait_for(
            "the polled list to follow the readers",
            Duration::from_secs(15),
            "const li = document.querySelector('#w li[data-article-id]'); return li && li.dataset.articleId === 'p2';",
        )
        .await;
    println!(
        "polling widget: followed the change in {} ms",
        changed.elapsed().as_millis()
    );
    let streams =
        "popularity_http_requests_total{route=\"/v1/stream/rankings/{profile}\",status=\"200\"}";
    let polls = "popularity_http_requests_total{route=\"/v1/rankings/{profile}\",status=\"200\"}";
    assert_eq!(app.metric(streams).await, 0.0, "a stream was opened");
    assert!(app.metric(polls).await >= 2.0, "the widget did not poll");
}

/// A widget whose stream is refused (the replica holds as many as it may)
/// polls instead of staying blank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_whose_stream_is_refused_polls_instead() {
    let Site {
        page_listener,
        page_origin,
        kafka,
        app,
    } = Site::start_with(|s| s.api.max_streams = 1).await;
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Busy</title>
<script src="{}/widget.js"></script></head><body>
<div id="w" data-popularity-widget data-profile="trending" data-limit="3" data-refresh="2"></div>
</body></html>"#,
        app.base
    );
    tokio::spawn(serve_page(
        page_listener,
        html,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    ));
    publish(&kafka, "b1", "Busy one", "One.", &["red"]).await;
    views(&kafka, "b1", 0..2).await;
    wait_until("the article ranked", Duration::from_secs(60), || async {
        app.get("/v1/rankings/trending").await.1["items"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    // Another client holds the replica's only stream.
    let held = app
        .http
        .get(format!("{}/v1/stream/rankings/trending?limit=9", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let browser = crate::webdriver::Browser::start().await;
    browser.open(&format!("{page_origin}/")).await;
    let shown = browser
        .wait_for(
            "the polled list",
            Duration::from_secs(15),
            "const li = document.querySelector('#w li[data-article-id]'); return li && li.dataset.articleId;",
        )
        .await;
    assert_eq!(shown, "b1");
    let refused =
        "popularity_http_requests_total{route=\"/v1/stream/rankings/{profile}\",status=\"503\"}";
    assert_eq!(
        app.metric(refused).await,
        1.0,
        "the widget's stream was not refused"
    );
    drop(held);
}
