//! A network of sites (DESIGN §11): every list per site and for the whole
//! network is the formula of DESIGN §3 over the events of its articles,
//! computed here from what was produced, on every topology; events name
//! configured sites or are dead-lettered; editors hide articles from every
//! list through the admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use popularity::config::{AdminToken, Backend, RedisMode, Settings, SiteSettings};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::fixtures::*;
use crate::helpers::*;

/// The test network: three sites of different sizes.
const SITES: [(&str, &str, usize); 3] = [
    ("big", "The Big Daily", 8),
    ("mid", "Mid Weekly", 4),
    ("small", "Small Town News", 2),
];
const SECTIONS: [&str; 2] = ["news", "sport"];
const TAGS: [&str; 3] = ["red", "green", "blue"];

/// Adds the network's sites to `s`, each with its own origin.
fn network(mut s: Settings) -> Settings {
    s.sites = SITES
        .iter()
        .map(|(id, name, _)| SiteSettings {
            id: id.to_string(),
            name: name.to_string(),
            origins: vec![format!("https://{id}.example")],
            events_per_second: None,
        })
        .collect();
    s.validate().unwrap();
    s
}

/// One article of the network: its site, id, section and tags. Ids repeat
/// across sites (`n1` exists on every site): they are different articles.
#[derive(Debug, Clone)]
struct Art {
    site: &'static str,
    id: String,
    section: &'static str,
    tags: Vec<&'static str>,
}

fn articles() -> Vec<Art> {
    let mut out = Vec::new();
    for (s, (site, _, n)) in SITES.iter().enumerate() {
        for i in 0..*n {
            out.push(Art {
                site,
                id: format!("n{i}"),
                section: SECTIONS[(i + s) % 2],
                tags: vec![TAGS[i % 3], TAGS[(i + s + 1) % 3]]
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            });
        }
    }
    out
}

fn published(a: &Art) -> Value {
    json!({"type": "article_published", "site": a.site, "article_id": a.id,
           "title": format!("{} of {}", a.id, a.site), "section": a.section.to_uppercase(),
           "tags": a.tags, "published_at": now_ms() - 2 * HOUR,
           "url": format!("https://{}.example/{}", a.site, a.id)})
}

/// Counted (time, weight) per article, by (site, id).
type Truth = BTreeMap<(String, String), Vec<(i64, f64)>>;

