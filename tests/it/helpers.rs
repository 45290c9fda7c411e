//! Real parts for the integration tests: a `redis-server` on a random port, a
//! dev broker with random topic names, a producer, and the service on port 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use popularity::app::{App, Role};
use popularity::config::{Backend, Settings};
use popularity_cli::devbroker::DevBroker;
use rand::Rng;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

/// The top of the checkout (this test belongs to the `cli/` package).
pub const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Half-lives of the default profiles, milliseconds.
pub const TRENDING_H: f64 = 2.0 * 3600.0 * 1000.0;
pub const POPULAR_H: f64 = 24.0 * 3600.0 * 1000.0;

pub fn free_port() -> u16 {
    popularity_cli::redis_server::free_port().unwrap()
}

pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

pub use popularity::now_ms;

pub use popularity_cli::redis_server::{Persistence, RedisCluster, RedisSentinels, RedisServer};

/// A `redis-server` of its own for one test, keeping nothing on disk.
pub fn redis_server() -> RedisServer {
    RedisServer::start(Persistence::None).expect("redis-server")
}

/// Redis in every topology the store runs on, started for one test: one
/// server, a 3-primary cluster with a replica each, and a master with two
/// replicas under three Sentinels.
pub struct Topologies {
    pub standalone: RedisServer,
    pub cluster: RedisCluster,
    pub sentinels: RedisSentinels,
}

pub fn topologies() -> Topologies {
    Topologies {
        standalone: redis_server(),
        cluster: RedisCluster::start(3, 1).expect("redis cluster"),
        sentinels: RedisSentinels::start(2, 3).expect("redis sentinels"),
    }
}

/// A Kafka-protocol broker of the test's own: librdkafka's mock cluster
/// (in process), or Tansu, a second implementation of the protocol with a
/// real group coordinator (a process on a random port).
pub enum Broker {
    Dev(DevBroker),
    Tansu(Tansu),
}

impl Broker {
    pub fn bootstrap_servers(&self) -> &str {
        match self {
            Broker::Dev(b) => b.bootstrap_servers(),
            Broker::Tansu(t) => &t.bootstrap,
        }
    }

    /// Takes the dev broker down or up (Tansu keeps its data in memory:
    /// a test that stops it would lose the topics).
    pub fn set_down(&self, down: bool) {
        match self {
            Broker::Dev(b) => b.set_down(down),
            Broker::Tansu(_) => panic!("set_down is a dev broker test"),
        }
    }

    /// The dev broker itself, for what only it can do.
    pub fn dev(&self) -> &DevBroker {
        match self {
            Broker::Dev(b) => b,
            Broker::Tansu(_) => panic!("a dev broker test"),
        }
    }
}

/// `tansu broker` with its memory storage on a random port of 127.0.0.1.
/// The binary is `$POPULARITY_TANSU`, else what `.ci/run` installs under
/// `~/.cache/popularity/tansu`, else `tansu` on the PATH.
pub struct Tansu {
    child: std::process::Child,
    pub bootstrap: String,
    exe: String,
}

impl Tansu {
    fn exe() -> String {
        if let Ok(p) = std::env::var("POPULARITY_TANSU") {
            return p;
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let cached = format!("{home}/.cache/popularity/tansu/bin/tansu");
        if std::path::Path::new(&cached).exists() {
            cached
        } else {
            "tansu".into()
        }
    }

    pub fn start(topics: &[&str], partitions: i32) -> Tansu {
        let exe = Tansu::exe();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&exe)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", &random_name("cluster")])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{exe}: {e} (cargo install tansu --locked --features dynostore, as .ci/run does)")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            exe,
        };
        for topic in topics {
            let out = std::process::Command::new(&tansu.exe)
                .args(["topic", "create", topic, "--broker", &url])
                .args(["--partitions", &partitions.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "tansu topic create {topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which broker a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Dev,
    Tansu,
}

/// A broker, its topics and a producer.
pub struct Kafka {
    pub broker: Broker,
    pub events: String,
    pub articles: String,
    pub dead_letter: String,
    pub producer: FutureProducer,
}

impl Kafka {
    /// On the dev broker.
    pub fn start(partitions: i32) -> Kafka {
        Kafka::on(BrokerKind::Dev, partitions)
    }

    /// On Tansu.
    pub fn on_tansu(partitions: i32) -> Kafka {
        Kafka::on(BrokerKind::Tansu, partitions)
    }

    pub fn on(kind: BrokerKind, partitions: i32) -> Kafka {
        let events = random_name("events");
        let articles = random_name("articles");
        let dead_letter = random_name("dlq");
        let topics = [events.as_str(), articles.as_str(), dead_letter.as_str()];
        let broker = match kind {
            BrokerKind::Dev => Broker::Dev(DevBroker::start(&topics, partitions).unwrap()),
            BrokerKind::Tansu => Broker::Tansu(Tansu::start(&topics, partitions)),
        };
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .unwrap();
        Kafka {
            broker,
            events,
            articles,
            dead_letter,
            producer,
        }
    }

    /// Sends `payload` keyed by `key` with optional headers, waiting for the ack.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8], content_type: Option<&str>) {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(ct) = content_type {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce");
    }

    /// A consumer of this broker that commits nothing, for a test to read
    /// what it assigns it (`name` names its group).
    pub fn reader<C: rdkafka::config::FromClientConfig>(&self, name: &str) -> C {
        ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap_servers())
            .set("group.id", random_name(name))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    }

    pub async fn send_json(&self, topic: &str, key: &str, value: &serde_json::Value) {
        self.send(topic, key, value.to_string().as_bytes(), None)
            .await;
    }
}

