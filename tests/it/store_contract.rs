//! The store contract: every backend gives the same answers to the same
//! writes. Each check runs on the memory store and on real Redis servers in
//! every topology (standalone, a 3-primary cluster with a replica each, a
//! master with two replicas under three Sentinels); expected values come
//! from the formula of DESIGN §3 or from the rule itself, never from
//! another backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use popularity::config::{Backend, RedisMode, Settings};
use popularity::event::filter::Delta;
use popularity::event::{ArticleMeta, EventType};
use popularity::scoring::{self, Aggregate, Group};
use popularity::store::{ArticleState, Cursor, Fence, FilterWrite, ProfileId, Store};

use crate::helpers::*;

const HOUR: i64 = 3_600_000;

/// Every backend and topology with the given bound and metadata TTL.
async fn stores(
    servers: &Topologies,
    max_members: usize,
    ttl: Duration,
) -> Vec<(&'static str, Arc<dyn Store>)> {
    stores_under(servers, max_members, ttl, &random_name("contract")).await
}

/// [`stores`] with their keys under `prefix`: called twice, two processes
/// writing the same keys.
async fn stores_under(
    servers: &Topologies,
    max_members: usize,
    ttl: Duration,
    prefix: &str,
) -> Vec<(&'static str, Arc<dyn Store>)> {
    let mut out = Vec::new();
    for (name, backend, mode, url) in [
        ("memory", Backend::Memory, RedisMode::Standalone, ""),
        (
            "redis",
            Backend::Redis,
            RedisMode::Standalone,
            servers.standalone.url.as_str(),
        ),
        (
            "cluster",
            Backend::Redis,
            RedisMode::Cluster,
            servers.cluster.url.as_str(),
        ),
        (
            "sentinel",
            Backend::Redis,
            RedisMode::Sentinel,
            servers.sentinels.url.as_str(),
        ),
    ] {
        let mut s = Settings::defaults();
        s.store.backend = backend;
        s.store.redis_mode = mode;
        if !url.is_empty() {
            s.store.redis_url = url.to_string();
        }
        s.store.sentinel_master = servers.sentinels.master_name.clone();
        s.store.key_prefix = prefix.to_string();
        s.store.metadata_ttl = ttl;
        s.scoring.max_members = max_members;
        out.push((name, popularity::store::connect(&s).await.unwrap()));
    }
    out
}

fn profiles() -> scoring::Profiles {
    scoring::profiles(&Settings::defaults().scoring)
}

