//! Fault tests: consumers killed, stopped, added and removed, Redis stopped
//! and connections dropped mid-stream. Each compares every ranking with the
//! scores computed here from all produced events, and prints its figures.

use std::collections::{BTreeMap, HashMap};

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popularity::event::proto;
use popularity::scoring::Group;
use popularity::store::{ProfileId, Store};
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const SECTIONS: [&str; 4] = ["news", "business", "sport", "culture"];
const TAGS: [&str; 5] = ["red", "green", "blue", "gold", "grey"];
const ARTICLES: usize = 40;

fn section_of(a: usize) -> &'static str {
    SECTIONS[a % SECTIONS.len()]
}

fn tags_of(a: usize) -> Vec<&'static str> {
    vec![TAGS[a % TAGS.len()], TAGS[(a / 2) % TAGS.len()]]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Events produced by a test, per article: (time, kind index, units) of
/// the events that count. Repeats and bots are produced but not listed.
#[derive(Default)]
pub struct Produced {
    events: Vec<Vec<(i64, usize, f64)>>,
    total: u64,
    /// The articles belong to the two sites of [`SITES`].
    network: bool,
    /// Page views and shares sent again by the same visitor.
    pub repeats: u64,
    /// Events from crawlers or flagged as bots.
    pub bots: u64,
}

/// Share of page views and shares that the same visitor sends again.
const REPEAT_RATE: f64 = 0.02;
/// Share of events that come from bots.
const BOT_RATE: f64 = 0.01;
/// A repeat is sent this many events after the first occurrence at most, so
/// that at the test rates many straddle a fault (a few seconds).
const REPEAT_DELAY_MAX: usize = 6_000;

/// A stream of events keyed by article, paced at `rate` per second, that
/// looks like real traffic: times spread over two hours and out of order,
/// 2% of page views and shares repeated by the same visitor (up to a second
/// earlier or later, a few seconds later in the stream, so on the same
/// partition and within the dedupe window: duplicates), 1% bots (half
/// flagged, half with a crawler's user agent), and optionally one poison
/// message every `poison_every`. Only events that count are listed in the
/// result, as the formula needs them.
/// The topics a fault test produces to, and whether its articles belong
/// to a network of sites.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub articles: String,
    pub network: bool,
}

impl Topics {
    pub fn of(kafka: &Kafka) -> Topics {
        Topics {
            events: kafka.events.clone(),
            articles: kafka.articles.clone(),
            network: false,
        }
    }

    /// The same, the articles spread over the two sites of [`SITES`].
    pub fn network(kafka: &Kafka) -> Topics {
        Topics {
            network: true,
            ..Topics::of(kafka)
        }
    }
}

/// The sites of a network fault test: article `a` is on `SITES[a % 2]`.
const SITES: [&str; 2] = ["east", "west"];

/// The site of article `a` in a network, or none.
fn site_of(a: usize, network: bool) -> Option<&'static str> {
    network.then(|| SITES[a % SITES.len()])
}

/// The key of article `a` (`src/site.rs`): its id, prefixed with its site
/// in a network.
fn key_of(a: usize, network: bool) -> String {
    match site_of(a, network) {
        Some(site) => format!("{site}:f{a:02}"),
        None => format!("f{a:02}"),
    }
}

/// A configuration file naming the network's sites, for the consumer's
/// `--config` (sites are configured in files only).
pub fn network_config() -> tempfile::NamedTempFile {
    use std::io::Write as _;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for site in SITES {
        writeln!(
            f,
            "[[sites]]\nid = \"{site}\"\nname = \"{site}\"\norigins = []\n"
        )
        .unwrap();
    }
    f
}

/// Publishes the test's articles, each in its section with its tags: only
/// published articles are ranked in a section or a tag (DESIGN §12).
async fn publish(producer: &FutureProducer, topic: &str, network: bool) {
    let mut in_flight = Vec::new();
    for a in 0..ARTICLES {
        let id = format!("f{a:02}");
        let mut meta = serde_json::json!({"type": "article_published", "article_id": id,
            "title": format!("Story {id}"), "section": section_of(a), "tags": tags_of(a),
            "published_at": now_ms() - 3 * 3_600_000});
        if let Some(site) = site_of(a, network) {
            meta["site"] = serde_json::json!(site);
        }
        let payload = meta.to_string().into_bytes();
        send_paced(producer, topic, &id, &payload, None, &mut in_flight).await;
    }
    for d in in_flight {
        d.await.unwrap().unwrap();
    }
}