/// Produces traffic that looks real: repeat visitors (their repeats within
/// the dedupe window do not count), bots, invalid messages, events out of
/// time order and in JSON and protobuf. Returns what counts.
async fn traffic(kafka: &Kafka, arts: &[Art], n: usize, seed: u64) -> (Truth, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = now_ms();
    let mut truth = Truth::new();
    let mut sent = 0;
    // Each (visitor, article, type) counted once within the window.
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        // Bigger sites get more of the traffic: the first articles are theirs.
        let a = &arts[(rng.random_range(0.0f64..1.0).powi(2) * arts.len() as f64) as usize];
        let at = now - rng.random_range(0..3 * HOUR);
        let visitor = format!("v{}", rng.random_range(0..40));
        let (kind, units) = match rng.random_range(0..10) {
            0 => ("share", 1.0),
            1 | 2 => ("engagement", rng.random_range(1..60) as f64),
            _ => ("page_view", 1.0),
        };
        let bot = rng.random_bool(0.05);
        let mut e = json!({"type": kind, "site": a.site, "article_id": a.id, "visitor_id": visitor,
                           "occurred_at": at, "event_id": format!("e{i}")});
        if kind == "engagement" {
            e["engaged_seconds"] = json!(units);
        }
        if kind == "share" {
            e["network"] = json!("x");
        }
        if bot {
            e["user_agent"] =
                json!("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        }
        // Whether it counts: page views and shares once per visitor within
        // the window (the events span 3 h, the window is 30 min: repeats
        // are judged by the filter's rule, so the test keeps them apart by
        // giving each visitor one event per article and type at most).
        let triple = (visitor.clone(), a.site, a.id.clone(), kind);
        if kind != "engagement" && !seen.insert(triple) {
            continue;
        }
        if kind == "engagement" {
            // Engagement is summed per visitor; keep each visitor under the cap.
            e["visitor_id"] = json!(format!("e-{i}"));
        }
        if !bot {
            let w = match kind {
                "share" => 5.0,
                "engagement" => 0.05 * units,
                _ => 1.0,
            };
            truth
                .entry((a.site.to_string(), a.id.clone()))
                .or_default()
                .push((at, w));
        }
        let key = format!("{}:{}", a.site, a.id);
        if i % 4 == 0 {
            let p = prost::Message::encode_to_vec(&to_proto(&e));
            kafka
                .send(&kafka.events, &key, &p, Some("application/x-protobuf"))
                .await;
        } else {
            kafka.send_json(&kafka.events, &key, &e).await;
        }
        sent += 1;
        // A repeat by the same visitor, which must not count.
        if kind == "page_view" && !bot && rng.random_bool(0.1) {
            let mut again = e.clone();
            again["occurred_at"] = json!(at + 1000);
            again["event_id"] = json!(format!("e{i}r"));
            kafka.send_json(&kafka.events, &key, &again).await;
            sent += 1;
        }
        // Now and then something invalid, and an event of no site.
        if i % 97 == 0 {
            kafka
                .send(&kafka.events, "bad", b"{\"type\":\"page_view\",", None)
                .await;
            kafka
                .send_json(
                    &kafka.events,
                    "nosite",
                    &json!({"type": "page_view", "article_id": "n0", "occurred_at": at}),
                )
                .await;
            sent += 2;
        }
    }
    (truth, sent)
}

/// Expected (member, score) of a list: `keep` maps an article to the
/// members it adds its events to.
fn expected(
    truth: &Truth,
    arts: &[Art],
    at: i64,
    h: f64,
    keep: impl Fn(&Art) -> Vec<String>,
) -> Vec<(String, f64)> {
    let mut sums: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for a in arts {
        if let Some(events) = truth.get(&(a.site.to_string(), a.id.clone())) {
            for m in keep(a) {
                sums.entry(m).or_default().extend(events);
            }
        }
    }
    let mut out: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(m, e)| (m, direct_score(&e, at, h)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    out
}

/// Checks one list: items in order, each (site, id) or tag with its score.
async fn check(app: &TestApp, path: &str, tags: bool, want: impl Fn(i64) -> Vec<(String, f64)>) {
    let (status, body) = app.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let at = parse_time(body["generated_at"].as_str().unwrap());
    let want = want(at);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), want.len(), "{path}: {body}");
    for (i, (item, (member, score))) in items.iter().zip(&want).enumerate() {
        let got = if tags {
            item["tag"].as_str().unwrap().to_string()
        } else {
            format!(
                "{}/{}",
                item["site"].as_str().unwrap(),
                item["article_id"].as_str().unwrap()
            )
        };
        assert_eq!(&got, member, "{path} rank {}: {body}", i + 1);
        let s = item["score"].as_f64().unwrap();
        assert!(
            rel_err(s, *score) <= 1e-9,
            "{path} {member}: {s} vs {score}"
        );
    }
}

