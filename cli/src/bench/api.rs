//! Row (f), the API under `wrk`: cache hits against the same server's
//! `/healthz` (the ceiling of this machine), and cache misses on a replica
//! with its cache off. Row (k) reads through [`cache_misses`] too.
//!
//! The machine is shared and its load drifts within a run, so the two sides
//! of a comparison are measured in alternating rounds, A B B A A B B A: a
//! drift that lasts a few rounds weighs on both sides alike, and the rates
//! compared are each side's requests over its own time.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{BenchOptions, Row};
use popularity::app::{App, Role};
use popularity::config::Settings;

/// Rounds per side; each lasts half of `--seconds` (at least 3 s).
const ROUNDS: usize = 4;

/// What one `wrk` run printed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Load {
    /// Several rounds of one side: the mean rate (equal rounds), and the
    /// worst round's percentiles, so that a target on p99 holds in every round.
    fn combine(rounds: &[Load]) -> Load {
        let worst = |f: fn(&Load) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
        Load {
            rps: rounds.iter().map(|l| l.rps).sum::<f64>() / rounds.len().max(1) as f64,
            p50_ms: worst(|l| l.p50_ms),
            p99_ms: worst(|l| l.p99_ms),
        }
    }

    fn show(&self) -> String {
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            self.rps, self.p50_ms, self.p99_ms
        )
    }
}

/// Row (f) against the running service at `api` (its cache on), then a
/// replica of `settings` with the cache off.
pub(super) async fn rows(
    options: &BenchOptions,
    settings: &Settings,
    api: SocketAddr,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let seconds = (options.seconds / 2).max(3);
    let floor_url = format!("http://{api}/healthz");
    let hits_url = format!("http://{api}/v1/rankings/trending?limit=10");
    let (mut floor, mut hits) = (Vec::new(), Vec::new());
    for round in 0..2 * ROUNDS {
        // A B B A, twice: /healthz first, then hits twice, then /healthz.
        let hits_turn = matches!(round % 4, 1 | 2);
        if hits_turn {
            hits.push(wrk(&hits_url, seconds, &[])?);
        } else {
            floor.push(wrk(&floor_url, seconds, &[])?);
        }
    }
    let ratios: Vec<f64> = floor
        .iter()
        .zip(&hits)
        .map(|(f, h)| h.rps / f.rps)
        .collect();
    let (floor, hits) = (Load::combine(&floor), Load::combine(&hits));
    let ratio = hits.rps / floor.rps;
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    eprintln!("bench: (f) hits ÷ /healthz by round: {ratios:.2?}");
    // As browsers and most HTTP clients ask: gzip.
    let gzip = ["Accept-Encoding: gzip, deflate, br"];
    let gzipped = Load::combine(&[
        wrk(&hits_url, seconds, &gzip)?,
        wrk(&hits_url, seconds, &gzip)?,
    ]);
    let misses = Load::combine(&[
        cache_misses(settings, seconds).await?,
        cache_misses(settings, seconds).await?,
    ]);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let what = |label: &str, n: usize| {
        format!(
            "API, wrk 2 threads × 32 connections on the same cores, {label}, \
             {n} rounds of {seconds} s (mean rate, worst round's percentiles)"
        )
    };
    rows.push(Row {
        id: "f",
        what: what("baseline: /healthz, same server and middleware", ROUNDS),
        value: floor.show(),
        target: "—".into(),
    });
    rows.push(Row {
        id: "f",
        what: what("cache hits, alternating with /healthz", ROUNDS),
        value: hits.show(),
        target: format!(
            "≥ 0.9 × /healthz, p99 ≤ 5 ms: {ratio:.2} × (rounds {lo:.2}–{hi:.2}), {}",
            verdict(ratio >= 0.9 && hits.p99_ms <= 5.0)
        ),
    });
    rows.push(Row {
        id: "f",
        what: what(
            "cache hits asking gzip (Accept-Encoding), after the above",
            2,
        ),
        value: gzipped.show(),
        target: format!("{:.2} × /healthz", gzipped.rps / floor.rps),
    });
    rows.push(Row {
        id: "f",
        what: what("cache misses (cache off)", 2),
        value: misses.show(),
        target: format!("p99 ≤ 5 ms: {}", verdict(misses.p99_ms <= 5.0)),
    });
    Ok(())
}

/// `wrk` on the top-10 trending ranking of an API replica with its
/// response cache off, so that every request reads Redis; the replica
/// stops after.
pub(super) async fn cache_misses(settings: &Settings, seconds: u64) -> anyhow::Result<Load> {
    let mut s = settings.clone();
    s.api.cache_ttl = Duration::ZERO;
    let app = App::build(s, Role::Api).await?;
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    let misses = wrk(
        &format!("http://{addr}/v1/rankings/trending?limit=10"),
        seconds,
        &[],
    );
    stop.cancel();
    let _ = server.await;
    misses
}

/// Runs `wrk` (2 threads, 32 connections) on `url` for `seconds`, sending
/// `headers` (`Name: value`) too. It waits on the runtime thread that calls
/// it, so the server measured in this process answers on the runtime's
/// other worker thread: every figure of row (f) since the first was
/// measured so. (Awaiting `wrk` instead gives
/// the server both threads to fight `wrk` for: measured, its rounds spread
/// wider and the rows compare less; pinning server and `wrk` to a core each
/// spread them wider still. docs/benchmarks.md has both.)
pub(super) fn wrk(url: &str, seconds: u64, headers: &[&str]) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"])
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg(url)
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .with_context(|| format!("wrk printed no {prefix:?} for {url}:\n{text}"))
    };
    Ok(Load {
        rps: find("Requests/sec:")?.parse()?,
        p50_ms: millis(find("50%")?)?,
        p99_ms: millis(find("99%")?)?,
    })
}

/// A latency as `wrk` prints it (`309.00us`, `3.31ms`, `1.02s`), in ms.
fn millis(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {text:?} has no unit"))?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("latency {text:?}"))?;
    Ok(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => anyhow::bail!("latency {text:?}: unknown unit"),
    })
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn wrk_latencies_read_in_milliseconds() {
        assert_eq!(millis("309.00us").unwrap(), 0.309);
        assert_eq!(millis("3.31ms").unwrap(), 3.31);
        assert_eq!(millis("1.02s").unwrap(), 1020.0);
        assert!(millis("12").is_err());
        assert!(millis("1.0h").is_err());
    }
}
