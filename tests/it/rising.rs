//! What is taking off (DESIGN §14): the rising list and its stream, checked
//! against the formula computed here from the produced events.

use serde_json::{json, Value};

use crate::fixtures::*;
use crate::helpers::*;

const DAY: i64 = 24 * HOUR;

/// `rising`, `rate_short` and `rate_long` of an article with `events`
/// (times, weights) at `at`, by DESIGN §14 with the default settings.
fn expected(events: &[(i64, f64)], at: i64) -> (f64, f64, f64) {
    let ln2 = std::f64::consts::LN_2;
    let short = direct_score(events, at, TRENDING_H);
    let long = direct_score(events, at, POPULAR_H);
    let rate_short = short * ln2 / (TRENDING_H / 1000.0);
    let rate_long = long * ln2 / (POPULAR_H / 1000.0);
    let rising = if rate_short > rate_long && short >= 5.0 {
        (rate_short - rate_long).powi(2) / rate_long.max(1.0 / 3600.0)
    } else {
        0.0
    };
    (rising, rate_short, rate_long)
}

/// The articles of `truth` that rise at `at`, highest first.
fn rising_at(truth: &[(&str, Vec<(i64, f64)>)], at: i64) -> Vec<(String, (f64, f64, f64))> {
    let mut out: Vec<_> = truth
        .iter()
        .map(|(id, events)| (id.to_string(), expected(events, at)))
        .filter(|(_, r)| r.0 > 0.0)
        .collect();
    out.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    out
}

fn check(body: &Value, want: &[(String, (f64, f64, f64))]) {
    let items = body["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["article_id"].as_str().unwrap())
        .collect();
    let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, want_ids, "{body}");
    for (item, (id, (rising, short, long))) in items.iter().zip(want) {
        for (field, value) in [
            ("rising", rising),
            ("rate_short", short),
            ("rate_long", long),
        ] {
            let got = item[field].as_f64().unwrap();
            assert!(
                rel_err(got, *value) <= 1e-7,
                "{id} {field}: {got} vs {value}"
            );
        }
        assert!(item["title"].is_string(), "{item}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rising_list_and_its_stream_follow_the_formula() {
    let redis = redis_server();
    let kafka = Kafka::start(3);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    let now = now_ms();
    let articles = [
        ("surge", now - 20 * MIN, vec!["economy"]),
        ("small-surge", now - 2 * HOUR, vec![]),
        ("steady", now - 8 * DAY, vec!["economy"]),
        ("old", now - 3 * DAY, vec!["economy"]),
    ];
    for (id, published, tags) in &articles {
        let a = json!({"type":"article_published","article_id":id,"title":format!("Title {id}"),
                       "section":"news","tags":tags,"published_at":published});
        kafka.send_json(&kafka.articles, id, &a).await;
    }
    wait_published(&app, &["surge", "small-surge", "steady", "old"]).await;

    // A surge now; a smaller one; a steady article read every 30 min for
    // a week, last 25 min ago (its short rate is below its long one); an
    // old story read a lot a day ago.
    let mut truth: Vec<(&str, Vec<(i64, f64)>)> = Vec::new();
    let plan: [(&str, Vec<i64>); 4] = [
        ("surge", (0..60).map(|i| now - i * 10_000).collect()),
        ("small-surge", (0..20).map(|i| now - i * 90_000).collect()),
        (
            "steady",
            (0..320).map(|i| now - 25 * MIN - i * 30 * MIN).collect(),
        ),
        (
            "old",
            (0..200).map(|i| now - 26 * HOUR - i * 60_000).collect(),
        ),
    ];
    let mut sent = 0;
    for (id, times) in plan {
        let mut events = Vec::new();
        for (i, at) in times.into_iter().enumerate() {
            let e = json!({"type":"page_view","article_id":id,"visitor_id":format!("{id}-{i}"),"occurred_at":at});
            kafka.send_json(&kafka.events, id, &e).await;
            events.push((at, 1.0));
            sent += 1;
        }
        truth.push((id, events));
    }
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
        sent as f64,
    )
    .await;

    let (status, body) = app.get("/v1/rising?limit=10").await;
    assert_eq!(status, 200, "{body}");
    let at = parse_time(body["generated_at"].as_str().unwrap());
    let want = rising_at(&truth, at);
    assert_eq!(
        want.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["surge", "small-surge"],
        "the test's own traffic: two surges rise, the steady and the old story do not"
    );
    check(&body, &want);
    assert_eq!(body["short_profile"], "trending");
    assert_eq!(body["long_profile"], "popular");

    // A tag's list: only its articles.
    let (_, tagged) = app.get("/v1/rising?tag=Economy").await;
    let at = parse_time(tagged["generated_at"].as_str().unwrap());
    let want: Vec<_> = rising_at(&truth, at)
        .into_iter()
        .filter(|(id, _)| id == "surge")
        .collect();
    check(&tagged, &want);
    let (_, offset) = app.get("/v1/rising?offset=1").await;
    assert_eq!(offset["items"][0]["article_id"], "small-surge", "{offset}");
    assert_eq!(offset["items"][0]["rank"], 2);

    // The stream sends the same list at connect, as `event: rising`.
    let (event, streamed) = app.first_frame("/v1/stream/rising?limit=5").await;
    assert_eq!(event, "rising");
    let at = parse_time(streamed["generated_at"].as_str().unwrap());
    check(&streamed, &rising_at(&truth, at));
    app.stop().await;
}
