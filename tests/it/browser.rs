//! The web page in headless Chromium, against a running `popularity demo`:
//! every widget shows items that the API returns. Writes its screenshot
//! under the target directory (`screenshot.png` in `CARGO_TARGET_TMPDIR`),
//! never into the source tree; docs/screenshot.png is refreshed by copying it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{exited_by, free_port};

fn chromium(args: &[&str]) -> String {
    let mut all = vec!["--window-size=1280,900", "--virtual-time-budget=8000"];
    all.extend_from_slice(args);
    crate::helpers::chromium(&all)
}

/// The values of `attr="…"` inside `<section id="{id}">…</section>`.
fn widget_values(dom: &str, id: &str, attr: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no widget {id} in the page"));
    let end = start + dom[start..].find("</section>").unwrap();
    let needle = format!("{attr}=\"");
    dom[start..end]
        .match_indices(&needle)
        .map(|(i, _)| {
            let rest = &dom[start + i + needle.len()..end];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

async fn api_values(http: &reqwest::Client, url: &str, field: &str) -> Vec<String> {
    let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

/// Kills the demo if the test fails before it stops it.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_shows_what_the_api_returns_in_every_widget() {
    let port = free_port();
    let demo = Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut demo = Demo(demo);
    let demo = &mut demo.0;
    let mut first = String::new();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "popularity demo");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // limit=10: a query the page does not make, so the page never gets this
    // loop's cached answer.
    while api_values(
        &http,
        &format!("{base}/v1/rankings/trending?limit=10"),
        "article_id",
    )
    .await
    .len()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "the demo never ranked five articles"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The API just before and just after the page read it, with room for
    // lists that moved meanwhile (the demo keeps producing traffic). The
    // page's queries (limit 5, 8, 12) are its own, so it is answered after
    // `before`; `after` waits out the response cache (1 s by default) so it
    // is computed after the page, not served from `before`'s entries.
    let lists = || async {
        let top = api_values(
            &http,
            &format!("{base}/v1/rankings/trending?limit=50"),
            "article_id",
        )
        .await;
        let reads = api_values(
            &http,
            &format!("{base}/v1/rankings/popular?limit=50&published_within=12h"),
            "article_id",
        )
        .await;
        let index = api_values(&http, &format!("{base}/v1/index?limit=50"), "article_id").await;
        let tags = api_values(
            &http,
            &format!("{base}/v1/rankings/trending/tags?limit=50"),
            "tag",
        )
        .await;
        [top, reads, index, tags]
    };
    let before_asked = Instant::now();
    let before = lists().await;
    let dom = chromium(&["--dump-dom", &format!("{base}/")]);
    tokio::time::sleep_until((before_asked + Duration::from_millis(1200)).into()).await;
    let after = lists().await;
    let [top, reads, index, tags] = std::array::from_fn(|i| {
        let mut both = before[i].clone();
        both.extend(after[i].iter().cloned());
        both
    });
    for (widget, attr, api, want) in [
        ("most-popular", "data-article-id", &top, 5),
        ("popular-reads", "data-article-id", &reads, 1),
        ("news-index", "data-article-id", &index, 8),
        ("popular-tags", "data-tag", &tags, 3),
    ] {
        let shown = widget_values(&dom, widget, attr);
        assert!(shown.len() >= want, "{widget} shows {shown:?}");
        for v in &shown {
            assert!(
                api.contains(v),
                "{widget} shows {v}, which the API does not return: {api:?}"
            );
        }
    }
    assert!(dom.contains("ago"), "Popular Reads shows relative times");

    let shot = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshot.png");
    chromium(&[&format!("--screenshot={shot}"), &format!("{base}/")]);
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);

    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let status = exited_by(
        demo,
        Instant::now() + Duration::from_secs(30),
        "the demo on Ctrl-C",
    );
    assert!(status.success(), "demo exited with {status}");
    drop(stdout);
}