/// Every list of the network and of each site against the formula.
async fn check_every_list(app: &TestApp, truth: &Truth, arts: &[Art]) -> usize {
    let mut lists = 0;
    let scopes: Vec<Option<&str>> = std::iter::once(None)
        .chain(SITES.iter().map(|(id, _, _)| Some(*id)))
        .collect();
    for site in scopes {
        let in_site = |a: &Art| site.is_none_or(|s| s == a.site);
        let q = site.map(|s| format!("&site={s}")).unwrap_or_default();
        for (profile, h) in [("trending", TRENDING_H), ("popular", POPULAR_H)] {
            let member = |a: &Art| format!("{}/{}", a.site, a.id);
            check(
                app,
                &format!("/v1/rankings/{profile}?limit=100{q}"),
                false,
                |at| {
                    expected(truth, arts, at, h, |a| {
                        if in_site(a) {
                            vec![member(a)]
                        } else {
                            vec![]
                        }
                    })
                },
            )
            .await;
            for section in SECTIONS {
                check(
                    app,
                    &format!("/v1/rankings/{profile}?section={section}&limit=100{q}"),
                    false,
                    |at| {
                        expected(truth, arts, at, h, |a| {
                            if in_site(a) && a.section == section {
                                vec![member(a)]
                            } else {
                                vec![]
                            }
                        })
                    },
                )
                .await;
            }
            for tag in TAGS {
                check(
                    app,
                    &format!("/v1/rankings/{profile}?tag={tag}&limit=100{q}"),
                    false,
                    |at| {
                        expected(truth, arts, at, h, |a| {
                            if in_site(a) && a.tags.contains(&tag) {
                                vec![member(a)]
                            } else {
                                vec![]
                            }
                        })
                    },
                )
                .await;
            }
            // Popular Tags: a tag's score sums over its articles (and sites).
            check(
                app,
                &format!("/v1/rankings/{profile}/tags?limit=100{q}"),
                true,
                |at| {
                    expected(truth, arts, at, h, |a| {
                        if in_site(a) {
                            a.tags.iter().map(|t| t.to_string()).collect()
                        } else {
                            vec![]
                        }
                    })
                },
            )
            .await;
            lists += 2 + SECTIONS.len() + TAGS.len();
        }
        // The News Index holds the site's articles (or every one).
        let (_, index) = app.get(&format!("/v1/index?limit=100{q}")).await;
        let n = arts.iter().filter(|a| in_site(a)).count();
        assert_eq!(index["items"].as_array().unwrap().len(), n, "{index}");
        lists += 1;
    }
    lists
}

