//! Row (t): what a newsroom pays per event in steady state. The service
//! runs as a child process (`serve --role all`), so that its CPU is its
//! own; backlogs are produced while it is stopped (`SIGSTOP`, so that the
//! producer does not share the cores with it), then drained, one after
//! another, each under the dev broker's 5 MiB per partition. The first
//! backlogs warm it up; then at least
//! `--steady-events` are measured: the drain's rate, and CPU µs per event
//! of the service process (`/proc/<pid>/stat`) and of Redis (its own
//! `/proc/<pid>/stat`) apart, with the service's RSS at each backlog.
//! Beside it, on the last backlogs as the topic retains them, in the same
//! run: kcat consuming only (a C client, no processing) and the Python peer
//! of row (h), their CPU from this process's waited-for children.
//! Three variants: the load generator's traffic (returning visitors,
//! repeats, bots, shares, engagement), a new visitor per event, and the
//! load generator's traffic whose time advances at 5,000 events per
//! second with a `dedupe_window` and `dedupe_lateness` of 60 s. In the
//! first two every backlog falls within one `dedupe_window` (30 min), so
//! the duplicate filters grow for the whole run, as they do while a
//! service catches up on the first half hour after an outage; in the third
//! the windows the filters hold level off during the warm-up (240 s of the
//! events' time, twice the window and lateness), as they do in a service
//! that has run longer than its window.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;

use super::committed::Committed;
use crate::devbroker::DevBroker;
use crate::loadgen::{self, EventClock, Limits};
use crate::newsroom::{Newsroom, Shape};
use crate::redis_server::RedisServer;
use popularity::config::Settings;
use popularity::now_ms;

use super::{fmt_rate, mib, BenchOptions, Row};

/// Events per backlog: about 3 MiB on each of the 12 partitions.
const BACKLOG: u64 = 150_000;
/// Backlogs drained before measuring: in the level variant, twice its
/// window and lateness of the events' time (8 × 150,000 events at 5,000 a
/// second are 240 s). Every variant warms up alike, so that the newsroom's
/// catalogue (an article more every 500 events) is the same size in each.
const WARM_UP: usize = 8;
/// The level variant's events per second of their own time, and its
/// `dedupe_window` and `dedupe_lateness`.
const LEVEL_RATE: f64 = 5_000.0;
const LEVEL_DEDUPE: &str = "60s";

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// Linux for every architecture the service builds on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) of process `pid`, or of this process's
/// waited-for children when `children`.
fn cpu_seconds(pid: &str, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime, stime are fields 14 and 15 of the line; cutime, cstime 16 and 17
    // (fields[0] here is field 3).
    let (u, s) = if children { (13, 14) } else { (11, 12) };
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(u) + tick(s)) / TICKS_PER_SECOND
}

/// The service in a child process of its own.
pub(super) struct Service {
    child: Child,
    /// The operators' listener, where `/metrics` is.
    admin: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// `serve --role all` for `settings`' broker and Redis, in consumer
    /// group `group`, keys under `prefix`, with `env` besides.
    pub fn start(
        settings: &Settings,
        group: &str,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Service> {
        let admin = crate::redis_server::free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .envs(env.iter().copied())
            .args(["serve", "--role", "all"])
            .env("POPULARITY__STORE__BACKEND", "redis")
            .env("POPULARITY__STORE__REDIS_URL", &settings.store.redis_url)
            .env("POPULARITY__STORE__KEY_PREFIX", prefix)
            .env("POPULARITY__KAFKA__BROKERS", &settings.kafka.brokers)
            .env("POPULARITY__KAFKA__GROUP_ID", group)
            .env(
                "POPULARITY__KAFKA__TOPICS__EVENTS",
                &settings.kafka.topics.events,
            )
            .env(
                "POPULARITY__KAFKA__TOPICS__ARTICLES",
                &settings.kafka.topics.articles,
            )
            .env(
                "POPULARITY__KAFKA__TOPICS__DEAD_LETTER",
                &settings.kafka.topics.dead_letter,
            )
            .env("POPULARITY__API__LISTEN", "127.0.0.1:0")
            .env(
                "POPULARITY__API__ADMIN_LISTEN",
                format!("127.0.0.1:{admin}"),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the service")?;
        Ok(Service {
            child,
            admin: format!("127.0.0.1:{admin}"),
        })
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid()])
            .status()?
            .success();
        if !ok {
            bail!("kill -{name} {} failed", self.pid());
        }
        Ok(())
    }