fn meta(id: &str, section: &str, tags: &[&str], published_at_ms: i64) -> ArticleMeta {
    ArticleMeta {
        article_id: id.into(),
        title: Some(format!("Title {id}")),
        section: Some(section.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        published_at_ms: Some(published_at_ms),
        ..ArticleMeta::default()
    }
}

/// The score of `events` (time, weight) under the trending profile at `at`.
fn trending(events: &[(i64, f64)], at: i64) -> f64 {
    direct_score(events, at, TRENDING_H)
}

async fn score(store: &dyn Store, group: &Group, member: &str, at: i64) -> Option<f64> {
    let page = store.top(group, ProfileId(0), 0..1000, at).await.unwrap();
    page.items
        .into_iter()
        .find(|s| s.member == member)
        .map(|s| s.score)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_its_fence_changes_nothing_and_a_lost_reply_is_read_back() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let now = now_ms();
        // The group that holds "a": a shard of it in cluster mode.
        let all = store.layout().unit(&Group::All, "a");
        let mut a = Aggregate::new(profiles(), now).laid_out(store.layout());
        a.add(EventType::PageView, "a", None, &[], now - HOUR, 1.0);
        a.fence(
            all.clone(),
            Fence {
                source: "e/0".into(),
                expected: None,
                new: 10,
            },
        );
        assert!(
            store.apply(&a).await.unwrap().conflicts.is_empty(),
            "{name}"
        );
        // The same write again, as after a lost reply: refused, not doubled.
        assert_eq!(
            store.apply(&a).await.unwrap().conflicts,
            vec![all.clone()],
            "{name}"
        );
        let fences = store.fences(std::slice::from_ref(&all)).await.unwrap();
        assert_eq!(fences[0].get("e/0"), Some(&10), "{name}");
        let mut b = Aggregate::new(profiles(), now).laid_out(store.layout());
        b.add(EventType::Share, "a", None, &[], now, 1.0);
        b.fence(
            all.clone(),
            Fence {
                source: "e/0".into(),
                expected: Some(10),
                new: 20,
            },
        );
        assert!(
            store.apply(&b).await.unwrap().conflicts.is_empty(),
            "{name}"
        );
        let want = trending(&[(now - HOUR, 1.0), (now, 5.0)], now);
        let got = score(&*store, &Group::All, "a", now).await.unwrap();
        assert!(rel_err(got, want) < 1e-12, "{name}: {got} against {want}");
        assert_eq!(store.counts("a").await.unwrap(), [1, 1, 0], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_follow_the_formula_across_rebases_over_hundreds_of_half_lives() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let start = now_ms() - 400 * HOUR;
        let mut events: Vec<(i64, f64)> = Vec::new();
        // A write every 10 hours for 400 hours: trending (2 h) rebases
        // after 128 hours, several times.
        for step in 0..=40 {
            let r = start + step * 10 * HOUR;
            let mut a = Aggregate::new(profiles(), r).laid_out(store.layout());
            a.add(EventType::PageView, "a", None, &[], r - 1_000, 1.0);
            a.add(EventType::Engagement, "a", None, &[], r, 30.0);
            events.extend([(r - 1_000, 1.0), (r, 30.0 * 0.05)]);
            store.apply(&a).await.unwrap();
        }
        let at = start + 400 * HOUR;
        let got = score(&*store, &Group::All, "a", at).await.unwrap();
        let want = trending(&events, at);
        assert!(rel_err(got, want) < 1e-9, "{name}: {got} against {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_landmark_another_moved_writes_once_against_the_new_one() {
    let redis = topologies();
    let prefix = random_name("contract");
    let first = stores_under(&redis, 100, Duration::from_secs(3600), &prefix).await;
    let second = stores_under(&redis, 100, Duration::from_secs(3600), &prefix).await;
    for ((name, a), (_, b)) in first.into_iter().zip(second).skip(1) {
        let start = now_ms() - 400 * HOUR;
        let mut events: Vec<(i64, f64)> = Vec::new();
        // (writer, reference time, Kafka partition, expected fence, new fence):
        // `b` first writes a group it has not seen (its landmark is `a`'s),
        // and rebases it 200 hours on (trending rebases after 128); `a`
        // then writes with the landmark it left there.
        let writes = [
            (&a, start, "e/0", None, 10),
            (&b, start + 200 * HOUR, "e/1", None, 5),
            (&a, start + 201 * HOUR, "e/0", Some(10), 20),
            (&b, start + 202 * HOUR, "e/1", Some(5), 6),
        ];
        for (store, r, source, expected, new) in writes {
            let mut w = Aggregate::new(profiles(), r).laid_out(store.layout());
            w.add(EventType::PageView, "a", Some("news"), &[], r - 1_000, 1.0);
            for unit in w.groups.keys().cloned().collect::<Vec<_>>() {
                w.fence(
                    unit,
                    Fence {
                        source: source.into(),
                        expected,
                        new,
                    },
                );
            }
            events.push((r - 1_000, 1.0));
            let applied = store.apply(&w).await.unwrap();
            assert!(applied.conflicts.is_empty(), "{name} at {r}: {applied:?}");
        }
        let at = start + 202 * HOUR;
        let want = trending(&events, at);
        for group in [Group::All, Group::Section("news".into())] {
            for store in [&a, &b] {
                let got = score(&**store, &group, "a", at).await.unwrap();
                assert!(
                    rel_err(got, want) < 1e-12,
                    "{name} {group:?}: {got} against {want}"
                );
            }
        }
        assert_eq!(a.counts("a").await.unwrap(), [4, 0, 0], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_keep_max_members_dropping_the_lowest() {
    let redis = topologies();
    for (name, store) in stores(&redis, 5, Duration::from_secs(3600)).await {
        let now = now_ms();
        let mut a = Aggregate::new(profiles(), now).laid_out(store.layout());
        for i in 0..8 {
            for _ in 0..=i {
                a.add(
                    EventType::PageView,
                    &format!("m{i}"),
                    Some("news"),
                    &[],
                    now,
                    1.0,
                );
            }
        }
        store.apply(&a).await.unwrap();
        for group in [Group::All, Group::Section("news".into())] {
            let page = store.top(&group, ProfileId(0), 0..100, now).await.unwrap();
            let members: Vec<&str> = page.items.iter().map(|s| s.member.as_str()).collect();
            assert_eq!(members, ["m7", "m6", "m5", "m4", "m3"], "{name} {group:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_news_index_pages_newest_first_and_keeps_only_the_metadata_ttl() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3 * 3600)).await {
        let now = now_ms();
        // Five recent articles (two published at the same time) and one
        // published before the metadata TTL.
        let articles = [
            meta("n1", "news", &[], now - 10 * 60_000),
            meta("n2", "news", &[], now - 20 * 60_000),
            meta("n3", "news", &[], now - 20 * 60_000),
            meta("b1", "business", &[], now - 30 * 60_000),
            meta("n4", "news", &[], now - 2 * HOUR),
            meta("old", "news", &[], now - 4 * HOUR),
        ];
        store.publish(&articles).await.unwrap();
        let mut seen = Vec::new();
        let mut before: Option<Cursor> = None;
        loop {
            let page = store
                .index(None, Some("news"), before.as_ref(), 2)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            seen.extend(page.iter().map(|c| c.article_id.clone()));
            before = page.last().cloned();
        }
        assert_eq!(seen, ["n1", "n3", "n2", "n4"], "{name}");
        let all: Vec<String> = store
            .index(None, None, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.article_id)
            .collect();
        assert_eq!(all, ["n1", "n3", "n2", "b1", "n4"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_section_and_tags_take_the_overall_score_and_the_old_ones_lose_it() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let now = now_ms();
        store
            .publish(&[meta("a", "news", &["red"], now - 600_000)])
            .await
            .unwrap();
        let tags = vec!["red".to_string()];
        let mut agg = Aggregate::new(profiles(), now).laid_out(store.layout());
        agg.add(
            EventType::PageView,
            "a",
            Some("news"),
            &tags,
            now - 60_000,
            1.0,
        );
        agg.add(EventType::Share, "a", Some("news"), &tags, now, 1.0);
        store.apply(&agg).await.unwrap();
        store
            .publish(&[meta("a", "sport", &["blue"], now - 600_000)])
            .await
            .unwrap();
        let at = now_ms();
        let want = trending(&[(now - 60_000, 1.0), (now, 5.0)], at);
        for group in [
            Group::All,
            Group::Section("sport".into()),
            Group::Tag("blue".into()),
        ] {
            let got = score(&*store, &group, "a", at).await;
            assert!(
                got.is_some_and(|g| rel_err(g, want) < 1e-9),
                "{name} {group:?}: {got:?} against {want}"
            );
        }
        for group in [Group::Section("news".into()), Group::Tag("red".into())] {
            assert_eq!(
                score(&*store, &group, "a", at).await,
                None,
                "{name} {group:?}"
            );
        }
        let index: Vec<String> = store
            .index(None, Some("sport"), None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.article_id)
            .collect();
        assert_eq!(index, ["a"], "{name}");
        assert!(
            store
                .index(None, Some("news"), None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublishing_removes_rankings_index_and_counts_and_remembers_the_withdrawal() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let now = now_ms();
        // Every field set, to come back as it went in.
        let b = ArticleMeta {
            url: Some("https://news.example.com/b".into()),
            author: Some("Desk".into()),
            summary: Some("What \"b\" is about, in one line.".into()),
            image_url: Some("https://img.example.com/b.jpg".into()),
            ..meta("b", "news", &["blue", "green"], now - 600_000)
        };
        store
            .publish(&[meta("a", "news", &["red"], now - 600_000), b.clone()])
            .await
            .unwrap();
        let tags = vec!["red".to_string()];
        let mut agg = Aggregate::new(profiles(), now).laid_out(store.layout());
        agg.add(EventType::PageView, "a", Some("news"), &tags, now, 1.0);
        let b_tags = vec!["blue".to_string(), "green".to_string()];
        agg.add(EventType::PageView, "b", Some("news"), &b_tags, now, 1.0);
        store.apply(&agg).await.unwrap();
        assert_eq!(store.counts("a").await.unwrap(), [1, 0, 0], "{name}");
        store.unpublish(&["a".to_string()]).await.unwrap();
        for group in [
            Group::All,
            Group::Section("news".into()),
            Group::Tag("red".into()),
        ] {
            assert_eq!(
                score(&*store, &group, "a", now).await,
                None,
                "{name} {group:?}"
            );
        }
        assert!(
            score(&*store, &Group::All, "b", now).await.is_some(),
            "{name}"
        );
        assert_eq!(store.counts("a").await.unwrap(), [0, 0, 0], "{name}");
        let index: Vec<String> = store
            .index(None, None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.article_id)
            .collect();
        assert_eq!(index, ["b"], "{name}");
        let states = store
            .articles(&["a".into(), "b".into(), "c".into()])
            .await
            .unwrap();
        assert_eq!(states[0], ArticleState::Withdrawn, "{name}");
        assert_eq!(states[1], ArticleState::Live(Box::new(b)), "{name}");
        assert_eq!(states[2], ArticleState::Unknown, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_deltas_chain_apply_once_and_a_gap_or_another_seed_is_refused() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let write = |expected, new, bytes: &[u8], snapshot, seed: &str| FilterWrite {
            source: "e/3".into(),
            expected,
            new,
            seed: seed.into(),
            delta: Delta {
                bytes: bytes.to_vec(),
                snapshot,
            },
        };
        let sources = ["e/3".to_string(), "e/4".to_string()];
        let empty = store.load_filters(&sources).await.unwrap();
        assert_eq!((empty[0].fence, empty[1].fence), (None, None), "{name}");
        let refused = store
            .save_filters(&[
                write(None, 5, b"one", false, "s"),
                write(Some(5), 9, b"two", false, "s"),
            ])
            .await
            .unwrap();
        assert!(refused.is_empty(), "{name}");
        // Saved again after a lost reply: already there, not appended twice.
        let again = store
            .save_filters(&[write(Some(5), 9, b"two", false, "s")])
            .await;
        assert!(again.unwrap().is_empty(), "{name}");
        // A delta from 5 to 12 holds everything after 5: it applies on 9 too.
        let on_top = store
            .save_filters(&[write(Some(5), 12, b"x", false, "s")])
            .await;
        assert!(on_top.unwrap().is_empty(), "{name}");
        // A delta from 15 would skip what happened between 12 and 15, and one
        // named with another seed would not match: both refused.
        let gap = store
            .save_filters(&[write(Some(15), 20, b"y", false, "s")])
            .await;
        assert_eq!(gap.unwrap(), ["e/3"], "{name}");
        let seed = store
            .save_filters(&[write(Some(12), 20, b"z", false, "t")])
            .await;
        assert_eq!(seed.unwrap(), ["e/3"], "{name}");
        let saved = &store.load_filters(&sources).await.unwrap()[0];
        assert_eq!(saved.fence, Some(12), "{name}");
        assert_eq!(saved.seed.as_deref(), Some("s"), "{name}");
        assert_eq!(
            saved.deltas,
            [b"one".to_vec(), b"two".to_vec(), b"x".to_vec()],
            "{name}"
        );
        // A snapshot replaces whatever is saved, seed included.
        let snap = store
            .save_filters(&[write(Some(15), 20, b"all", true, "t")])
            .await;
        assert!(snap.unwrap().is_empty(), "{name}");
        let saved = &store.load_filters(&sources).await.unwrap()[0];
        assert_eq!(
            (saved.fence, saved.seed.as_deref(), saved.deltas.clone()),
            (Some(20), Some("t"), vec![b"all".to_vec()]),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_duplicate_windows_cost_about_36_bytes_each_in_redis_and_restore_in_seconds() {
    use popularity::event::filter::{random_seed, Filter, Limits};
    use popularity::event::Behaviour;
    let redis = redis_server();
    let mut s = Settings::defaults();
    s.store.redis_url = redis.url.clone();
    s.store.key_prefix = random_name("cost");
    let store = popularity::store::connect(&s).await.unwrap();
    let limits = Limits {
        max_age_ms: 7 * 24 * HOUR,
        window_ms: 30 * 60_000,
        lateness_ms: 7 * 24 * HOUR,
    };
    let seed = random_seed();
    let mut f = Filter::new(limits, seed);
    let now = now_ms();
    let n = 1_000_000;
    // The i-th reader's view: 2,000 articles, times over the last hour.
    let view = |i: usize| Behaviour {
        kind: EventType::PageView,
        event_id: None,
        article_id: format!("a{}", i % 2_000).into(),
        occurred_at_ms: now - (i as i64 % 3_600_000),
        visitor_id: Some(format!("v{i}").into()),
        section: None,
        tags: Default::default(),
        engaged_seconds: 0.0,
        bot: false,
    };
    for i in 0..n {
        f.judge(&view(i), now);
    }
    // Saved as the consumer saves it: deltas per batch of 50,000 events.
    let mut delta_bytes = 0;
    let mut expected = None;
    let mut g = Filter::new(limits, seed);
    for chunk in 0..(n / 50_000) {
        for i in chunk * 50_000..(chunk + 1) * 50_000 {
            g.judge(&view(i), now);
        }
        let delta = g.delta();
        delta_bytes += delta.bytes.len();
        let new = (chunk as i64 + 1) * 50_000;
        let w = FilterWrite {
            source: "e/0".into(),
            expected,
            new,
            seed: popularity::event::filter::encode_seed(&seed),
            delta,
        };
        assert!(store.save_filters(&[w]).await.unwrap().is_empty());
        expected = Some(new);
    }
    let mut c = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let used: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{}:{{d:e/0}}:log", s.store.key_prefix))
        .query(&mut c)
        .unwrap();
    let started = std::time::Instant::now();
    let saved = store.load_filters(&["e/0".to_string()]).await.unwrap();
    let loaded = started.elapsed();
    let restored = Filter::restore(limits, seed, &saved[0].deltas).unwrap();
    let took = started.elapsed();
    println!(
        "store: {} duplicate windows: {:.1} MB of deltas, Redis MEMORY USAGE {:.1} MB \
         ({:.1} bytes a window); restored in {:.2} s ({:.2} s reading)",
        restored.tracked(),
        delta_bytes as f64 / 1e6,
        used as f64 / 1e6,
        used as f64 / n as f64,
        took.as_secs_f64(),
        loaded.as_secs_f64(),
    );
    assert_eq!(restored.tracked(), f.tracked());
    assert!(used < 44 * n as i64, "{used} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_ranks_and_tags_across_many_members_follow_the_formula_in_every_topology() {
    use rand::{Rng, SeedableRng};
    let redis = topologies();
    // Above the number of articles: trimming while writing would drop
    // scores the formula keeps (`rankings_keep_max_members…` checks it).
    let max_members = 1000;
    for (name, store) in stores(&redis, max_members, Duration::from_secs(3600)).await {
        let split = if name == "cluster" { 8 } else { 1 };
        assert_eq!(store.layout().parts(), split, "{name}: shards per group");
        let now = now_ms();
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261202);
        let sections = ["news", "sport"];
        let tag_names = ["red", "blue", "green"];
        // (article, section, tags) for 80 articles.
        let articles: Vec<(String, &str, Vec<String>)> = (0..80)
            .map(|i| {
                let tags = tag_names
                    .iter()
                    .filter(|_| rng.random_bool(0.4))
                    .map(|t| t.to_string())
                    .collect();
                (format!("art-{i}"), sections[i % 2], tags)
            })
            .collect();
        // Events spread over six hours, written in three flushes with
        // reference times of their own; expected scores from the formula.
        let mut events: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        let mut tag_events: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for flush in 0..3 {
            let r = now - (2 - flush) * 2 * HOUR;
            let mut agg = Aggregate::new(profiles(), r).laid_out(store.layout());
            for _ in 0..600 {
                let (id, section, tags) = &articles[rng.random_range(0..articles.len())];
                let at = r - rng.random_range(0..2 * HOUR);
                let (kind, units, weight) = match rng.random_range(0..10) {
                    0 => (EventType::Share, 1.0, 5.0),
                    1 | 2 => (EventType::Engagement, 20.0, 20.0 * 0.05),
                    _ => (EventType::PageView, 1.0, 1.0),
                };
                agg.add(kind, id, Some(section), tags, at, units);
                events.entry(id.clone()).or_default().push((at, weight));
                for t in tags {
                    tag_events.entry(t.clone()).or_default().push((at, weight));
                }
            }
            assert!(
                store.apply(&agg).await.unwrap().conflicts.is_empty(),
                "{name}"
            );
        }
        let want = |evs: &HashMap<String, Vec<(i64, f64)>>, keep: &dyn Fn(&str) -> bool| {
            let mut v: Vec<(String, f64)> = evs
                .iter()
                .filter(|(m, _)| keep(m))
                .map(|(m, e)| (m.clone(), trending(e, now)))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
            v
        };
        let section_of: HashMap<&str, &str> =
            articles.iter().map(|(a, s, _)| (a.as_str(), *s)).collect();
        let cases = [
            (Group::All, want(&events, &|_| true)),
            (
                Group::Section("sport".into()),
                want(&events, &|m| section_of[m] == "sport"),
            ),
            (Group::Tags, want(&tag_events, &|_| true)),
        ];
        for (group, expected) in cases {
            let page = store.top(&group, ProfileId(0), 0..100, now).await.unwrap();
            assert_eq!(page.items.len(), expected.len(), "{name} {group:?}");
            for (got, (member, score)) in page.items.iter().zip(&expected) {
                assert_eq!(&got.member, member, "{name} {group:?}");
                assert!(
                    rel_err(got.score, *score) < 1e-9,
                    "{name} {group:?} {member}"
                );
            }
            // A page further down is the same slice of the same order.
            let page = store.top(&group, ProfileId(0), 7..12, now).await.unwrap();
            let members: Vec<&str> = page.items.iter().map(|s| s.member.as_str()).collect();
            let slice: Vec<&str> = expected
                .iter()
                .skip(7)
                .take(5)
                .map(|(m, _)| m.as_str())
                .collect();
            assert_eq!(members, slice, "{name} {group:?}");
        }
        // Scores of chosen members, in any order, under another profile
        // (what the rising list reads): the formula, None when unranked.
        let popular = |e: &[(i64, f64)]| direct_score(e, now, POPULAR_H);
        let asked: Vec<String> = ["art-3", "nobody", "art-40", "art-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = store
            .scores(&Group::All, ProfileId(1), &asked, now)
            .await
            .unwrap();
        for (m, got) in asked.iter().zip(got) {
            match events.get(m) {
                Some(e) => assert!(
                    got.is_some_and(|g| rel_err(g, popular(e)) < 1e-9),
                    "{name} {m}: {got:?}"
                ),
                None => assert_eq!(got, None, "{name} {m}"),
            }
        }
        // Ranks across shards: every ranked article's rank, overall.
        let expected = want(&events, &|_| true);
        for (rank, (member, score)) in expected.iter().enumerate().step_by(4) {
            let pos = store.position(&Group::All, member, now).await.unwrap();
            let (s, r) = pos[0].unwrap_or_else(|| panic!("{name}: {member} unranked"));
            assert_eq!(r, rank + 1, "{name}: rank of {member}");
            assert!(rel_err(s, *score) < 1e-9, "{name}: score of {member}");
        }
        // Counts live with the article's shard of the overall ranking.
        let (first, _) = &expected[0];
        let counts = store.counts(first).await.unwrap();
        assert!(counts.iter().sum::<u64>() > 0, "{name}: counts of {first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_recorded_once_per_cooldown_and_the_latest_kept_in_every_topology() {
    let redis = topologies();
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        assert!(
            store
                .record_alert("network|default|a", 60_000, "{\"id\":\"1\"}")
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .record_alert("network|default|a", 60_000, "{\"id\":\"2\"}")
                .await
                .unwrap(),
            "{name}: within the cooldown"
        );
        assert!(
            store
                .record_alert("network|default|b", 300, "{\"id\":\"3\"}")
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            store.recent_alerts(10).await.unwrap(),
            ["{\"id\":\"3\"}", "{\"id\":\"1\"}"],
            "{name}: newest first"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            store
                .record_alert("network|default|b", 300, "{\"id\":\"4\"}")
                .await
                .unwrap(),
            "{name}: after the cooldown"
        );
        for i in 0..popularity::store::RECENT_ALERTS + 20 {
            store
                .record_alert(&format!("k{i}"), 60_000, &format!("{{\"id\":\"k{i}\"}}"))
                .await
                .unwrap();
        }
        let recent = store.recent_alerts(1_000).await.unwrap();
        assert_eq!(
            recent.len(),
            popularity::store::RECENT_ALERTS,
            "{name}: bounded"
        );
    }
}

/// The names sections and tags were published with (DESIGN §15): kept with
/// the article and in the names looked up by slug, the last publication's
/// winning, on every topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_kept_with_the_article_and_by_slug_the_latest_winning_in_every_topology() {
    use popularity::event::Names;
    use popularity::store::{name_key, NameOf};
    let redis = topologies();
    let now = now_ms();
    let named = |id: &str, section: &str, tags: &[(&str, &str)]| ArticleMeta {
        tags: tags.iter().map(|(slug, _)| slug.to_string()).collect(),
        names: Names {
            section: Some(section.into()),
            tags: tags.iter().map(|(_, name)| name.to_string()).collect(),
        },
        ..meta(id, "special-updates", &[], now - HOUR)
    };
    for (name, store) in stores(&redis, 100, Duration::from_secs(3600)).await {
        let a = named(
            "n1",
            "Special Updates",
            &[("international", "International"), ("live", "LIVE")],
        );
        store.publish(std::slice::from_ref(&a)).await.unwrap();
        let ArticleState::Live(got) = store.articles(&["n1".into()]).await.unwrap().remove(0)
        else {
            panic!("{name}: n1 is published");
        };
        assert_eq!(got.names, a.names, "{name}");
        let keys = [
            name_key(NameOf::Section, "special-updates"),
            name_key(NameOf::Tag, "international"),
            name_key(NameOf::Tag, "live"),
            name_key(NameOf::Tag, "unknown"),
            name_key(NameOf::Section, "international"),
        ];
        let names = store.names(&keys).await.unwrap();
        assert_eq!(
            names,
            [
                Some("Special Updates".to_string()),
                Some("International".into()),
                Some("LIVE".into()),
                None,
                None
            ],
            "{name}: a tag's name is not a section's"
        );
        // Another article names them again: the latest publication wins.
        let b = named("n2", "Special updates", &[("live", "Live")]);
        store.publish(&[b]).await.unwrap();
        let names = store.names(&keys[..3]).await.unwrap();
        assert_eq!(
            names,
            [
                Some("Special updates".to_string()),
                Some("International".into()),
                Some("Live".into())
            ],
            "{name}"
        );
    }
}
