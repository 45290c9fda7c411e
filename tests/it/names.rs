//! Sections and tags shown by the names they were published with (DESIGN
//! §15), next to their slugs, in every response, on both stores.

use serde_json::{json, Value};

use crate::fixtures::*;
use crate::helpers::*;

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_published_names_next_to_the_slugs_on_both_stores() {
    let redis = redis_server();
    for store in [None, Some(&redis)] {
        let kafka = Kafka::start(2);
        let app = spawn_app(settings(&kafka, store)).await;
        let now = now_ms();
        // A hidden bidirectional control and a tab do not reach the name.
        let article = json!({"type":"article_published","article_id":"n1","title":"Named",
            "section":"Special\tUpdates","tags":["International","Élections 2026","Inter\u{202E}national"],
            "published_at":now - HOUR});
        kafka.send_json(&kafka.articles, "n1", &article).await;
        // The topics are read apart: events applied before their article
        // is known are ranked overall only, and not in its section.
        wait_published(&app, &["n1"]).await;
        for i in 0..5 {
            let e = json!({"type":"page_view","article_id":"n1","visitor_id":format!("v{i}"),"occurred_at":now - MIN});
            kafka.send_json(&kafka.events, "n1", &e).await;
        }
        app.wait_metric(
            "popularity_events_total{outcome=\"applied\",type=\"page_view\"}",
            5.0,
        )
        .await;
        let slugs = ["international", "élections-2026", "inter-national"];
        let names = ["International", "Élections 2026", "International"];
        let check_item = |what: &str, item: &Value| {
            assert_eq!(item["section"], "special-updates", "{what}: {item}");
            assert_eq!(item["section_name"], "Special Updates", "{what}: {item}");
            assert_eq!(strings(&item["tags"]), slugs, "{what}: {item}");
            assert_eq!(strings(&item["tag_names"]), names, "{what}: {item}");
        };
        for path in [
            "/v1/rankings/trending",
            "/v1/rankings/trending?section=special-updates",
            "/v1/rankings/trending?tag=%C3%A9lections-2026",
            "/v1/index",
            "/v1/index?section=special-updates",
            "/v1/rising?section=special-updates&tag=%C3%A9lections-2026",
        ] {
            let (status, body) = app.get(path).await;
            assert_eq!(status, 200, "{path}: {body}");
            // Rising items are the rankings' items (a cold start has none).
            if !path.starts_with("/v1/rising") {
                check_item(path, &body["items"][0]);
            }
            if path.contains("section=") {
                assert_eq!(body["section_name"], "Special Updates", "{path}: {body}");
            } else {
                assert_eq!(body["section_name"], Value::Null, "{path}: {body}");
            }
            if path.contains("tag=") {
                assert_eq!(body["tag_name"], "Élections 2026", "{path}: {body}");
            }
        }
        let (_, body) = app.get("/v1/articles/n1").await;
        check_item("article", &body);
        let (_, body) = app.get("/v1/rankings/trending/tags").await;
        let shown: Vec<(&str, &str)> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["tag"].as_str().unwrap(), t["name"].as_str().unwrap()))
            .collect();
        let mut want: Vec<(&str, &str)> = slugs.into_iter().zip(names).collect();
        let mut got = shown.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "Popular Tags: {body}");
        let (event, data) = app
            .first_frame("/v1/stream/rankings/trending?section=special-updates")
            .await;
        assert_eq!(event, "ranking");
        assert_eq!(data["section_name"], "Special Updates", "{data}");
        check_item("stream", &data["items"][0]);

        // A later publication names the section anew: the latest name wins.
        let mut again = article.clone();
        again["article_id"] = json!("n2");
        again["section"] = json!("Special updates");
        kafka.send_json(&kafka.articles, "n2", &again).await;
        wait_until(
            "the new name",
            std::time::Duration::from_secs(20),
            || async {
                app.get("/v1/index?section=special-updates").await.1["section_name"]
                    == "Special updates"
            },
        )
        .await;
        app.stop().await;
    }
}