    /// Messages the service has flushed, or `None` while it does not answer.
    async fn flushed(&self) -> Option<f64> {
        self.metric("popularity_flush_messages_sum").await
    }

    /// The value of one series on the service's `/metrics`, or `None`
    /// while it does not answer.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.scrape().await?.get(series)
    }

    /// The service's `/metrics` once, to read several series from, or
    /// `None` while it does not answer.
    pub async fn scrape(&self) -> Option<Scrape> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(&self.admin).await.ok()?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin);
        s.write_all(req.as_bytes()).await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        Some(Scrape(text))
    }

    /// Waits until the service's group has committed `target` messages
    /// (`committed` reads them from the brokers); the time it took from
    /// `since`.
    async fn drained(
        &mut self,
        committed: &Committed,
        target: i64,
        since: Instant,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if committed.committed().await? >= target {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the service exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("the service did not flush {target} messages in 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the flushed count has not moved for `quiet`; returns it.
    async fn idle(&self, quiet: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (f64::NAN, Instant::now());
        loop {
            let now = self.flushed().await;
            match now {
                Some(f) if f == last.0 && last.1.elapsed() >= quiet => return Ok(f),
                Some(f) if f != last.0 => last = (f, Instant::now()),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("the service did not become idle in 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One variant of the row.
struct Variant {
    name: &'static str,
    shape: Shape,
    /// The service's settings besides the bench's.
    env: &'static [(&'static str, &'static str)],
    /// The events' clock in messages per second of it; `None`: the wall
    /// clock's.
    clock: Option<f64>,
}

/// One scrape of a service's `/metrics` (empty when it did not answer).
#[derive(Default)]
pub struct Scrape(String);

impl Scrape {
    /// The value of one series, labels included as exposed (e.g.
    /// `popularity_libc_heap_bytes{state="held"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The same, 0 when the series is not there.
    pub fn or_zero(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }
}

/// One variant's figures.
struct Steady {
    events: f64,
    seconds: f64,
    service_cpu: f64,
    redis_cpu: f64,
    rss: Vec<u64>,
    /// What the duplicate filters held at each measured backlog (bytes).
    filters: Vec<u64>,
    /// The heap's live allocations at each measured backlog (bytes).
    heap: Vec<u64>,
    /// What glibc's malloc (librdkafka's prefetched messages among it)
    /// took from the kernel at each measured backlog (bytes).
    libc: Vec<u64>,
    /// Windows the duplicate filters held at each measured backlog.
    windows: Vec<u64>,
    /// Redis's `INFO commandstats` over the measured backlogs.
    commands: Vec<Cmdstat>,
}

/// One command's line of `INFO commandstats`.
struct Cmdstat {
    name: String,
    calls: f64,
    usec: f64,
}

/// The commands of an `INFO commandstats` text, most time first.
fn command_stats(info: &str) -> Vec<Cmdstat> {
    let mut out: Vec<Cmdstat> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |f: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some(Cmdstat {
                name: name.to_string(),
                calls: field("calls")?,
                usec: field("usec")?,
            })
        })
        .collect();
    out.sort_by(|a, b| b.usec.total_cmp(&a.usec));
    out
}

/// Drains backlogs of `v`'s traffic through a service of its own.
async fn variant(
    options: &BenchOptions,
    settings: &Settings,
    redis: &RedisServer,
    v: &Variant,
) -> anyhow::Result<Steady> {
    let name = v.name;
    let group = format!("bench-steady-{}-{}", name.replace(' ', "-"), now_ms());
    let prefix = format!("steady{}", now_ms() % 100_000);
    let mut service = Service::start(settings, &group, &prefix, v.env)?;
    let redis_pid = redis
        .pid()
        .context("the bench's redis-server has a pid")?
        .to_string();
    // What the topics already hold is read first, as part of the warm-up.
    service.idle(Duration::from_secs(3)).await?;
    let topics = [
        settings.kafka.topics.events.as_str(),
        settings.kafka.topics.articles.as_str(),
    ];
    let committed = Committed::new(&settings.kafka, &group, &topics)?;
    let producer = loadgen::producer(&settings.kafka)?;
    let started_ms = now_ms();
    let mut newsroom = Newsroom::new(v.shape.clone(), started_ms);
    let clock = v.clock.map(|per_second| EventClock {
        start_ms: started_ms,
        per_second,
    });
    let measured_backlogs = (options.steady_events as f64 / BACKLOG as f64).ceil() as usize;
    let mut out = Steady {
        events: 0.0,
        seconds: 0.0,
        service_cpu: 0.0,
        redis_cpu: 0.0,
        rss: Vec::new(),
        filters: Vec::new(),
        heap: Vec::new(),
        libc: Vec::new(),
        windows: Vec::new(),
        commands: Vec::new(),
    };
    for round in 0..WARM_UP + measured_backlogs {
        service.signal("STOP")?;
        // The newsroom counts every message it made, across backlogs.
        let limits = Limits {
            count: Some(newsroom.produced() + BACKLOG),
            clock,
            ..Limits::default()
        };
        let sent = loadgen::run(
            &producer,
            &settings.kafka,
            &mut newsroom,
            limits,
            &CancellationToken::new(),
        )
        .await;
        // Messages of both topics (the newsroom's publications too), read
        // while the service is stopped.
        let target = committed.held().await?;
        let (cpu0, rcpu0) = (
            cpu_seconds(&service.pid(), false),
            cpu_seconds(&redis_pid, false),
        );
        if round == WARM_UP {
            super::reset_stats(&settings.store.redis_url)?;
        }
        let started = Instant::now();
        service.signal("CONT")?;
        let took = service.drained(&committed, target, started).await?;
        let (cpu1, rcpu1) = (
            cpu_seconds(&service.pid(), false),
            cpu_seconds(&redis_pid, false),
        );
        let rss = super::memory::rss_of(&format!("/proc/{}/status", service.pid()));
        let scrape = service.scrape().await.unwrap_or_default();
        let read = |series| scrape.or_zero(series) as u64;
        let filters = read("popularity_dedupe_bytes");
        let heap = read("popularity_heap_bytes");
        let libc = read("popularity_libc_heap_bytes{state=\"held\"}");
        let windows = read("popularity_dedupe_windows");
        eprintln!(
            "bench: (t) {name} backlog {round}: {} events in {:.2}s, service {:.2}s CPU, redis {:.2}s, RSS {}, heap {}, glibc {}, filters {} ({windows} windows)",
            sent.delivered,
            took.as_secs_f64(),
            cpu1 - cpu0,
            rcpu1 - rcpu0,
            mib(rss),
            mib(heap),
            mib(libc),
            mib(filters)
        );
        if round >= WARM_UP {
            out.events += sent.delivered as f64;
            out.seconds += took.as_secs_f64();
            out.service_cpu += cpu1 - cpu0;
            out.redis_cpu += rcpu1 - rcpu0;
            out.rss.push(rss);
            out.filters.push(filters);
            out.heap.push(heap);
            out.libc.push(libc);
            out.windows.push(windows);
        }
    }
    out.commands = command_stats(&super::redis_info(
        &settings.store.redis_url,
        "commandstats",
    )?);
    Ok(out)
}

/// kcat consuming the events topic from what it retains, doing nothing
/// with it: (messages, seconds, CPU seconds).
fn kcat(settings: &Settings) -> anyhow::Result<Option<(f64, f64, f64)>> {
    if Command::new("kcat").arg("-V").output().is_err() {
        eprintln!("bench: (t) kcat skipped: not installed (bench/run.sh installs it)");
        return Ok(None);
    }
    let before = cpu_seconds("self", true);
    let started = Instant::now();
    let mut child = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &settings.kafka.brokers,
            "-t",
            &settings.kafka.topics.events,
        ])
        .args(["-o", "beginning", "-e", "-q", "-f", "\n"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kcat")?;
    let mut lines = 0usize;
    let mut buf = [0u8; 65536];
    let mut stdout = child.stdout.take().context("kcat's output")?;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    child.wait()?;
    let took = started.elapsed().as_secs_f64();
    Ok(Some((
        lines as f64,
        took,
        cpu_seconds("self", true) - before,
    )))
}

/// The Python peer of row (h) on the retained events topic: (messages,
/// steady rate, CPU seconds, Redis CPU seconds).
fn peer(settings: &Settings, redis: &RedisServer) -> anyhow::Result<Option<(f64, f64, f64, f64)>> {
    let redis_pid = redis
        .pid()
        .context("the bench's redis-server has a pid")?
        .to_string();
    let (before, rbefore) = (cpu_seconds("self", true), cpu_seconds(&redis_pid, false));
    let Some((steady, _, read)) = super::broker::peer(settings, redis, "(t)")? else {
        return Ok(None);
    };
    Ok(Some((
        read,
        steady,
        cpu_seconds("self", true) - before,
        cpu_seconds(&redis_pid, false) - rbefore,
    )))
}

/// Redis's CPU per event outside commands, from its CPU less what
/// `INFO commandstats` counts. The latter is time on Redis's thread, so
/// on a loaded machine it can exceed the CPU Redis was given.
fn outside(us: f64) -> String {
    if us >= 0.0 {
        format!("{us:.2} µs")
    } else {
        format!("not measured (commands took {:.2} µs per event more than Redis's CPU: the machine was loaded)", -us)
    }
}

/// Rows (t): the three variants, then kcat and the peer on what the topic retains.
pub(super) async fn rows(
    options: &BenchOptions,
    redis: &RedisServer,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let us = |cpu: f64, n: f64| 1e6 * cpu / n.max(1.0);
    let mut kcat_us = None;
    let mut peer_row = None;
    let variants = [
        Variant {
            name: "newsroom",
            shape: Shape::default(),
            env: &[],
            clock: None,
        },
        Variant {
            name: "new visitor per event",
            shape: Shape {
                visitors: usize::MAX,
                ..Shape::default()
            },
            env: &[],
            clock: None,
        },
        Variant {
            name: "newsroom, windows level",
            shape: Shape::default(),
            env: &[
                ("POPULARITY__INGEST__DEDUPE_WINDOW", LEVEL_DEDUPE),
                ("POPULARITY__INGEST__DEDUPE_LATENESS", LEVEL_DEDUPE),
            ],
            clock: Some(LEVEL_RATE),
        },
        // What Redis's work per event owes to `ingest.flush_interval`: a
        // member's increments are summed over a batch, so longer batches
        // make fewer writes per event (and lists fresh a second later).
        Variant {
            name: "newsroom, flushed every second",
            shape: Shape::default(),
            env: &[("POPULARITY__INGEST__FLUSH_INTERVAL", "1s")],
            clock: None,
        },
    ];
    for v in &variants {
        let name = v.name;
        // A broker of its own: the service reads only this variant's
        // backlogs, and what the broker retains is this variant's.
        let topics = ["steady.events", "steady.articles", "steady.dlq"];
        let broker = DevBroker::start(&topics, 12)?;
        let settings = &super::settings_for(&broker, redis, (topics[0], topics[1], topics[2]));
        let s = variant(options, settings, redis, v).await?;
        // kcat and the peer read what the newsroom's backlogs left on the topic.
        if kcat_us.is_none() {
            if let Some((n, secs, cpu)) = kcat(settings)? {
                kcat_us = Some(us(cpu, n));
                rows.push(Row {
                    id: "t",
                    what: format!("kcat, consume only, {n:.0} messages retained"),
                    value: format!("{}, {:.2} µs CPU per event", fmt_rate(n / secs), us(cpu, n)),
                    target: "—".into(),
                });
            }
            peer_row = peer(settings, redis)?;
        }
        let total = us(s.service_cpu + s.redis_cpu, s.events);
        let (first, last) = (
            s.rss.first().copied().unwrap_or(0),
            s.rss.last().copied().unwrap_or(0),
        );
        let less = |i: usize| s.rss[i].saturating_sub(s.filters[i]);
        let heap_less = |i: usize| s.heap[i].saturating_sub(s.filters[i]);
        let beyond_heaps = |i: usize| s.rss[i].saturating_sub(s.heap[i] + s.libc[i]);
        let n = s.rss.len();
        rows.push(Row {
            id: "t",
            what: format!(
                "memory, {name}: RSS and what the duplicate filters hold, at each of {n} measured backlogs"
            ),
            value: format!(
                "RSS {} → {}; filters {} → {} ({} → {} windows); RSS less filters {} → {} (min {}, max {}); the heap's live allocations less filters {} → {} (min {}, max {}); glibc's malloc {} → {}; RSS less the heap and glibc's malloc {} → {} (min {}, max {})",
                mib(first),
                mib(last),
                mib(s.filters.first().copied().unwrap_or(0)),
                mib(s.filters.last().copied().unwrap_or(0)),
                s.windows.first().copied().unwrap_or(0),
                s.windows.last().copied().unwrap_or(0),
                mib(less(0)),
                mib(less(n - 1)),
                mib((0..n).map(less).min().unwrap_or(0)),
                mib((0..n).map(less).max().unwrap_or(0)),
                mib(heap_less(0)),
                mib(heap_less(n - 1)),
                mib((0..n).map(heap_less).min().unwrap_or(0)),
                mib((0..n).map(heap_less).max().unwrap_or(0)),
                mib(s.libc[0]),
                mib(s.libc[n - 1]),
                mib(beyond_heaps(0)),
                mib(beyond_heaps(n - 1)),
                mib((0..n).map(beyond_heaps).min().unwrap_or(0)),
                mib((0..n).map(beyond_heaps).max().unwrap_or(0)),
            ),
            target: "RSS less filters flat".into(),
        });
        let script = |c: &Cmdstat| {
            if c.name == "evalsha" {
                " (with what it calls)"
            } else {
                ""
            }
        };
        let within: f64 = s
            .commands
            .iter()
            .filter(|c| c.name == "evalsha")
            .map(|c| c.usec)
            .sum();
        let top: Vec<String> = s
            .commands
            .iter()
            .take(6)
            .map(|c| {
                format!(
                    "{}{} {:.2} µs ({:.1} calls per 1,000 events)",
                    c.name,
                    script(c),
                    c.usec / s.events,
                    1_000.0 * c.calls / s.events
                )
            })
            .collect();
        rows.push(Row {
            id: "t",
            what: format!("Redis per event, {name}: INFO commandstats over the measured backlogs"),
            value: format!(
                "{}; outside commands (reading requests, writing replies): {}",
                top.join(", "),
                outside(us(s.redis_cpu, s.events) - within / s.events)
            ),
            target: "—".into(),
        });
        rows.push(Row {
            id: "t",
            what: format!(
                "steady state, {name}: {:.0} events after {} warm-up backlogs of {BACKLOG}; RSS {} → {}",
                s.events,
                WARM_UP,
                mib(first),
                mib(last)
            ),
            value: format!(
                "{}; CPU µs per event: service {:.2} + Redis {:.2} = {:.2}",
                fmt_rate(s.events / s.seconds),
                us(s.service_cpu, s.events),
                us(s.redis_cpu, s.events),
                total
            ),
            target: match kcat_us {
                Some(k) => format!("≤ 1.5 µs and ≤ 2.5 × kcat: {:.1} ×", total / k),
                None => "≤ 1.5 µs".into(),
            },
        });
    }
    if let Some((n, steady, cpu, rcpu)) = peer_row {
        rows.push(Row {
            id: "t",
            what: format!("peer: Python (row h) on the {n:.0} messages retained"),
            value: format!(
                "{} steady; CPU µs per event: {:.2} + Redis {:.2} = {:.2}",
                fmt_rate(steady),
                us(cpu, n),
                us(rcpu, n),
                us(cpu + rcpu, n)
            ),
            target: "the service ≥ 10 × less".into(),
        });
    }
    Ok(())
}