/// Publishes the articles (see [`publish`]), then produces the events.
pub async fn produce(
    producer: &FutureProducer,
    topics: &Topics,
    n: usize,
    rate: f64,
    seed: u64,
    poison_every: Option<usize>,
) -> Produced {
    publish(producer, &topics.articles, topics.network).await;
    let topic = topics.events.as_str();
    let network = topics.network;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Produced {
        events: vec![Vec::new(); ARTICLES],
        network,
        ..Produced::default()
    };
    let started = Instant::now();
    let now = now_ms();
    let mut in_flight = Vec::new();
    // Repeats waiting for their turn: (due at event number, key, payload).
    let mut repeats: std::collections::BTreeMap<usize, Vec<(String, Vec<u8>)>> = Default::default();
    for i in 0..n {
        let mut batch: Vec<(String, Vec<u8>, Option<&'static str>)> = Vec::new();
        if let Some(every) = poison_every {
            if i % every == every - 1 {
                let (payload, ct) = poison(i / every);
                batch.push(("poison".to_string(), payload, ct));
            }
        }
        let a = rng.random_range(0..ARTICLES);
        let at = now - rng.random_range(0..2 * 3_600_000);
        let kind = rng.random_range(0..3);
        let units = if kind == 2 {
            rng.random_range(1..600) as f64
        } else {
            1.0
        };
        let bot = rng.random_bool(BOT_RATE);
        let b = proto::Behaviour {
            event_id: format!("e{i}"),
            article_id: format!("f{a:02}"),
            occurred_at_ms: at,
            visitor_id: format!("v{seed}-{i}"),
            section: section_of(a).to_string(),
            tags: tags_of(a).into_iter().map(str::to_string).collect(),
            user_agent: if bot && i % 2 == 0 {
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)".into()
            } else {
                String::new()
            },
            bot: bot && i % 2 == 1,
            site: site_of(a, network).unwrap_or_default().to_string(),
        };
        let key = format!("f{a:02}");
        if !bot && kind < 2 && rng.random_bool(REPEAT_RATE) {
            let mut again = b.clone();
            again.event_id = format!("e{i}r");
            again.occurred_at_ms = at + rng.random_range(-1_000..=1_000);
            let due = i + rng.random_range(1..=REPEAT_DELAY_MAX);
            repeats
                .entry(due)
                .or_default()
                .push((key.clone(), behaviour_bytes(kind, again, units)));
            out.repeats += 1;
        }
        batch.push((
            key,
            behaviour_bytes(kind, b, units),
            Some("application/x-protobuf"),
        ));
        for (key, payload) in repeats.remove(&i).unwrap_or_default() {
            batch.push((key, payload, Some("application/x-protobuf")));
        }
        if bot {
            out.bots += 1;
        } else {
            out.events[a].push((at, kind, units));
            out.total += 1;
        }
        for (key, payload, ct) in &batch {
            send_paced(producer, topic, key, payload, *ct, &mut in_flight).await;
        }
        if in_flight.len() >= 5_000 {
            for d in in_flight.drain(..) {
                d.await.unwrap().unwrap();
            }
        }
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    // Repeats due after the last event go last.
    for (key, payload) in repeats.into_values().flatten() {
        send_paced(
            producer,
            topic,
            &key,
            &payload,
            Some("application/x-protobuf"),
            &mut in_flight,
        )
        .await;
    }
    for d in in_flight {
        d.await.unwrap().unwrap();
    }
    out
}

/// One behaviour event of kind number `kind`, as protobuf bytes.
fn behaviour_bytes(kind: usize, b: proto::Behaviour, units: f64) -> Vec<u8> {
    proto::Event::behaviour(popularity::event::EventType::ALL[kind], b, "", units).encode_to_vec()
}

/// Queues one message, waiting while the producer's queue is full.
async fn send_paced(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    content_type: Option<&str>,
    in_flight: &mut Vec<rdkafka::producer::DeliveryFuture>,
) {
    loop {
        let mut r = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(ct) = content_type {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        match producer.send_result(r) {
            Ok(d) => {
                in_flight.push(d);
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The `k`-th poison message: each kind of invalid input in turn.
fn poison(k: usize) -> (Vec<u8>, Option<&'static str>) {
    let now = now_ms();
    match k % 6 {
        0 => (b"{\"type\":".to_vec(), None),
        1 => (vec![0xff, 0xfe, 0x01], Some("application/x-protobuf")),
        2 => (
            br#"{"type":"click","article_id":"x","occurred_at":1}"#.to_vec(),
            None,
        ),
        3 => (
            format!(r#"{{"type":"page_view","occurred_at":{now}}}"#).into_bytes(),
            None,
        ),
        4 => (
            format!(
                r#"{{"type":"page_view","article_id":"x","occurred_at":{}}}"#,
                now + 86_400_000
            )
            .into_bytes(),
            None,
        ),
        _ => (
            format!(
                r#"{{"type":"page_view","article_id":"x","occurred_at":{now},"pad":"{}"}}"#,
                "x".repeat(70_000)
            )
            .into_bytes(),
            None,
        ),
    }
}

/// The members an article contributes to in one group.
type MembersOf = Box<dyn Fn(usize) -> Vec<String>>;

/// What a test found: figures to print and assert on.
#[derive(Debug, Default)]
pub struct Verdict {
    pub produced: u64,
    pub repeats: u64,
    pub bots: u64,
    pub lost: u64,
    pub doubled: u64,
    pub max_rel_err: f64,
    pub compared: usize,
}

/// Waits until the store holds as many counted events as were produced
/// (and a little longer, to see any excess), then compares every ranking.
pub async fn verify(store: &StoreRef, produced: &Produced, timeout: Duration) -> Verdict {
    let ids: Vec<String> = (0..ARTICLES).map(|a| key_of(a, produced.network)).collect();
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    let mut stable_since = Instant::now();
    loop {
        let mut total = 0;
        for id in &ids {
            total += store.counts(id).await.unwrap().iter().sum::<u64>();
        }
        if total != last {
            last = total;
            stable_since = Instant::now();
        }
        if (total >= produced.total && stable_since.elapsed() > Duration::from_secs(2))
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut v = Verdict {
        produced: produced.total,
        repeats: produced.repeats,
        bots: produced.bots,
        ..Verdict::default()
    };
    for (a, id) in ids.iter().enumerate() {
        let got = store.counts(id).await.unwrap();
        let mut want = [0u64; 3];
        for (_, k, _) in &produced.events[a] {
            want[*k] += 1;
        }
        for k in 0..3 {
            v.lost += want[k].saturating_sub(got[k]);
            v.doubled += got[k].saturating_sub(want[k]);
        }
    }
    let settings = popularity::config::Settings::defaults();
    let profiles = popularity::scoring::profiles(&settings.scoring);
    let at = now_ms();
    // Expected score of each article per profile, from the definition.
    let article_scores: Vec<Vec<f64>> = profiles
        .iter()
        .map(|p| {
            produced
                .events
                .iter()
                .map(|evs| {
                    let weighted: Vec<(i64, f64)> = evs
                        .iter()
                        .map(|(t, k, u)| {
                            (*t, p.weights.of(popularity::event::EventType::ALL[*k]) * u)
                        })
                        .collect();
                    direct_score(&weighted, at, p.half_life_ms)
                })
                .collect()
        })
        .collect();
    // Every group of the network, and in a network every site's too.
    let network = produced.network;
    let scopes: Vec<Option<&'static str>> = if network {
        std::iter::once(None).chain(SITES.map(Some)).collect()
    } else {
        vec![None]
    };
    let mut groups: Vec<(Group, MembersOf)> = Vec::new();
    for scope in scopes {
        let in_scope = move |a: usize| scope.is_none_or(|s| site_of(a, network) == Some(s));
        let key = move |a: usize| vec![key_of(a, network)];
        let of = |g: Group| g.of_site(scope);
        groups.push((
            of(Group::All),
            Box::new(move |a| if in_scope(a) { key(a) } else { vec![] }),
        ));
        groups.push((
            of(Group::Tags),
            Box::new(move |a| {
                if in_scope(a) {
                    tags_of(a).into_iter().map(str::to_string).collect()
                } else {
                    vec![]
                }
            }),
        ));
        for s in SECTIONS {
            groups.push((
                of(Group::Section(s.to_string())),
                Box::new(move |a| {
                    if in_scope(a) && section_of(a) == s {
                        key(a)
                    } else {
                        vec![]
                    }
                }),
            ));
        }
        for t in TAGS {
            groups.push((
                of(Group::Tag(t.to_string())),
                Box::new(move |a| {
                    if in_scope(a) && tags_of(a).contains(&t) {
                        key(a)
                    } else {
                        vec![]
                    }
                }),
            ));
        }
    }
    for (p, scores) in article_scores.iter().enumerate() {
        for (group, members_of) in &groups {
            let mut want: BTreeMap<String, f64> = BTreeMap::new();
            for (a, s) in scores.iter().enumerate() {
                if produced.events[a].is_empty() {
                    continue;
                }
                for m in members_of(a) {
                    *want.entry(m).or_default() += s;
                }
            }
            let page = store.top(group, ProfileId(p), 0..1000, at).await.unwrap();
            let got: HashMap<String, f64> = page
                .items
                .into_iter()
                .map(|s| (s.member, s.score))
                .collect();
            assert_eq!(got.len(), want.len(), "{group:?}: members differ");
            for (m, w) in &want {
                let g = got.get(m).copied().unwrap_or(0.0);
                v.max_rel_err = v.max_rel_err.max(rel_err(g, *w));
                v.compared += 1;
            }
        }
    }
    v
}

/// A `popularity serve --role consumer` child process.
pub struct Consumer {
    pub child: Child,
    pub metrics_url: String,
}

pub fn consumer_env(
    kafka: &Kafka,
    redis_url: &str,
    prefix: &str,
    group: &str,
) -> Vec<(String, String)> {
    vec![
        (
            "POPULARITY__KAFKA__BROKERS".into(),
            kafka.broker.bootstrap_servers().into(),
        ),
        ("POPULARITY__KAFKA__GROUP_ID".into(), group.into()),
        (
            "POPULARITY__KAFKA__TOPICS__EVENTS".into(),
            kafka.events.clone(),
        ),
        (
            "POPULARITY__KAFKA__TOPICS__ARTICLES".into(),
            kafka.articles.clone(),
        ),
        (
            "POPULARITY__KAFKA__TOPICS__DEAD_LETTER".into(),
            kafka.dead_letter.clone(),
        ),
        // A dead member leaves the group quickly, so restarts rebalance fast.
        (
            "POPULARITY__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS".into(),
            "6000".into(),
        ),
        (
            "POPULARITY__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS".into(),
            "500".into(),
        ),
        ("POPULARITY__STORE__REDIS_URL".into(), redis_url.into()),
        ("POPULARITY__STORE__KEY_PREFIX".into(), prefix.into()),
        ("POPULARITY__INGEST__FLUSH_INTERVAL".into(), "100ms".into()),
        ("POPULARITY__INGEST__MAX_BATCH_EVENTS".into(), "5000".into()),
    ]
    .into_iter()
    // Tansu 0.6.0 rebalances a cooperative-sticky group every session
    // timeout (docs/operations.md): its consumers use the eager assignor.
    .chain(matches!(kafka.broker, Broker::Tansu(_)).then(|| {
        (
            "POPULARITY__KAFKA__PROPERTIES__PARTITION_ASSIGNMENT_STRATEGY".to_string(),
            "range".to_string(),
        )
    }))
    .collect()
}

impl Consumer {
    /// Starts the process and waits until it listens, on another port if
    /// the one it was given was taken meanwhile.
    pub fn start(env: &[(String, String)]) -> Consumer {
        // `--config FILE` rides in `env` as the pair ("--config", FILE).
        let (config, env): (Vec<_>, Vec<_>) =
            env.iter().cloned().partition(|(k, _)| k == "--config");
        for _ in 0..5 {
            let (public, port) = (free_port(), free_port());
            let mut child = Command::new(env!("CARGO_BIN_EXE_popularity"))
                .args(["serve", "--role", "consumer"])
                .args(config.iter().flat_map(|(k, v)| [k.clone(), v.clone()]))
                .envs(env.iter().cloned())
                .env("POPULARITY__API__LISTEN", format!("127.0.0.1:{public}"))
                .env("POPULARITY__API__ADMIN_LISTEN", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Consumer {
                        child,
                        metrics_url: format!("http://127.0.0.1:{port}/metrics"),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the consumer did not start");
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and returns how long the process took to exit cleanly.
    pub fn terminate(mut self) -> Duration {
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = exited_by(
            &mut self.child,
            started + Duration::from_secs(60),
            "the consumer on SIGTERM",
        );
        assert!(status.success(), "consumer exited with {status}");
        started.elapsed()
    }

    pub async fn partitions(&self) -> Option<i64> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("popularity_partitions_assigned "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counted events in the store so far.
pub async fn applied(store: &StoreRef) -> u64 {
    let mut total = 0;
    // Either key of each article: there are no others.
    for a in 0..ARTICLES {
        for network in [false, true] {
            total += store
                .counts(&key_of(a, network))
                .await
                .unwrap()
                .iter()
                .sum::<u64>();
        }
    }
    total
}

/// Waits until the store holds at least `min_more` events beyond `since`,
/// so that a fault lands while a consumer is really working. False when all
/// `total` events were applied first.
async fn wait_progress(store: &StoreRef, since: u64, min_more: u64, total: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = applied(store).await;
        if now >= since + min_more && now < total {
            return true;
        }
        if now >= total || Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ten rounds of: start a consumer, wait until it applied `min_more` more
/// events, wait a random moment under `jitter_ms`, then `fault` it. Returns
/// the rounds done (fewer when all `total` events were applied first) and
/// the events applied after each.
async fn fault_rounds(
    env: &[(String, String)],
    store: &StoreRef,
    total: u64,
    min_more: u64,
    jitter_ms: u64,
    seed: u64,
    mut fault: impl FnMut(Consumer),
) -> (usize, Vec<u64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut after = Vec::new();
    while after.len() < 10 {
        let c = Consumer::start(env);
        let since = applied(store).await;
        if !wait_progress(store, since, min_more, total).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..jitter_ms))).await;
        fault(c);
        after.push(applied(store).await);
    }
    (after.len(), after)
}

pub fn report(name: &str, v: &Verdict, extra: &str) {
    println!(
        "faults: {name}: events counted {} (and {} repeats, {} bots), {extra}, lost {}, doubled {}, max relative error {:.1e} over {} scores",
        v.produced, v.repeats, v.bots, v.lost, v.doubled, v.max_rel_err, v.compared
    );
}

pub fn assert_exact(v: &Verdict) {
    assert_eq!(v.lost, 0, "events lost: {v:?}");
    assert_eq!(v.doubled, 0, "events doubled: {v:?}");
    assert!(v.max_rel_err <= 1e-9, "scores off: {v:?}");
    assert!(v.compared > 100, "too little compared: {v:?}");
}

pub fn fast_producer(kafka: &Kafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

/// The store the consumers write, built as the service builds it.
pub type StoreRef = std::sync::Arc<dyn Store>;

async fn store_for(redis_url: &str, prefix: &str) -> StoreRef {
    let mut s = popularity::config::Settings::defaults();
    s.store.redis_url = redis_url.to_string();
    s.store.key_prefix = prefix.to_string();
    popularity::store::connect(&s).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    kill_9_at_random_moments(BrokerKind::Dev).await
}

/// The same against Tansu's group coordinator. Not in the default run:
/// Tansu 0.6.0 lost 1 of 198,049 events in one of three runs (under the
/// whole suite's load; the two run alone were exact); whether the broker or the consumer
/// is at fault is not established (docs/operations.md). Run it with
/// `cargo test --test it -- --ignored kill_9_at_random_moments_on_tansu`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Tansu 0.6.0 lost 1 of 198,049 events in one of three runs; see docs/operations.md"]
async fn kill_9_at_random_moments_on_tansu_loses_and_doubles_nothing() {
    kill_9_at_random_moments(BrokerKind::Tansu).await
}

async fn kill_9_at_random_moments(kind: BrokerKind) {
    let redis = redis_server();
    let kafka = Kafka::on(kind, 6);
    let prefix = random_name("k9");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        // 1,200 events/s: ten rounds of restart (a dead member leaves the
        // group after the 6 s session timeout) fit in the stream's 167 s.
        tokio::spawn(async move { produce(&producer, &topic, 200_000, 1_200.0, 9, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let (kills, applied_at_kills) =
        fault_rounds(&env, &store, 200_000, 500, 1500, 99, Consumer::kill9).await;
    let produced = stream.await.unwrap();
    let last = Consumer::start(&env);
    let v = verify(&store, &produced, Duration::from_secs(180)).await;
    drop(last);
    report(
        &format!("kill -9 on {kind:?}"),
        &v,
        &format!("kills {kills} (events applied at each: {applied_at_kills:?})"),
    );
    assert_eq!(kills, 10, "every event was applied before ten kills");
    assert_exact(&v);
}

/// The same in a network of two sites: every list of the network and of
/// each site stays exact through ten kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_network_of_sites_loses_and_doubles_nothing_in_any_list() {
    let redis = redis_server();
    let kafka = Kafka::start(6);
    let prefix = random_name("k9n");
    let config = network_config();
    let mut env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    env.push(("--config".into(), config.path().display().to_string()));
    let producer = fast_producer(&kafka);
    let topic = Topics::network(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 100_000, 1_200.0, 19, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let (kills, applied_at_kills) =
        fault_rounds(&env, &store, 100_000, 300, 1500, 23, Consumer::kill9).await;
    let produced = stream.await.unwrap();
    let last = Consumer::start(&env);
    let v = verify(&store, &produced, Duration::from_secs(180)).await;
    drop(last);
    report(
        "kill -9 in a network of two sites",
        &v,
        &format!("kills {kills} (events applied at each: {applied_at_kills:?})"),
    );
    assert!(
        kills >= 5,
        "only {kills} kills before every event was applied"
    );
    // 3 scopes × (overall, tags, 4 sections, 5 tags) × 3 profiles.
    assert!(v.compared > 300, "only {} scores compared", v.compared);
    assert_exact(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_deadline_and_restarts_double_nothing() {
    let redis = redis_server();
    let kafka = Kafka::start(6);
    let prefix = random_name("term");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 100_000, 1_500.0, 5, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let mut slowest = Duration::ZERO;
    let (stops, _) = fault_rounds(&env, &store, 100_000, 300, 1000, 5, |c| {
        let took = c.terminate();
        assert!(
            took < Duration::from_secs(20),
            "exit took {took:?}, past the 20 s deadline"
        );
        slowest = slowest.max(took);
    })
    .await;
    let produced = stream.await.unwrap();
    let last = Consumer::start(&env);
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(last);
    report(
        "SIGTERM",
        &v,
        &format!("terminations {stops}, slowest exit {slowest:?}"),
    );
    assert_eq!(stops, 10, "every event was applied before ten terminations");
    assert_exact(&v);
}

/// The partitions each member holds (-1 where it does not answer).
async fn spread(members: &[&Consumer]) -> Vec<i64> {
    let mut each = Vec::new();
    for m in members {
        each.push(m.partitions().await.unwrap_or(-1));
    }
    each
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_with_one_killed_and_one_added_stay_exact() {
    three_consumers_with_one_killed_and_one_added(BrokerKind::Dev).await
}

async fn three_consumers_with_one_killed_and_one_added(kind: BrokerKind) {
    let redis = redis_server();
    let kafka = Kafka::on(kind, 6);
    let prefix = random_name("grp");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 90_000, 6_000.0, 3, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let a = Consumer::start(&env);
    let b = Consumer::start(&env);
    let c = Consumer::start(&env);
    // Each of the 12 partitions (two topics of six) belongs to one member.
    let shared = |each: &[i64]| each.iter().sum::<i64>() == 12 && each.iter().all(|p| *p > 0);
    wait_until(
        "three members sharing the partitions",
        Duration::from_secs(60),
        || async { shared(&spread(&[&a, &b, &c]).await) },
    )
    .await;
    assert!(wait_progress(&store, 0, 2_000, 90_000).await);
    b.kill9();
    // Added while the group still waits for the dead member's session.
    let since = applied(&store).await;
    assert!(wait_progress(&store, since, 1_000, 90_000).await);
    let d = Consumer::start(&env);
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    wait_until(
        "the live members sharing the partitions",
        Duration::from_secs(60),
        || async { shared(&spread(&[&a, &c, &d]).await) },
    )
    .await;
    let owned = spread(&[&a, &c, &d]).await;
    report(
        "3 consumers, 1 killed, 1 added",
        &v,
        &format!("partitions per live member {owned:?}"),
    );
    assert_exact(&v);
}

/// A TCP relay to Redis that, `drops` times, lets a script call through and
/// then cuts the connection before the reply comes back.
async fn flaky_relay(target: String, drops: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            let done = counter.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let cut = Arc::new(AtomicBool::new(false));
                let cut2 = cut.clone();
                let back = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if cut2.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let script = buf[..n].windows(7).any(|w| w == b"EVALSHA");
                    // Every third script call, while drops remain.
                    if script
                        && seen.fetch_add(1, Ordering::SeqCst) % 3 == 2
                        && done.load(Ordering::SeqCst) < drops
                    {
                        cut.store(true, Ordering::SeqCst);
                        let _ = sw.write_all(&buf[..n]).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    (format!("redis://{addr}"), done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_between_script_and_reply_double_nothing() {
    let redis = redis_server();
    let target = redis.url.trim_start_matches("redis://").to_string();
    let (relay_url, dropped) = flaky_relay(target, 5).await;
    let kafka = Kafka::start(6);
    let prefix = random_name("drop");
    let env = consumer_env(&kafka, &relay_url, &prefix, &random_name("g"));
    let consumer = Consumer::start(&env);
    let producer = fast_producer(&kafka);
    let produced = produce(&producer, &Topics::of(&kafka), 40_000, 2_000.0, 7, None).await;
    let store = store_for(&redis.url, &prefix).await;
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    let drops = dropped.load(Ordering::SeqCst);
    report("dropped connections", &v, &format!("replies cut {drops}"));
    assert!(drops >= 3, "the relay cut only {drops} replies");
    assert_exact(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_30_seconds_mid_stream_loses_and_doubles_nothing() {
    let mut redis = RedisServer::start(Persistence::AppendFsyncAlways).unwrap();
    let kafka = Kafka::start(6);
    let prefix = random_name("outage");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let consumer = Consumer::start(&env);
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 60_000, 1_000.0, 11, None).await });
    let store = store_for(&redis.url, &prefix).await;
    assert!(wait_progress(&store, 0, 5_000, 60_000).await);
    redis.down();
    let down_at = Instant::now();
    // While Redis is away the consumer pauses its partitions and is not ready.
    let paused = || async {
        let text = reqwest::get(&consumer.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("popularity_partitions_paused "))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    wait_until("paused partitions", Duration::from_secs(20), || async {
        paused().await.is_some_and(|p| p > 0)
    })
    .await;
    let paused = paused().await.unwrap_or(0);
    let ready = reqwest::get(consumer.metrics_url.replace("/metrics", "/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed())).await;
    redis.up().unwrap();
    let produced = stream.await.unwrap();
    // A connection of its own: the one from before the outage is broken.
    let store = store_for(&redis.url, &prefix).await;
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report(
        "Redis down 30 s",
        &v,
        &format!("partitions paused during the outage {paused}"),
    );
    assert_exact(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poison_message_per_thousand_goes_to_the_dead_letter_topic() {
    let redis = redis_server();
    let kafka = Kafka::start(6);
    let prefix = random_name("poison");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let consumer = Consumer::start(&env);
    let producer = fast_producer(&kafka);
    let produced = produce(
        &producer,
        &Topics::of(&kafka),
        30_000,
        10_000.0,
        13,
        Some(1000),
    )
    .await;
    let store = store_for(&redis.url, &prefix).await;
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    // Read the dead-letter topic back: 30 messages, each with its reason.
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("group.id", random_name("dlq"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&kafka.dead_letter]).unwrap();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    while reasons.values().sum::<usize>() < 30 {
        let m = tokio::time::timeout(Duration::from_secs(60), reader.recv())
            .await
            .expect("dead letters")
            .unwrap();
        let h = m.headers().unwrap();
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .map(|x| String::from_utf8_lossy(x.value.unwrap()).into_owned())
                .unwrap()
        };
        assert_eq!(get("x-source-topic"), kafka.events);
        assert!(get("x-source-offset").parse::<i64>().is_ok());
        let code = get("x-error").split(':').next().unwrap().to_string();
        *reasons.entry(code).or_default() += 1;
    }
    drop(consumer);
    report("poison 1/1000", &v, &format!("dead letters {reasons:?}"));
    for (code, n) in [
        ("malformed", 10),
        ("unknown_type", 5),
        ("missing_field", 5),
        ("future_timestamp", 5),
        ("oversized", 5),
    ] {
        assert_eq!(
            reasons.get(code).copied().unwrap_or(0),
            n,
            "{code}: {reasons:?}"
        );
    }
    assert_exact(&v);
}

/// One consumer draining a stream of 60,000 events over 12 partitions at
/// 2,000 events/s, once it applied 5,000 of them.
struct Draining {
    redis: RedisServer,
    prefix: String,
    store: StoreRef,
    consumer: Consumer,
    stream: tokio::task::JoinHandle<Produced>,
    _kafka: Kafka,
}

async fn draining(seed: u64) -> Draining {
    let redis = redis_server();
    let kafka = Kafka::start(12);
    let prefix = random_name("drain");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let consumer = Consumer::start(&env);
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 60_000, 2_000.0, seed, None).await });
    let store = store_for(&redis.url, &prefix).await;
    assert!(wait_progress(&store, 0, 5_000, 60_000).await);
    Draining {
        redis,
        prefix,
        store,
        consumer,
        stream,
        _kafka: kafka,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_with_sigstop_for_15_seconds_mid_stream_doubles_no_repeat() {
    let Draining {
        redis,
        store,
        consumer,
        stream,
        _kafka,
        ..
    } = draining(21).await;
    let pid = redis.pid().expect("running").to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report("Redis frozen 15 s", &v, "SIGSTOP once");
    assert_exact(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_with_client_kill_8_times_double_no_repeat() {
    let Draining {
        redis,
        prefix,
        consumer,
        stream,
        _kafka,
        ..
    } = draining(23).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let mut killed = Vec::new();
    for _ in 0..8 {
        // A connection of its own each time: the kill takes the test's too.
        let mut c = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        // Each kill hits a connection: wait until the consumer has one again.
        wait_until("the consumer to reconnect", Duration::from_secs(30), || {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg("normal")
                .query(&mut c)
                .unwrap();
            async move { list.lines().count() > 1 }
        })
        .await;
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut c)
            .unwrap();
        killed.push(n);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
    }
    let produced = stream.await.unwrap();
    let store = store_for(&redis.url, &prefix).await;
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report(
        "CLIENT KILL x8",
        &v,
        &format!("connections killed each time {killed:?}"),
    );
    assert!(
        killed.iter().all(|n| *n > 0),
        "a kill found no connection: {killed:?}"
    );
    assert_exact(&v);
}

/// Seconds from a restarted consumer's start to its first applied event,
/// after a `kill -9`, over `rounds` rounds.
async fn restart_times(env: &[(String, String)], store: &StoreRef, rounds: usize) -> Vec<f64> {
    let mut times = Vec::new();
    let mut c = Consumer::start(env);
    for _ in 0..rounds {
        let since = applied(store).await;
        assert!(wait_progress(store, since, 500, u64::MAX).await);
        c.kill9();
        let before = applied(store).await;
        let started = Instant::now();
        c = Consumer::start(env);
        assert!(wait_progress(store, before, 1, u64::MAX).await);
        times.push(started.elapsed().as_secs_f64());
    }
    drop(c);
    times
}

/// Measures recovery after a crash with and without static membership
/// (`group.instance.id`). The dev broker's group coordinator does not hand a
/// static member's partitions back before its session expires, so here both
/// wait for the session timeout (6 s) and the broker's rebalance delay; the
/// figures go to docs/operations.md. Fails if a restart takes longer than
/// those two and the restore allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_restarted_after_kill_9_applies_again_within_its_session_and_rebalance_delay() {
    let redis = redis_server();
    let kafka = Kafka::start(6);
    let prefix = random_name("static");
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 120_000, 1_000.0, 31, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let mut env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let dynamic = restart_times(&env, &store, 3).await;
    env.push((
        "POPULARITY__KAFKA__PROPERTIES__GROUP_INSTANCE_ID".into(),
        random_name("member"),
    ));
    let fixed = restart_times(&env, &store, 3).await;
    println!(
        "faults: restart to first applied event after kill -9, session timeout 6 s: \
         dynamic membership {dynamic:.1?} s, static membership {fixed:.1?} s"
    );
    stream.abort();
    let worst = dynamic.iter().chain(&fixed).cloned().fold(0.0, f64::max);
    // Session timeout 6 s, the dev broker's first-rebalance delay 3 s, and
    // start-up, restore and one flush interval.
    assert!(worst < 15.0, "a restart took {worst:.1} s");
}

/// Recovery after a crash on Tansu, a second implementation of the group
/// protocol: from a restarted consumer's start to its first applied event
/// after `kill -9`. Tansu 0.6.0 does not honour `group.instance.id`
/// (KIP-345: a static member is assigned and at once revoked, every
/// session timeout) nor hold a cooperative-sticky assignment (it rebalances
/// every session timeout), so the consumers here use the eager `range`
/// assignor and dynamic membership (docs/operations.md). A restart waits
/// for the dead member's session (6 s) to expire. Fails if it takes longer
/// than the session, start-up and restore allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_a_consumer_restarted_after_kill_9_applies_again_within_its_session() {
    let redis = redis_server();
    let kafka = Kafka::on_tansu(6);
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 120_000, 1_000.0, 31, None).await });
    let prefix = random_name("restart");
    let store = store_for(&redis.url, &prefix).await;
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let times = restart_times(&env, &store, 3).await;
    println!(
        "faults: on Tansu, restart to first applied event after kill -9, session timeout 6 s, \
         dynamic membership: {times:.1?} s"
    );
    stream.abort();
    let worst = times.iter().cloned().fold(0.0, f64::max);
    // The session timeout (6 s), start-up, restore and a flush interval.
    assert!(worst < 10.0, "a restart took {worst:.1} s");
}