/// Runs the network's traffic against `s` and checks every list.
async fn network_is_exact(name: &str, s: Settings, kafka: &Kafka) {
    let app = spawn_app(network(s)).await;
    let arts = articles();
    // Most articles are published first; the last of each site only after
    // its events were applied: they count once it is (DESIGN §12).
    let late: Vec<&Art> = SITES
        .iter()
        .filter_map(|(site, _, n)| {
            arts.iter()
                .find(|a| a.site == *site && a.id == format!("n{}", n - 1))
        })
        .collect();
    for a in arts
        .iter()
        .filter(|a| !late.iter().any(|l| l.site == a.site && l.id == a.id))
    {
        kafka.send_json(&kafka.articles, &a.id, &published(a)).await;
    }
    let (truth, sent) = traffic(kafka, &arts, 1500, 7).await;
    wait_until("the traffic read", Duration::from_secs(120), || async {
        app.metric("popularity_messages_read_total").await
            >= (sent + arts.len() - late.len()) as f64
    })
    .await;
    let counted: usize = truth.values().map(Vec::len).sum();
    wait_until("the traffic applied", Duration::from_secs(120), || async {
        app.applied().await >= counted as f64
    })
    .await;
    // The late articles are listed nowhere yet.
    let (_, body) = app.get("/v1/rankings/weekly?limit=100").await;
    let listed: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["site"].as_str().unwrap(),
                i["article_id"].as_str().unwrap()
            )
        })
        .collect();
    for l in &late {
        assert!(
            !listed.contains(&format!("{}/{}", l.site, l.id)),
            "{name}: {listed:?}"
        );
    }
    for a in &late {
        kafka.send_json(&kafka.articles, &a.id, &published(a)).await;
    }
    let keys: Vec<String> = late
        .iter()
        .map(|a| format!("{}:{}", a.site, a.id))
        .collect();
    wait_until("the late publications", Duration::from_secs(60), || async {
        app.store
            .articles(&keys)
            .await
            .unwrap()
            .into_iter()
            .all(|a| a.live().is_some())
    })
    .await;
    let lists = check_every_list(&app, &truth, &arts).await;
    // Events without a site, in a network of several, were dead-lettered.
    assert!(
        app.metric("popularity_invalid_messages_total{reason=\"unknown_site\"}")
            .await
            >= 1.0,
        "{name}"
    );
    println!("{name}: {lists} lists of a network of 3 sites exact ({counted} counted events)");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_site_and_network_lists_match_the_formula_on_every_topology() {
    let servers = topologies();
    for (name, backend, mode, url) in [
        (
            "memory",
            Backend::Memory,
            RedisMode::Standalone,
            String::new(),
        ),
        (
            "standalone",
            Backend::Redis,
            RedisMode::Standalone,
            servers.standalone.url.clone(),
        ),
        (
            "cluster",
            Backend::Redis,
            RedisMode::Cluster,
            servers.cluster.url.clone(),
        ),
        (
            "sentinel",
            Backend::Redis,
            RedisMode::Sentinel,
            servers.sentinels.url.clone(),
        ),
    ] {
        let kafka = Kafka::start(3);
        let mut s = settings(&kafka, None);
        if backend == Backend::Redis {
            s.store.backend = backend;
            s.store.redis_mode = mode;
            s.store.redis_url = url;
            s.store.sentinel_master = servers.sentinels.master_name.clone();
            s.store.key_prefix = random_name("net");
        }
        network_is_exact(name, s, &kafka).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_no_site_or_of_an_unknown_site_are_dead_lettered_as_unknown_site() {
    let kafka = Kafka::start(1);
    let _app = spawn_app(network(settings(&kafka, None))).await;
    for (key, e) in [
        (
            "none",
            json!({"type": "page_view", "article_id": "a", "occurred_at": now_ms()}),
        ),
        (
            "evil",
            json!({"type": "page_view", "site": "evil", "article_id": "a", "occurred_at": now_ms()}),
        ),
        (
            "pub",
            json!({"type": "article_published", "article_id": "a", "title": "T"}),
        ),
    ] {
        let topic = if key == "pub" {
            &kafka.articles
        } else {
            &kafka.events
        };
        kafka.send_json(topic, key, &e).await;
    }
    let mut letters = read_dead_letters(&kafka, 3).await;
    letters.sort();
    assert_eq!(
        letters,
        [
            (
                "evil".to_string(),
                "unknown_site: \"evil\" is not a site of this network".to_string()
            ),
            (
                "none".to_string(),
                "unknown_site: site is required: this network has several sites".to_string()
            ),
            (
                "pub".to_string(),
                "unknown_site: site is required: this network has several sites".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_takes_events_only_from_its_own_pages() {
    let kafka = Kafka::start(1);
    let app = spawn_app(network(settings(&kafka, None))).await;
    let post = |origin: &'static str, site: &'static str| {
        app.http
            .post(format!("{}/v1/events", app.base))
            .header("origin", origin)
            .body(json!({"type": "page_view", "site": site, "article_id": "n0"}).to_string())
            .send()
    };
    assert_eq!(
        post("https://big.example", "big").await.unwrap().status(),
        202
    );
    // Another site's page cannot post for it.
    let r = post("https://small.example", "big").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "https://small.example is not an origin of site \"big\""
    );
    // A site that does not exist is the request's fault.
    let r = post("https://big.example", "nope").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_event"
    );
    // Lists of an unknown site are not found.
    let (status, body) = app.get("/v1/rankings/trending?site=nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (_, sites) = app.get("/v1/sites").await;
    assert_eq!(
        sites["sites"][2],
        json!({"id": "small", "name": "Small Town News"})
    );
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editors_hide_an_article_from_every_list_and_show_it_again() {
    let redis = redis_server();
    let kafka = Kafka::start(1);
    // Without tokens the admin API does not exist.
    {
        let app = spawn_app(network(settings(&kafka, Some(&redis)))).await;
        let r = app
            .http
            .put(format!("{}/v1/admin/sites/big/exclusions/n0", app.admin))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        app.stop().await;
    }
    let mut s = network(settings(&kafka, Some(&redis)));
    s.admin.tokens = vec![
        AdminToken {
            name: "night-desk".into(),
            sha256: sha256_hex("night-secret"),
            sites: vec![],
        },
        AdminToken {
            name: "small-desk".into(),
            sha256: sha256_hex("small-secret"),
            sites: vec!["small".into()],
        },
    ];
    s.validate().unwrap();
    let app = spawn_app(s).await;
    let arts = articles();
    for a in &arts {
        kafka.send_json(&kafka.articles, &a.id, &published(a)).await;
    }
    // The topics are read apart: only published articles are listed.
    let keys: Vec<String> = arts
        .iter()
        .map(|a| format!("{}:{}", a.site, a.id))
        .collect();
    wait_published(&app, &keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for (i, a) in arts.iter().enumerate() {
        let e = json!({"type": "share", "site": a.site, "article_id": a.id, "visitor_id": format!("v{i}"),
                       "network": "x", "occurred_at": now_ms()});
        kafka.send_json(&kafka.events, &a.id, &e).await;
    }
    app.wait_metric(
        "popularity_events_total{outcome=\"applied\",type=\"share\"}",
        arts.len() as f64,
    )
    .await;
    // The public listener has no editors' API (DESIGN §13), even with a token.
    let public = app
        .http
        .put(format!("{}/v1/admin/sites/big/exclusions/n0", app.base))
        .bearer_auth("night-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let admin = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = app.http.request(method, format!("{}{path}", app.admin));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let put = reqwest::Method::PUT;
    let path = "/v1/admin/sites/big/exclusions/n0";
    assert_eq!(admin(put.clone(), path, None).await.unwrap().status(), 401);
    assert_eq!(
        admin(put.clone(), path, Some("guess"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        admin(put.clone(), path, Some("small-secret"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        admin(
            put.clone(),
            "/v1/admin/sites/nope/exclusions/n0",
            Some("night-secret")
        )
        .await
        .unwrap()
        .status(),
        404
    );
    let app = &app;
    let listed = |path: &'static str| async move {
        let (_, body) = app.get(path).await;
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["site"].as_str().unwrap(),
                    i["article_id"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    let lists = [
        "/v1/rankings/trending?limit=100",
        "/v1/rankings/trending?site=big&limit=100",
        "/v1/rankings/trending?site=big&section=news&limit=100",
        "/v1/index?limit=100",
        "/v1/index?site=big&limit=100",
    ];
    // The events are applied; their articles' publications may be read
    // a flush later (another topic): every list shows n0 once they are.
    for l in lists {
        wait_until(l, Duration::from_secs(30), || async {
            listed(l).await.contains(&"big/n0".to_string())
        })
        .await;
    }
    let r = admin(put.clone(), path, Some("night-secret"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (
            body["site"].as_str(),
            body["article_id"].as_str(),
            body["by"].as_str()
        ),
        (Some("big"), Some("n0"), Some("night-desk"))
    );
    for l in lists {
        let items = listed(l).await;
        assert!(!items.contains(&"big/n0".to_string()), "{l}: {items:?}");
        // The same id on another site is another article, still listed.
        if !l.contains("site=") {
            assert!(items.contains(&"mid/n0".to_string()), "{l}: {items:?}");
        }
    }
    let (_, all) = app.get("/v1/rankings/trending?site=big&limit=100").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 7, "{all}");
    let r = admin(
        reqwest::Method::GET,
        "/v1/admin/sites/big/exclusions",
        Some("night-secret"),
    )
    .await
    .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        admin(reqwest::Method::GET, path, Some("night-secret"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        admin(reqwest::Method::DELETE, path, Some("night-secret"))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        admin(reqwest::Method::GET, path, Some("night-secret"))
            .await
            .unwrap()
            .status(),
        404
    );
    for l in lists {
        assert!(listed(l).await.contains(&"big/n0".to_string()), "{l}");
    }
}