/// Settings pointing at the test's own broker, Redis and topics.
pub fn settings(kafka: &Kafka, redis: Option<&RedisServer>) -> Settings {
    let mut s = Settings::defaults();
    s.kafka.brokers = kafka.broker.bootstrap_servers().to_string();
    s.kafka.group_id = random_name("group");
    s.kafka.topics.events = kafka.events.clone();
    s.kafka.topics.articles = kafka.articles.clone();
    s.kafka.topics.dead_letter = kafka.dead_letter.clone();
    if matches!(kafka.broker, Broker::Tansu(_)) {
        // Tansu 0.6.0 rebalances a cooperative-sticky group every session
        // timeout (docs/operations.md): the eager assignor, as in `kit`.
        let strategy = "partition.assignment.strategy".to_string();
        s.kafka.properties.insert(strategy, "range".to_string());
    }
    s.api.listen = "127.0.0.1:0".to_string();
    s.api.admin_listen = "127.0.0.1:0".to_string();
    s.api.cache_ttl = Duration::ZERO;
    s.ingest.flush_interval = Duration::from_millis(50);
    // The tests' traffic spreads event times over hours and counts a repeat
    // within the window as a duplicate however late it comes (their model
    // of DESIGN §2): a lateness past their spread. The lateness rule itself
    // is tested in `event::filter`.
    s.ingest.dedupe_lateness = Duration::from_secs(7 * 86_400);
    match redis {
        Some(r) => {
            s.store.backend = Backend::Redis;
            s.store.redis_url = r.url.clone();
            s.store.key_prefix = random_name("t");
        }
        None => s.store.backend = Backend::Memory,
    }
    s.validate().unwrap();
    s
}

/// The service running in this process.
pub struct TestApp {
    pub base: String,
    /// The operators' listener: `/metrics` and the editors' API.
    pub admin: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub store: Arc<dyn popularity::store::Store>,
}

pub async fn spawn_app(settings: Settings) -> TestApp {
    let app = App::build(settings, Role::All).await.expect("build");
    let base = format!("http://{}", app.local_addr());
    let admin = format!("http://{}", app.admin_addr());
    let store = app.store().expect("this role has a store");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base,
        admin,
        http: reqwest::Client::new(),
        shutdown,
        handle: Some(handle),
        store,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// The first frame of the Server-Sent Events stream at `path` (up to
    /// its blank line): its event name and its data, parsed.
    pub async fn first_frame(&self, path: &str) -> (String, serde_json::Value) {
        let mut r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
                .await
                .expect("a frame within 10 s")
                .unwrap()
                .expect("an event");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .trim()
                .to_string()
        };
        (
            field("event:"),
            serde_json::from_str(&field("data:")).unwrap(),
        )
    }

    /// `/metrics`, from the operators' listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `popularity_events_total{outcome="applied",type="page_view"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Events applied so far, every type: counted once the store
    /// acknowledged their flush.
    pub async fn applied(&self) -> f64 {
        let mut total = 0.0;
        for t in ["page_view", "share", "engagement"] {
            total += self
                .metric(&format!(
                    "popularity_events_total{{outcome=\"applied\",type=\"{t}\"}}"
                ))
                .await;
        }
        total
    }

    /// Waits until `series` reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(series).await;
            if v >= value {
                assert_eq!(v, value, "{series} overshot");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {v}, waited for {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `Σ w · 2^(−(T − t)/H)`: DESIGN §3, computed directly.
pub fn direct_score(events: &[(i64, f64)], at_ms: i64, half_life_ms: f64) -> f64 {
    events
        .iter()
        .map(|(t, w)| w * (-((at_ms - t) as f64) / half_life_ms).exp2())
        .sum()
}

pub fn parse_time(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn rel_err(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// Waits until `check` holds, polling every 50 ms; fails the test naming
/// `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Headless Chromium with `args` (e.g. `--dump-dom URL`), as this machine
/// runs it: no sandbox (root), no GPU, no background connections, a profile
/// of its own. Returns what it printed.
pub fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("chromium must be installed (apt-get install -y chromium)");
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `child` exits, at most until `deadline`; past it, kills the
/// child and fails the test naming `what`.
pub fn exited_by(
    child: &mut std::process::Child,
    deadline: Instant,
    what: &str,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` and waits for it to exit, at most 20 s.
pub fn sigterm(mut child: std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    exited_by(
        &mut child,
        Instant::now() + Duration::from_secs(20),
        "the process on SIGTERM",
    )
}

/// The lines of a JSON log file, each parsed (a line that is not JSON
/// fails the test).
pub fn json_log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

/// The first `n` messages of the dead-letter topic (partition 0): each key
/// and its `x-error` header.
pub async fn read_dead_letters(kafka: &Kafka, n: usize) -> Vec<(String, String)> {
    use rdkafka::message::Headers as _;
    use rdkafka::Message as _;
    let consumer = dead_letter_reader(kafka);
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let error = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "x-error"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        out.push((key, error));
    }
    out
}

/// A consumer of every partition of the dead-letter topic, from its beginning.
pub fn dead_letter_reader(kafka: &Kafka) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: StreamConsumer = kafka.reader("dlq-reader");
    let metadata = consumer
        .fetch_metadata(Some(&kafka.dead_letter), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(&kafka.dead_letter, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}
