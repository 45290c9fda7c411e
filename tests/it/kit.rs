//! The kit of the fault and failover tests: realistic traffic produced to
//! a broker (several sites, repeat visitors, bots, poison messages,
//! articles published late), consumers run as child processes, and the
//! verdict: every ranking compared with the formula of DESIGN §3 computed
//! here from what was produced.

use std::collections::{BTreeMap, HashMap};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use popularity::event::proto;
use popularity::scoring::Group;
use popularity::store::{ProfileId, Store};
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::helpers::*;

pub const SECTIONS: [&str; 4] = ["news", "business", "sport", "culture"];
pub const TAGS: [&str; 5] = ["red", "green", "blue", "gold", "grey"];
pub const ARTICLES: usize = 40;

pub fn section_of(a: usize) -> &'static str {
    SECTIONS[a % SECTIONS.len()]
}

pub fn tags_of(a: usize) -> Vec<&'static str> {
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

impl Produced {
    /// Messages sent, repeats and bots included (poison messages not).
    pub fn sent(&self) -> u64 {
        self.total + self.repeats + self.bots
    }

    /// Events that count, per article and type.
    pub fn counted(&self) -> Vec<[u64; 3]> {
        self.events
            .iter()
            .map(|evs| {
                let mut n = [0; 3];
                for (_, k, _) in evs {
                    n[*k] += 1;
                }
                n
            })
            .collect()
    }
}

/// Share of page views and shares that the same visitor sends again.
pub const REPEAT_RATE: f64 = 0.02;
/// Share of events that come from bots.
pub const BOT_RATE: f64 = 0.01;
/// A repeat is sent this many events after the first occurrence at most, so
/// that at the test rates many straddle a fault (a few seconds).
pub const REPEAT_DELAY_MAX: usize = 6_000;

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
pub const SITES: [&str; 2] = ["east", "west"];

/// The site of article `a` in a network, or none.
pub fn site_of(a: usize, network: bool) -> Option<&'static str> {
    network.then(|| SITES[a % SITES.len()])
}

/// The key of article `a` (`src/site.rs`): its id, prefixed with its site
/// in a network.
pub fn key_of(a: usize, network: bool) -> String {
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
pub async fn publish(producer: &FutureProducer, topic: &str, network: bool) {
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

/// Publishes the articles (see [`publish`]), then produces a stream of
/// `n` events keyed by article, paced at `rate` per second, that
/// looks like real traffic: times spread over two hours and out of order,
/// 2% of page views and shares repeated by the same visitor (up to a second
/// earlier or later, a few seconds later in the stream, so on the same
/// partition and within the dedupe window: duplicates), 1% bots (half
/// flagged, half with a crawler's user agent), and optionally one poison
/// message every `poison_every`. Only events that count are listed in the
/// result, as the formula needs them.
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
pub fn behaviour_bytes(kind: usize, b: proto::Behaviour, units: f64) -> Vec<u8> {
    proto::Event::behaviour(popularity::event::EventType::ALL[kind], b, "", units).encode_to_vec()
}

/// Queues one message, waiting while the producer's queue is full.
pub async fn send_paced(
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
pub fn poison(k: usize) -> (Vec<u8>, Option<&'static str>) {
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
pub type MembersOf = Box<dyn Fn(usize) -> Vec<String>>;

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
        // As `helpers::settings`: the traffic's model has no lateness.
        ("POPULARITY__INGEST__DEDUPE_LATENESS".into(), "7days".into()),
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
        self.gauge("popularity_partitions_assigned").await
    }

    /// The value of an unlabelled gauge of its `/metrics`; None while it
    /// does not answer.
    pub async fn gauge(&self, name: &str) -> Option<i64> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The partitions each member holds (-1 where it does not answer).
pub async fn spread(members: &[&Consumer]) -> Vec<i64> {
    let mut each = Vec::new();
    for m in members {
        each.push(m.partitions().await.unwrap_or(-1));
    }
    each
}

/// Waits until `members` share the 12 partitions of a test's two topics of
/// six, each holding some, and returns how many each holds.
pub async fn wait_sharing(what: &str, members: &[&Consumer], within: Duration) -> Vec<i64> {
    let shared = |each: &[i64]| each.iter().sum::<i64>() == 12 && each.iter().all(|p| *p > 0);
    wait_until(what, within, || async { shared(&spread(members).await) }).await;
    spread(members).await
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
pub async fn wait_progress(store: &StoreRef, since: u64, min_more: u64, total: u64) -> bool {
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
pub async fn fault_rounds(
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

/// The producer of the fault tests' streams. On Tansu each record is a
/// batch of its own: Tansu 0.6.0 skips the rest of a batch for a consumer
/// that resumes inside it, which a consumer restarted after committing
/// mid-batch does (`tansu::on_tansu_reading_from_inside_a_batch_skips_the_rest_of_it`).
pub fn fast_producer(kafka: &Kafka) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("linger.ms", "10")
        .set("compression.type", "lz4");
    if matches!(kafka.broker, Broker::Tansu(_)) {
        config.set("batch.num.messages", "1");
    }
    config.create().unwrap()
}

/// The store the consumers write, built as the service builds it.
pub type StoreRef = std::sync::Arc<dyn Store>;

pub async fn store_for(redis_url: &str, prefix: &str) -> StoreRef {
    let mut s = popularity::config::Settings::defaults();
    s.store.redis_url = redis_url.to_string();
    s.store.key_prefix = prefix.to_string();
    popularity::store::connect(&s).await.unwrap()
}

/// A consumer (a child process run with `env`) draining a paced stream
/// produced to `kafka`, with a store of the test's own on its keys.
pub struct Draining {
    pub consumer: Consumer,
    pub stream: tokio::task::JoinHandle<Produced>,
    pub store: StoreRef,
    /// The broker, kept running as long as this is.
    pub kafka: Kafka,
}

impl Draining {
    /// Starts the consumer and a stream of `events` at `rate` a second
    /// (`seed` picks them), and returns once `warm` of them are applied.
    pub async fn start(
        kafka: Kafka,
        env: &[(String, String)],
        store: StoreRef,
        (events, rate, seed): (usize, f64, u64),
        warm: u64,
    ) -> Draining {
        let consumer = Consumer::start(env);
        let producer = fast_producer(&kafka);
        let topic = Topics::of(&kafka);
        let stream =
            tokio::spawn(async move { produce(&producer, &topic, events, rate, seed, None).await });
        assert!(
            wait_progress(&store, 0, warm, events as u64).await,
            "{warm} of {events} events applied"
        );
        Draining {
            consumer,
            stream,
            store,
            kafka,
        }
    }
}
