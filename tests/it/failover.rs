//! Faults of the store's topologies while a backlog with repeat visitors
//! drains: the primary that took the most writes killed with SIGKILL (in a
//! cluster its replica takes over, under Sentinel a replica is promoted),
//! and slots resharded mid-stream. Every ranking is compared with the
//! formula over the produced events; each test prints its figures.

use std::process::Command;
use std::time::{Duration, Instant};

use popularity::config::{RedisMode, Settings};
use popularity::scoring::Group;
use popularity::store::ProfileId;

use crate::helpers::*;
use crate::kit::{assert_exact, consumer_env, report, verify, Consumer, Draining};

/// The consumer's environment on a topology, with `WAIT 1` after writes.
fn env_of(kafka: &Kafka, mode: &str, url: &str, prefix: &str) -> Vec<(String, String)> {
    let mut env = consumer_env(kafka, url, prefix, &random_name("g"));
    env.push(("POPULARITY__STORE__REDIS_MODE".into(), mode.into()));
    env.push(("POPULARITY__STORE__WAIT_REPLICAS".into(), "1".into()));
    env
}

/// Calls of the write scripts (`EVALSHA`) each server answered so far.
fn script_calls(url: &str) -> u64 {
    let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return 0;
    };
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap_or_default();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Asks an API replica for the overall ranking every 50 ms from `kill`
/// on, until it has answered 200 promptly for two seconds in a row, and
/// returns when the last request that failed or took over 250 ms ended
/// (zero when none did).
async fn api_back_after(api: &Api, kill: Instant) -> Duration {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut disturbed_until = Duration::ZERO;
    let mut ok_since = None;
    while kill.elapsed() < Duration::from_secs(60) {
        let started = Instant::now();
        let ok = http
            .get(&api.rankings)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok && started.elapsed() < Duration::from_millis(250) {
            let since = *ok_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                break;
            }
        } else {
            disturbed_until = kill.elapsed();
            ok_since = None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    disturbed_until
}

/// When `/readyz` said "no master", for the report.
fn span_of(seen: &[f64]) -> String {
    match (seen.first(), seen.last()) {
        (Some(a), Some(b)) => format!("{a:.1}-{b:.1} s after it"),
        _ => "never (between two polls)".to_string(),
    }
}

/// Polls a consumer's `/readyz` for `span` and returns when, after the
/// start, it reported a store with no master (`[]` when never).
fn watch_readiness(consumer: &Consumer, span: Duration) -> tokio::task::JoinHandle<Vec<f64>> {
    let url = consumer.metrics_url.replace("/metrics", "/readyz");
    tokio::spawn(async move {
        let started = Instant::now();
        let mut seen = Vec::new();
        while started.elapsed() < span {
            if let Ok(r) = reqwest::get(&url).await {
                let unready = r.status() == 503;
                if unready
                    && r.text()
                        .await
                        .unwrap_or_default()
                        .contains("store has no master")
                {
                    seen.push(started.elapsed().as_secs_f64());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// A backlog draining into a topology: the consumer (a child process)
/// with `WAIT 1`, the paced stream of 40,000 events, and a store of the
/// test's own on the same keys, once 8,000 events are counted.
async fn draining(settings: &Settings, mode: &str, seed: u64) -> Draining {
    let kafka = Kafka::start(6);
    let st = &settings.store;
    let mut env = env_of(&kafka, mode, &st.redis_url, &st.key_prefix);
    env.push((
        "POPULARITY__STORE__SENTINEL_MASTER".into(),
        st.sentinel_master.clone(),
    ));
    let store = popularity::store::connect(settings).await.unwrap();
    Draining::start(kafka, &env, store, (40_000, 1_500.0, seed), 8_000).await
}

/// Settings of a store of `mode` on `url`, under a new key prefix.
fn settings_of(mode: RedisMode, url: &str, prefix: &str) -> Settings {
    let mut s = Settings::defaults();
    s.store.redis_mode = mode;
    s.store.redis_url = url.to_string();
    s.store.key_prefix = random_name(prefix);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed_mid_stream_with_wait_1_loses_and_doubles_nothing() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let s = settings_of(RedisMode::Cluster, &cluster.url, "cfail");
    let Draining {
        consumer,
        stream,
        store,
        kafka: _kafka,
    } = draining(&s, "cluster", 31).await;
    // The primary that took the most writes.
    let primaries = cluster.primaries().unwrap();
    let calls: Vec<(usize, u64)> = primaries
        .iter()
        .map(|(i, _)| (*i, script_calls(&cluster.nodes[*i].url)))
        .collect();
    let (victim, most) = *calls.iter().max_by_key(|(_, c)| *c).unwrap();
    let api = Api::start(s.clone()).await;
    cluster.nodes[victim].down();
    let killed = Instant::now();
    let readiness = watch_readiness(&consumer, Duration::from_secs(8));
    let back = api_back_after(&api, killed).await;
    api.stop().await;
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    let failed_over = killed.elapsed();
    // The killed node comes back as its successor's replica, as a restarted
    // pod would: until then no write of that shard can be replicated.
    cluster.nodes[victim].up().unwrap();
    // Whether a poll lands in the second or two without a master depends
    // on timing: `no_master_is_reported_*` checks it deterministically.
    let no_master = readiness.await.unwrap();
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report(
        "cluster primary killed (wait_replicas 1)",
        &v,
        &format!(
            "killed the primary with {most} of {} script calls; the API answered again {:.1} s after the kill, cluster ok {:.1} s after it; /readyz said no master {}",
            calls.iter().map(|(_, c)| c).sum::<u64>(),
            back.as_secs_f64(),
            failed_over.as_secs_f64(),
            span_of(&no_master)
        ),
    );
    assert_exact(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_mid_stream_with_wait_1_loses_and_doubles_nothing() {
    let mut set = RedisSentinels::start(2, 3).unwrap();
    let mut s = settings_of(RedisMode::Sentinel, &set.url, "sfail");
    s.store.sentinel_master = set.master_name.clone();
    let Draining {
        consumer,
        stream,
        store,
        kafka: _kafka,
    } = draining(&s, "sentinel", 32).await;
    let master = set.master().unwrap();
    let most = script_calls(&set.servers[master].url);
    let api = Api::start(s.clone()).await;
    set.servers[master].down();
    let killed = Instant::now();
    let readiness = watch_readiness(&consumer, Duration::from_secs(8));
    let back = api_back_after(&api, killed).await;
    api.stop().await;
    let promoted = set.master().unwrap();
    assert_ne!(promoted, master, "a replica was promoted");
    // Whether a poll lands in the second or two without a master depends
    // on timing: `no_master_is_reported_*` checks it deterministically.
    let no_master = readiness.await.unwrap();
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report(
        "Sentinel master killed (wait_replicas 1)",
        &v,
        &format!(
            "killed the master after {most} script calls; the API answered again {:.1} s after the kill; /readyz said no master {}",
            back.as_secs_f64(),
            span_of(&no_master)
        ),
    );
    assert_exact(&v);
}

/// Waits until every node agrees on who serves which slot, as
/// `redis-cli --cluster reshard` requires.
fn wait_agreed(seed: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let check = Command::new("redis-cli")
            .args(["--cluster", "check", seed])
            .output()
            .unwrap();
        if check.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the nodes did not agree on the slots within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_mid_stream_lose_and_double_nothing() {
    let cluster = RedisCluster::start(3, 1).unwrap();
    let s = settings_of(RedisMode::Cluster, &cluster.url, "reshard");
    let Draining {
        consumer,
        stream,
        store,
        kafka: _kafka,
    } = draining(&s, "cluster", 33).await;
    // Move a third of every primary's slots to the next one, while writing.
    let primaries = cluster.primaries().unwrap();
    let started = Instant::now();
    let mut moved = 0;
    for k in 0..primaries.len() {
        let (from_node, from) = &primaries[k];
        let (_, to) = &primaries[(k + 1) % primaries.len()];
        let seed = format!("127.0.0.1:{}", cluster.nodes[*from_node].port());
        wait_agreed(&seed);
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &seed])
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", "1800", "--cluster-yes"])
            .args(["--cluster-pipeline", "10"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        moved += 1800;
    }
    let took = started.elapsed();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    drop(consumer);
    report(
        "slots resharded mid-stream",
        &v,
        &format!("{moved} slots moved in {:.1} s", took.as_secs_f64()),
    );
    assert_exact(&v);
}

/// An API replica on `settings`' store, running.
struct Api {
    readyz: String,
    /// The overall trending ranking.
    rankings: String,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Api {
    /// An API replica with its response cache off, so that every request reads Redis.
    async fn start(mut settings: Settings) -> Api {
        settings.api.listen = "127.0.0.1:0".into();
        settings.api.admin_listen = "127.0.0.1:0".into();
        settings.api.cache_ttl = Duration::ZERO;
        let app = popularity::app::App::build(settings, popularity::app::Role::Api)
            .await
            .unwrap();
        let readyz = format!("http://{}/readyz", app.local_addr());
        let rankings = format!("http://{}/v1/rankings/trending?limit=10", app.local_addr());
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(app.run(stop.clone()));
        Api {
            readyz,
            rankings,
            stop,
            server,
        }
    }

    /// `/readyz`: its status and body.
    async fn readiness(&self) -> (u16, String) {
        match reqwest::get(&self.readyz).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Polls `/readyz` until it names a store with no master (`true`) or 20 s pass.
    async fn says_no_master(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let (status, body) = self.readiness().await;
            if status == 503 && body.contains("store has no master") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_master_is_reported_by_readiness_in_cluster_and_sentinel_mode() {
    // No replicas: what dies is not replaced.
    let mut cluster = RedisCluster::start(3, 0).unwrap();
    let mut s = Settings::defaults();
    s.store.redis_mode = RedisMode::Cluster;
    s.store.redis_url = cluster.url.clone();
    let api = Api::start(s.clone()).await;
    assert_eq!(api.readiness().await.0, 200, "cluster: ready while whole");
    let (first, _) = cluster.primaries().unwrap()[0].clone();
    cluster.nodes[first].down();
    assert!(
        api.says_no_master().await,
        "cluster: a slot without a primary"
    );
    api.stop().await;

    let mut set = RedisSentinels::start(0, 3).unwrap();
    s.store.redis_mode = RedisMode::Sentinel;
    s.store.redis_url = set.url.clone();
    s.store.sentinel_master = set.master_name.clone();
    let api = Api::start(s).await;
    assert_eq!(
        api.readiness().await.0,
        200,
        "sentinel: ready with a master"
    );
    let master = set.master().unwrap();
    set.servers[master].down();
    assert!(
        api.says_no_master().await,
        "sentinel: the master is gone and nothing was promoted"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_sentinel_urls_reaches_sentinels_and_master() {
    use popularity::event::EventType;
    use popularity::scoring::Aggregate;
    let set = RedisSentinels::start_with_password(1, 3, Some("s3cret-pw")).unwrap();
    let mut s = Settings::defaults();
    s.store.redis_mode = RedisMode::Sentinel;
    s.store.redis_url = set.url.clone();
    s.store.sentinel_master = set.master_name.clone();
    s.store.wait_replicas = 1;
    s.store.key_prefix = random_name("auth");
    let store = popularity::store::connect(&s).await.unwrap();
    store.ping().await.unwrap();
    let now = now_ms();
    let profiles = popularity::scoring::profiles(&s.scoring);
    let mut a = Aggregate::new(profiles, now);
    a.add(EventType::Share, "a", None, &[], now - 3_600_000, 1.0);
    assert!(store.apply(&a).await.unwrap().conflicts.is_empty());
    let page = store
        .top(&Group::All, ProfileId(0), 0..10, now)
        .await
        .unwrap();
    let want = direct_score(&[(now - 3_600_000, 5.0)], now, TRENDING_H);
    assert_eq!(page.items.len(), 1);
    assert!(rel_err(page.items[0].score, want) < 1e-12);
    // Without the password the Sentinels refuse.
    s.store.redis_url = set.url.replace(":s3cret-pw@", "");
    assert!(popularity::store::connect(&s).await.is_err());
}
