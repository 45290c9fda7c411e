//! What several test files share: the test articles, the truth of what
//! was produced, and checks of ranking answers against the formula.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;

pub struct Article {
    pub id: &'static str,
    pub section: &'static str,
    pub tags: &'static [&'static str],
}

pub const ARTICLES: &[Article] = &[
    Article {
        id: "a1",
        section: "news",
        tags: &["politics", "europe"],
    },
    Article {
        id: "a2",
        section: "news",
        tags: &["politics"],
    },
    Article {
        id: "a3",
        section: "news",
        tags: &["sport"],
    },
    Article {
        id: "a4",
        section: "business",
        tags: &["markets", "europe"],
    },
    Article {
        id: "a5",
        section: "business",
        tags: &["markets"],
    },
];

pub async fn publish_articles(kafka: &Kafka, app: &TestApp) {
    for (i, a) in ARTICLES.iter().enumerate() {
        let tags: Vec<String> = a.tags.iter().map(|t| t.to_uppercase()).collect();
        kafka
            .send_json(
                &kafka.articles,
                a.id,
                &json!({"type":"article_published","article_id":a.id,"title":format!("Title {}", a.id),
                        "url":format!("https://example.com/{}", a.id),"section":a.section.to_uppercase(),
                        "tags":tags,"published_at":now_ms() - (i as i64 + 1) * HOUR,"author":"Desk"}),
            )
            .await;
    }
    let ids: Vec<&str> = ARTICLES.iter().map(|a| a.id).collect();
    wait_published(app, &ids).await;
}

/// Waits until the store knows every article of `keys` as published.
pub async fn wait_published(app: &TestApp, keys: &[&str]) {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    wait_until(
        "the articles' metadata",
        Duration::from_secs(60),
        || async {
            let states = app.store.articles(&keys).await.unwrap();
            states.into_iter().all(|a| a.live().is_some())
        },
    )
    .await;
}

/// Publishes each of `ids` (title `Title <id>`, no section) and waits
/// until the service knows them: only published articles are listed.
pub async fn publish_ids(kafka: &Kafka, app: &TestApp, ids: &[&str]) {
    for id in ids {
        kafka
            .send_json(
                &kafka.articles,
                id,
                &json!({"type":"article_published","article_id":id,"title":format!("Title {id}"),
                        "published_at":now_ms() - HOUR}),
            )
            .await;
    }
    wait_published(app, ids).await;
}

/// Events produced by a test: per article, the (time, weight) pairs of the
/// trending and popular profiles (the default weights are the same).
#[derive(Default)]
pub struct Truth {
    by_article: BTreeMap<String, Vec<(i64, f64)>>,
}

impl Truth {
    pub fn add(&mut self, article: &str, at: i64, weight: f64) {
        self.by_article
            .entry(article.to_string())
            .or_default()
            .push((at, weight));
    }

    /// Expected (member, score) for a ranking, highest first.
    pub fn expected(
        &self,
        at: i64,
        h: f64,
        keep: impl Fn(&str) -> Vec<String>,
    ) -> Vec<(String, f64)> {
        let mut sums: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for (article, events) in &self.by_article {
            for member in keep(article) {
                sums.entry(member).or_default().extend(events);
            }
        }
        let mut out: Vec<_> = sums
            .into_iter()
            .map(|(m, e)| (m, direct_score(&e, at, h)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        out
    }
}

pub fn article(id: &str) -> Option<&'static Article> {
    ARTICLES.iter().find(|a| a.id == id)
}

/// Checks an answer's items against the expected ranking, in order, to 1e-9.
pub fn check_items(body: &serde_json::Value, member_field: &str, expected: &[(String, f64)]) {
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), expected.len().min(100), "{body}");
    for (i, (item, (member, score))) in items.iter().zip(expected).enumerate() {
        assert_eq!(item["rank"], i + 1);
        assert_eq!(
            item[member_field],
            member.as_str(),
            "rank {}: {body}",
            i + 1
        );
        let got = item["score"].as_f64().unwrap();
        assert!(rel_err(got, *score) <= 1e-9, "{member}: {got} vs {score}");
    }
}

/// GETs a ranking and checks it against `want(generated_at)`; returns the body.
pub async fn check_ranking(
    app: &TestApp,
    path: &str,
    member_field: &str,
    want: impl FnOnce(i64) -> Vec<(String, f64)>,
) -> serde_json::Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let at = parse_time(body["generated_at"].as_str().unwrap());
    check_items(&body, member_field, &want(at));
    body
}

/// The protobuf form of a JSON behaviour event built by the tests.
pub fn to_proto(e: &serde_json::Value) -> popularity::event::proto::Event {
    use popularity::event::proto;
    let at = match &e["occurred_at"] {
        serde_json::Value::String(s) => parse_time(s),
        v => v.as_i64().unwrap(),
    };
    let b = proto::Behaviour {
        event_id: e["event_id"].as_str().unwrap_or("").into(),
        article_id: e["article_id"].as_str().unwrap_or("").into(),
        occurred_at_ms: at,
        visitor_id: e["visitor_id"].as_str().unwrap_or("").into(),
        section: e["section"].as_str().unwrap_or("").into(),
        tags: e["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        user_agent: e["user_agent"].as_str().unwrap_or("").into(),
        bot: e["bot"].as_bool().unwrap_or(false),
        site: e["site"].as_str().unwrap_or("").into(),
    };
    let kind = popularity::event::EventType::from_name(e["type"].as_str().unwrap()).unwrap();
    let network = e["network"].as_str().unwrap_or("");
    proto::Event::behaviour(
        kind,
        b,
        network,
        e["engaged_seconds"].as_f64().unwrap_or(0.0),
    )
}

/// Page views of `article` now, one by each visitor of `visitors`.
pub async fn views(kafka: &Kafka, article: &str, visitors: std::ops::Range<usize>) {
    let now = now_ms();
    for v in visitors {
        let e = json!({"type":"page_view","article_id":article,"visitor_id":format!("{article}-v{v}"),"occurred_at":now});
        kafka.send_json(&kafka.events, article, &e).await;
    }
}
