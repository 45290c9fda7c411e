//! Rankings overall, per section, per tag and of tags against the formula; the filters; the two stores giving the same rankings; republications moving scores.

use std::time::Duration;

use popularity::scoring::{Aggregate, Group};
use popularity::store::ProfileId;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::fixtures::*;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_overall_per_section_per_tag_and_tags_match_the_formula() {
    let redis = redis_server();
    let kafka = Kafka::start(6);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    publish_articles(&kafka, &app).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut truth = Truth::default();
    let now = now_ms();
    let ids = ["a1", "a2", "a3", "a4", "a5", "a6"]; // a6 was never published
    let n = 400;
    for i in 0..n {
        let id = ids[rng.random_range(0..ids.len())];
        let at = now - rng.random_range(0..6 * HOUR);
        let (kind, weight, extra) = match rng.random_range(0..3) {
            0 => ("page_view", 1.0, json!({})),
            1 => ("share", 5.0, json!({"network":"whatsapp"})),
            _ => {
                let s = rng.random_range(1..120) as f64;
                ("engagement", 0.05 * s, json!({"engaged_seconds": s}))
            }
        };
        truth.add(id, at, weight);
        let mut e = json!({"type":kind,"event_id":format!("e{i}"),"article_id":id,"visitor_id":format!("v{i}")});
        // Half the events carry their section and tags; the rest rely on metadata.
        if i % 2 == 0 {
            if let Some(a) = article(id) {
                e["section"] = json!(a.section);
                e["tags"] = json!(a.tags);
            }
        }
        // Times in both accepted forms.
        e["occurred_at"] = if i % 3 == 0 {
            json!(
                time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            )
        } else {
            json!(at)
        };
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        if i % 5 == 0 {
            // Some producers speak protobuf.
            kafka
                .send(
                    &kafka.events,
                    id,
                    &to_proto(&e).encode_to_vec(),
                    Some("application/x-protobuf"),
                )
                .await;
        } else {
            kafka.send_json(&kafka.events, id, &e).await;
        }
    }
    // `applied` is counted once the store acknowledged the flush.
    wait_until("every event applied", Duration::from_secs(60), || async {
        app.applied().await >= n as f64
    })
    .await;
    assert_eq!(app.applied().await, n as f64);

    // Only published articles are listed: a6 never is.
    let all = |a: &str| {
        article(a)
            .map(|x| vec![x.id.to_string()])
            .unwrap_or_default()
    };
    for (profile, h) in [("trending", TRENDING_H), ("popular", POPULAR_H)] {
        let path = format!("/v1/rankings/{profile}?limit=100");
        let body = check_ranking(&app, &path, "article_id", |at| truth.expected(at, h, all)).await;
        assert_eq!(body["profile"], profile);
    }

    // Per section: a section from the event or, failing that, from metadata.
    let in_section = |s: &'static str| {
        move |a: &str| {
            article(a)
                .filter(|x| x.section == s)
                .map(|x| vec![x.id.to_string()])
                .unwrap_or_default()
        }
    };
    let body = check_ranking(
        &app,
        "/v1/rankings/trending?section=News&limit=100",
        "article_id",
        |at| truth.expected(at, TRENDING_H, in_section("news")),
    )
    .await;
    assert_eq!(body["section"], "news");
    let first = &body["items"][0];
    let meta = article(first["article_id"].as_str().unwrap()).unwrap();
    assert_eq!(first["title"], format!("Title {}", meta.id));
    assert_eq!(first["section"], meta.section);
    assert_eq!(first["url"], format!("https://example.com/{}", meta.id));
    assert_eq!(first["author"], "Desk");

    // Per tag.
    let with_tag = |tag: &'static str| {
        move |a: &str| {
            article(a)
                .filter(|x| x.tags.contains(&tag))
                .map(|x| vec![x.id.to_string()])
                .unwrap_or_default()
        }
    };
    check_ranking(
        &app,
        "/v1/rankings/trending?tag=europe&limit=100",
        "article_id",
        |at| truth.expected(at, TRENDING_H, with_tag("europe")),
    )
    .await;

    // Popular tags rank tags by the events of their articles.
    let tags_of = |a: &str| {
        article(a)
            .map(|x| x.tags.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    };
    check_ranking(&app, "/v1/rankings/trending/tags?limit=100", "tag", |at| {
        truth.expected(at, TRENDING_H, tags_of)
    })
    .await;

    // The unpublished article counts (its events are kept for when it is
    // published) but is listed nowhere.
    let (_, body) = app.get("/v1/rankings/weekly?limit=100").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{body}");
    assert!(items
        .iter()
        .all(|i| i["article_id"] != "a6" && i["title"].is_string()));
    let (status, a6) = app.get("/v1/articles/a6").await;
    assert_eq!(status, 200, "{a6}");
    assert!(a6["title"].is_null(), "{a6}");
    let a6_events = truth.expected(now_ms(), TRENDING_H, |a| {
        if a == "a6" {
            vec![a.to_string()]
        } else {
            vec![]
        }
    });
    assert!(!a6_events.is_empty());

    // Pagination continues the same order.
    let (_, page2) = app.get("/v1/rankings/weekly?limit=2&offset=2").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(page2["items"][0]["article_id"], items[2]["article_id"]);
    assert_eq!(page2["items"][0]["rank"], 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_bots_and_stale_events_are_not_counted() {
    let redis = redis_server();
    let kafka = Kafka::start(3);
    let app = spawn_app(settings(&kafka, Some(&redis))).await;
    publish_ids(&kafka, &app, &["x1"]).await;
    let now = now_ms();
    let ev = |kind: &str, visitor: &str, at: i64| json!({"type":kind,"article_id":"x1","visitor_id":visitor,"occurred_at":at,"section":"news"});
    let mut counted: Vec<(i64, f64)> = Vec::new();
    // Counted: first view of v1, first share of v1, first view of v2.
    for (e, w) in [
        (ev("page_view", "v1", now - 20 * MIN), Some(1.0)),
        (ev("page_view", "v1", now - 10 * MIN), None), // duplicate within 30 min
        (ev("share", "v1", now - 9 * MIN), Some(5.0)),
        (ev("share", "v1", now - 8 * MIN), None), // duplicate
        (ev("page_view", "v2", now - 5 * MIN), Some(1.0)),
        (ev("page_view", "v3", now - 8 * 24 * 60 * MIN), None), // stale: older than 7 days
    ] {
        if let Some(w) = w {
            counted.push((e["occurred_at"].as_i64().unwrap(), w));
        }
        kafka.send_json(&kafka.events, "x1", &e).await;
    }
    let mut bot = ev("page_view", "v4", now - MIN);
    bot["user_agent"] =
        json!("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    kafka.send_json(&kafka.events, "x1", &bot).await;
    let mut flagged = ev("page_view", "v5", now - MIN);
    flagged["bot"] = json!(true);
    kafka.send_json(&kafka.events, "x1", &flagged).await;
    // Engagement: summed, capped at 3600 s per visitor and article per window.
    let mut e1 = ev("engagement", "v6", now - 3 * MIN);
    e1["engaged_seconds"] = json!(3000);
    let mut e2 = ev("engagement", "v6", now - 2 * MIN);
    e2["engaged_seconds"] = json!(1000);
    kafka.send_json(&kafka.events, "x1", &e1).await;
    kafka.send_json(&kafka.events, "x1", &e2).await;
    counted.push((now - 3 * MIN, 0.05 * 3000.0));
    counted.push((now - 2 * MIN, 0.05 * 600.0));

    let m = |t: &str, o: &str| format!("popularity_events_total{{outcome=\"{o}\",type=\"{t}\"}}");
    app.wait_metric(&m("engagement", "applied"), 2.0).await;
    assert_eq!(app.metric(&m("page_view", "applied")).await, 2.0);
    assert_eq!(app.metric(&m("share", "applied")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "duplicate")).await, 1.0);
    assert_eq!(app.metric(&m("share", "duplicate")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "stale")).await, 1.0);
    assert_eq!(app.metric(&m("page_view", "bot")).await, 2.0);
    check_ranking(&app, "/v1/rankings/trending", "article_id", |at| {
        vec![("x1".to_string(), direct_score(&counted, at, TRENDING_H))]
    })
    .await;
    app.stop().await;
}

/// Random flushes applied to both backends must give the same rankings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_redis_stores_give_the_same_rankings() {
    let redis = redis_server();
    let mut s = popularity::config::Settings::defaults();
    s.scoring.max_members = 25;
    // A short half-life so the stream crosses rebases.
    s.scoring.profiles[0].half_life = Duration::from_secs(60);
    let profiles = popularity::scoring::profiles(&s.scoring);
    s.store.metadata_ttl = Duration::from_secs(3600);
    s.store.redis_url = redis.url.clone();
    s.store.key_prefix = random_name("d");
    let redis_store = popularity::store::connect(&s).await.unwrap();
    s.store.backend = popularity::config::Backend::Memory;
    let memory = popularity::store::connect(&s).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let kinds = popularity::event::EventType::ALL;
    let sections = ["news", "business", "sport"];
    let tags = ["a", "b", "c", "d"];
    let mut r = 1_700_000_000_000i64;
    for _ in 0..60 {
        // Two hours between flushes: 120 half-lives of the first profile.
        r += rng.random_range(0..2 * HOUR);
        let mut agg = Aggregate::new(profiles.clone(), r);
        for _ in 0..rng.random_range(1..300) {
            let id = format!("art{}", rng.random_range(0..60));
            let section = sections[rng.random_range(0..3)];
            let t: Vec<String> = (0..rng.random_range(0..3))
                .map(|_| tags[rng.random_range(0..4)].to_string())
                .collect();
            let kind = kinds[rng.random_range(0..3)];
            let units = if kind == popularity::event::EventType::Engagement {
                rng.random_range(1.0..100.0)
            } else {
                1.0
            };
            agg.add(
                kind,
                &id,
                Some(section),
                &t,
                r - rng.random_range(0..3 * HOUR),
                units,
            );
        }
        redis_store.apply(&agg).await.unwrap();
        memory.apply(&agg).await.unwrap();
    }
    let at = r + HOUR;
    let mut groups = vec![Group::All, Group::Tags];
    groups.extend(sections.iter().map(|s| Group::Section(s.to_string())));
    groups.extend(tags.iter().map(|t| Group::Tag(t.to_string())));
    let mut compared = 0;
    for g in &groups {
        for p in 0..profiles.len() {
            let a = redis_store.top(g, ProfileId(p), 0..100, at).await.unwrap();
            let b = memory.top(g, ProfileId(p), 0..100, at).await.unwrap();
            assert_eq!(a.items.len(), b.items.len(), "{g:?} {p}");
            assert!(a.items.len() <= 25, "trimmed to max_members");
            for (x, y) in a.items.iter().zip(&b.items) {
                assert_eq!(x.member, y.member, "{g:?} profile {p}");
                assert!(
                    rel_err(x.score, y.score) <= 1e-9,
                    "{g:?} {p} {}: {} vs {}",
                    x.member,
                    x.score,
                    y.score
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 200, "only {compared} members compared");
}

/// Publications that move articles between sections and tags, with and
/// without a score to carry, succeed on both stores and move exactly the
/// scored article.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republications_move_scored_and_unscored_articles_on_both_stores() {
    let redis = redis_server();
    let mut s = popularity::config::Settings::defaults();
    let profiles = popularity::scoring::profiles(&s.scoring);
    s.scoring.max_members = 100;
    s.store.metadata_ttl = Duration::from_secs(3600);
    s.store.redis_url = redis.url.clone();
    s.store.key_prefix = random_name("m");
    let redis_store = popularity::store::connect(&s).await.unwrap();
    s.store.backend = popularity::config::Backend::Memory;
    let memory = popularity::store::connect(&s).await.unwrap();
    let stores: [(&str, &dyn popularity::store::Store); 2] =
        [("redis", &*redis_store), ("memory", &*memory)];
    let meta = |id: &str, section: &str, tags: &[&str]| popularity::event::ArticleMeta {
        article_id: id.to_string(),
        title: Some(format!("T {id}")),
        section: Some(section.to_string()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        published_at_ms: Some(now_ms()),
        ..Default::default()
    };
    for (name, store) in stores {
        // First publications: nothing is scored yet, nothing to move.
        store
            .publish(&[meta("read", "news", &["x"]), meta("unread", "news", &["x"])])
            .await
            .unwrap_or_else(|e| panic!("{name}: first publication: {e}"));
        let r = now_ms();
        let mut agg = Aggregate::new(profiles.clone(), r);
        for _ in 0..3 {
            agg.add(
                popularity::event::EventType::PageView,
                "read",
                Some("news"),
                &["x".to_string()],
                r,
                1.0,
            );
        }
        store.apply(&agg).await.unwrap();
        // Both move to another section and tag; only one has a score to carry.
        store
            .publish(&[
                meta("read", "sport", &["y"]),
                meta("unread", "sport", &["y"]),
            ])
            .await
            .unwrap_or_else(|e| panic!("{name}: republication: {e}"));
        let at = now_ms();
        let members = |g: Group| async move {
            let page = store.top(&g, ProfileId(0), 0..10, at).await.unwrap();
            page.items
                .iter()
                .map(|i| (i.member.clone(), i.score))
                .collect::<Vec<_>>()
        };
        let overall = members(Group::All).await;
        assert_eq!(overall.len(), 1, "{name}: {overall:?}");
        assert_eq!(overall[0].0, "read");
        // Three views at r, decayed to `at` with the first profile's half-life.
        let want = 3.0 * (-((at - r) as f64) / profiles[0].half_life_ms).exp2();
        assert!(
            rel_err(overall[0].1, want) <= 1e-9,
            "{name}: {overall:?} vs {want}"
        );
        assert!(
            members(Group::Section("news".into())).await.is_empty(),
            "{name}"
        );
        assert!(members(Group::Tag("x".into())).await.is_empty(), "{name}");
        for g in [Group::Section("sport".into()), Group::Tag("y".into())] {
            let m = members(g.clone()).await;
            assert_eq!(m.len(), 1, "{name} {g:?}: {m:?}");
            assert_eq!(m[0].0, "read", "{name} {g:?}");
            assert!(rel_err(m[0].1, overall[0].1) <= 1e-9, "{name} {g:?}: {m:?}");
        }
        // Popular Tags: the article's score moved from x to y with it.
        let tags = members(Group::Tags).await;
        assert_eq!(tags.len(), 1, "{name}: {tags:?}");
        assert_eq!(tags[0].0, "y", "{name}");
        assert!(rel_err(tags[0].1, overall[0].1) <= 1e-9, "{name}: {tags:?}");
    }
}
