//! Articles: the News Index, article pages, recent reads, unpublishing, on both stores.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

/// Pages through `/v1/index` with `next_before` until the end.
async fn whole_index(app: &TestApp, section: Option<&str>, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/index?limit={limit}");
        if let Some(s) = section {
            path += &format!("&section={s}");
        }
        if let Some(b) = &before {
            path += &format!("&before={b}");
        }
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        ids.extend(
            items
                .iter()
                .map(|i| i["article_id"].as_str().unwrap().to_string()),
        );
        match body["next_before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => return ids,
        }
    }
    panic!("the index never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_lifecycle_news_index_article_pages_and_recent_reads_on_both_stores() {
    let redis = redis_server();
    for backend in ["redis", "memory"] {
        let kafka = Kafka::start(3);
        let app = spawn_app(settings(&kafka, (backend == "redis").then_some(&redis))).await;
        let base = now_ms() - 10 * MIN;
        // 25 articles, one a minute; n10 and n11 share a publication time;
        // n20..n24 are three days old.
        let mut expected: Vec<(i64, String, &str)> = Vec::new();
        for i in 0..25 {
            let id = format!("n{i:02}");
            let mut at = base - i * MIN;
            if i == 11 {
                at = base - 10 * MIN;
            }
            if i >= 20 {
                at = base - 72 * HOUR - i * MIN;
            }
            let section = if i % 2 == 0 { "news" } else { "business" };
            expected.push((at, id.clone(), section));
            kafka
                .send_json(
                    &kafka.articles,
                    &id,
                    &json!({"type":"article_published","article_id":id,"title":format!("T {id}"),
                            "section":section,"tags":["t"],"published_at":at}),
                )
                .await;
        }
        expected.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let all: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
        wait_until("the index", Duration::from_secs(60), || async {
            whole_index(&app, None, 100).await.len() == 25
        })
        .await;
        assert_eq!(
            whole_index(&app, None, 7).await,
            all,
            "{backend}: paging repeats or misses"
        );
        assert_eq!(whole_index(&app, None, 1).await, all);
        let news: Vec<String> = expected
            .iter()
            .filter(|e| e.2 == "news")
            .map(|e| e.1.clone())
            .collect();
        assert_eq!(whole_index(&app, Some("news"), 4).await, news);

        // A republication with a new section moves the article.
        kafka
            .send_json(
                &kafka.articles,
                "n04",
                &json!({"type":"article_published","article_id":"n04","title":"Moved","section":"business","published_at":base - 4 * MIN}),
            )
            .await;
        wait_until("the move", Duration::from_secs(60), || async {
            !whole_index(&app, Some("news"), 100)
                .await
                .contains(&"n04".to_string())
        })
        .await;
        assert!(whole_index(&app, Some("business"), 100)
            .await
            .contains(&"n04".to_string()));
        let (_, body) = app.get("/v1/articles/n04").await;
        assert_eq!(body["title"], "Moved");
        assert_eq!(body["section"], "business");

        // Traffic: n20 (three days old) is the most read, then n02, then n06.
        let now = now_ms();
        let mut v = 0;
        let mut send = |id: &'static str, n: usize| {
            let events: Vec<_> = (0..n)
                .map(|_| {
                    v += 1;
                    json!({"type":"page_view","article_id":id,"visitor_id":format!("v{v}"),"occurred_at":now})
                })
                .collect();
            (id, events)
        };
        let batches = [send("n20", 5), send("n02", 3), send("n06", 2)];
        for (id, events) in &batches {
            for e in events {
                kafka.send_json(&kafka.events, id, e).await;
            }
        }
        app.wait_metric(
            "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
            10.0,
        )
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=3").await;
        let ids: Vec<_> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["article_id"].clone())
            .collect();
        assert_eq!(ids, [json!("n20"), json!("n02"), json!("n06")]);
        // Published within an hour: n20 drops out and the page is still full.
        let (_, body) = app
            .get("/v1/rankings/trending?limit=2&published_within=1h")
            .await;
        let ids: Vec<_> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["article_id"].clone())
            .collect();
        assert_eq!(ids, [json!("n02"), json!("n06")], "{backend}");
        assert_eq!(body["items"][1]["rank"], 2);
        let (_, body) = app
            .get("/v1/rankings/trending?limit=1&offset=1&published_within=1h")
            .await;
        assert_eq!(body["items"][0]["article_id"], "n06");

        // The article page: metadata, scores, ranks and counts.
        let (status, body) = app.get("/v1/articles/n02").await;
        assert_eq!(status, 200, "{body}");
        let at = parse_time(body["generated_at"].as_str().unwrap());
        assert_eq!(body["title"], "T n02");
        assert_eq!(body["counts"]["page_view"], 3);
        assert_eq!(body["counts"]["share"], 0);
        let trending = &body["profiles"][0];
        assert_eq!(trending["profile"], "trending");
        assert!(
            rel_err(
                trending["score"].as_f64().unwrap(),
                direct_score(&[(now, 1.0); 3], at, TRENDING_H)
            ) <= 1e-9
        );
        assert_eq!(trending["rank_overall"], 2);
        assert_eq!(trending["rank_in_section"], 2, "after n20 in news");
        let (status, body) = app.get("/v1/articles/nope").await;
        assert_eq!(status, 404, "{body}");

        // A move to another section takes the article's scores along; an
        // article read before its publication enters its section on publication.
        kafka
            .send_json(
                &kafka.events,
                "late1",
                &json!({"type":"share","article_id":"late1","visitor_id":"w1","occurred_at":now}),
            )
            .await;
        app.wait_metric(
            "popularity_events_total{outcome=\"applied\",type=\"share\"}",
            1.0,
        )
        .await;
        for (id, section) in [("n06", "business"), ("late1", "sport")] {
            kafka
                .send_json(
                    &kafka.articles,
                    id,
                    &json!({"type":"article_published","article_id":id,"title":"Moved","section":section,"published_at":base}),
                )
                .await;
        }
        let in_section = |body: serde_json::Value, id: &str| {
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["article_id"] == id)
                .map(|i| i["score"].as_f64().unwrap())
        };
        wait_until("the moves", Duration::from_secs(60), || async {
            let (_, b) = app.get("/v1/rankings/trending?section=sport").await;
            in_section(b, "late1").is_some()
        })
        .await;
        let (_, news) = app
            .get("/v1/rankings/trending?section=news&limit=100")
            .await;
        assert!(in_section(news, "n06").is_none(), "n06 left news");
        let (_, business) = app
            .get("/v1/rankings/trending?section=business&limit=100")
            .await;
        let at = parse_time(business["generated_at"].as_str().unwrap());
        let moved = in_section(business, "n06").expect("n06 entered business");
        let want = direct_score(&[(now, 1.0); 2], at, TRENDING_H);
        assert!(rel_err(moved, want) <= 1e-9, "{moved} vs {want}");
        let (_, sport) = app.get("/v1/rankings/trending?section=sport").await;
        let at = parse_time(sport["generated_at"].as_str().unwrap());
        let late = in_section(sport, "late1").unwrap();
        assert!(rel_err(late, direct_score(&[(now, 5.0)], at, TRENDING_H)) <= 1e-9);

        // Unpublishing removes n02 everywhere, and its late events do not count.
        kafka
            .send_json(
                &kafka.articles,
                "n02",
                &json!({"type":"article_unpublished","article_id":"n02"}),
            )
            .await;
        wait_until("the withdrawal", Duration::from_secs(60), || async {
            app.get("/v1/articles/n02").await.0 == 404
        })
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=10").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        let (_, body) = app.get("/v1/rankings/trending?section=news").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        assert!(!whole_index(&app, None, 100)
            .await
            .contains(&"n02".to_string()));
        kafka
            .send_json(&kafka.events, "n02", &json!({"type":"page_view","article_id":"n02","visitor_id":"late","occurred_at":now}))
            .await;
        app.wait_metric(
            "popularity_events_total{outcome=\"unpublished\",type=\"page_view\"}",
            1.0,
        )
        .await;
        let (_, body) = app.get("/v1/rankings/trending?limit=10").await;
        assert!(!body.to_string().contains("\"n02\""), "{body}");
        app.stop().await;
    }
}
