//! The web page at `/` in headless Chromium, against a running `popularity
//! demo`: its five lists are the widget, and each shows what the API
//! returns; choosing a section re-points them. Writes its screenshot under
//! the target directory (`screenshot.png` in `CARGO_TARGET_TMPDIR`), never
//! into the source tree; docs/screenshot.png is refreshed by copying it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{exited_by, free_port};
use crate::webdriver::Browser;

/// What each list of the page shows: article ids (tags for Popular Tags),
/// and the sections Popular Reads and the News Index name, once every list
/// holds at least what the demo's traffic gives it.
const SHOWN: &str = r##"
const values = (id, attr) => [...document.querySelectorAll(`#${id} li[${attr}]`)].map((li) => li.getAttribute(attr));
const texts = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
const r = {
  top: values("most-popular", "data-article-id"),
  reads: values("popular-reads", "data-article-id"),
  index: values("news-index", "data-article-id"),
  tags: values("popular-tags", "data-tag"),
  rising: values("taking-off", "data-article-id"),
  read_sections: texts("#popular-reads .popularity-section"),
  index_sections: texts("#news-index .popularity-section"),
  read_times: texts("#popular-reads time"),
  read_summaries: texts("#popular-reads .popularity-summary").length,
  top_summaries: texts("#most-popular .popularity-summary").length,
};
return r.top.length >= 5 && r.reads.length >= 1 && r.index.length >= 8 && r.tags.length >= 3 && r.rising.length >= 1 ? r : null;
"##;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
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
        let rising = api_values(&http, &format!("{base}/v1/rising?limit=50"), "article_id").await;
        [top, reads, index, tags, rising]
    };
    // An outsider's made-up headline, posted as the page's own readers
    // would (same origin): counted for no list, shown nowhere.
    let fake = "BREAKING: read more at evil.example";
    let shares: Vec<Value> = (0..100)
        .map(|i| {
            serde_json::json!({"type": "share", "site": "beritasatu", "article_id": fake,
                                    "visitor_id": format!("x{i}"), "network": "x"})
        })
        .collect();
    let r = http
        .post(format!("{base}/v1/events"))
        .header("origin", &base)
        .body(serde_json::json!(shares).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The page under its Content-Security-Policy: no inline script, its own
    // scripts only; every answer refuses to be sniffed.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    let h = r.headers();
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self';"));
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let browser = Browser::start().await;
    let before_asked = Instant::now();
    let before = lists().await;
    browser.open(&format!("{base}/")).await;
    let shown = browser
        .wait_for("every list of the page", Duration::from_secs(20), SHOWN)
        .await;
    // `after` is computed after the page read what it shows.
    tokio::time::sleep_until(
        (before_asked.max(Instant::now()) + Duration::from_millis(1200)).into(),
    )
    .await;
    let after = lists().await;
    let [top, reads, index, tags, rising] = std::array::from_fn(|i| {
        let mut both = before[i].clone();
        both.extend(after[i].iter().cloned());
        both
    });
    // Every article is shown by its headline, never by its id.
    let headlines = browser
        .eval(
            "return [...document.querySelectorAll('li[data-article-id]')].map((li) => \
             [li.getAttribute('data-article-id'), li.querySelector('.popularity-title').textContent]);",
        )
        .await;
    let headlines = headlines.as_array().unwrap();
    assert!(headlines.len() >= 14, "{headlines:?}");
    for pair in headlines {
        let (id, title) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert!(!title.is_empty() && title != id, "{id} shown as {title:?}");
    }
    let page_text = browser.eval("return document.body.textContent;").await;
    assert!(!page_text.as_str().unwrap().contains("evil.example"));
    for (list, api) in [
        ("top", &top),
        ("reads", &reads),
        ("index", &index),
        ("tags", &tags),
        ("rising", &rising),
    ] {
        for v in strings(&shown[list]) {
            assert!(
                api.contains(&v),
                "{list} shows {v}, which the API does not return: {api:?}"
            );
        }
    }
    // Popular Reads as the reference sidebar: section, relative time and
    // summary; Most Popular titles only.
    let reads_shown = strings(&shown["reads"]).len();
    assert_eq!(
        strings(&shown["read_sections"]).len(),
        reads_shown,
        "{shown}"
    );
    assert!(
        strings(&shown["read_times"])
            .iter()
            .all(|t| t.ends_with(" ago") || t == "just now"),
        "{shown}"
    );
    assert_eq!(shown["read_summaries"], reads_shown, "{shown}");
    assert_eq!(shown["top_summaries"], 0, "{shown}");

    let shot = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshot.png");
    browser.screenshot(shot).await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);

    // Sections are shown by the names they were published with ("Special
    // Updates"), and chosen by name; choosing one re-points the lists that
    // follow it.
    let section = strings(&shown["index_sections"])[0].clone();
    let names = api_values(&http, &format!("{base}/v1/index?limit=100"), "section_name").await;
    assert!(
        names.contains(&section),
        "{section} is not a published name: {names:?}"
    );
    assert_ne!(
        section,
        section.to_lowercase(),
        "a name, not a slug: {section}"
    );
    let chosen = browser
        .eval(&format!(
            "const s = document.getElementById('section'); \
             const o = [...s.options].find((o) => o.textContent === {section:?}); \
             s.value = o.value; s.dispatchEvent(new Event('change')); return s.value;"
        ))
        .await;
    assert_eq!(
        chosen.as_str().unwrap(),
        section.to_lowercase().replace(' ', "-"),
        "the option's value is the slug"
    );
    let script = format!(
        "const t = [...document.querySelectorAll('#news-index .popularity-section')].map((e) => e.textContent); \
         return t.length > 0 && t.every((s) => s === {section:?}) ? t.length : null;"
    );
    browser
        .wait_for(
            "the News Index of one section",
            Duration::from_secs(20),
            &script,
        )
        .await;
    // Choosing a site re-points every list to that site's articles.
    browser
        .eval(
            "const s = document.getElementById('section'); s.value = ''; s.dispatchEvent(new Event('change')); \
             const t = document.getElementById('site'); t.value = 'jakarta-globe'; \
             t.dispatchEvent(new Event('change')); return t.value;",
        )
        .await;
    let script = "const l = [...document.querySelectorAll('#most-popular li[data-site], #news-index li[data-site]')]\
         .map((li) => li.getAttribute('data-site')); \
         return l.length >= 3 && l.every((s) => s === 'jakarta-globe') ? l.length : null;";
    browser
        .wait_for("the lists of one site", Duration::from_secs(20), script)
        .await;
    let options = browser
        .eval("return [...document.querySelectorAll('#site option')].map((o) => o.textContent);")
        .await;
    assert_eq!(
        options,
        serde_json::json!([
            "Whole network",
            "BeritaSatu",
            "Investor Daily",
            "Jakarta Globe",
            "BTV"
        ])
    );
    // The demo's article page carries the tracker: a visit there counts.
    browser
        .open(&format!("{base}/demo/article/btv/reader-test"))
        .await;
    // Its script, a file of its own under the page's policy, shows what
    // was counted.
    browser
        .wait_for(
            "the article page's counts",
            Duration::from_secs(10),
            "const c = document.getElementById('counts').textContent; return c.includes('page views') ? c : null;",
        )
        .await;
    browser.click("[data-popularity-share]").await;
    browser.open("about:blank").await;
    let counted = || async {
        let r = http
            .get(format!("{base}/v1/articles/reader-test?site=btv"))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["counts"].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted().await != serde_json::json!({"page_view": 1, "share": 1, "engagement": 1}) {
        assert!(
            Instant::now() < deadline,
            "the visit was not counted: {}",
            counted().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(browser);

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
