//! The `popularity` binary: parses the command line and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use popularity::app::{App, Role};
use popularity::config::Settings;
use popularity_cli::devbroker::DevBroker;
use popularity_cli::newsroom::{Newsroom, Shape, WireFormat};

/// mimalloc: the consumer allocates and frees a few small strings per event
/// and glibc's malloc was the top of its profile. Counted, so that
/// `popularity_heap_bytes` tells what the heap holds from what RSS is.
#[global_allocator]
static ALLOCATOR: popularity::heap::Counting<mimalloc::MiMalloc> =
    popularity::heap::Counting(mimalloc::MiMalloc);

/// Event-driven popularity rankings for news sites.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and/or serve the HTTP API.
    Serve {
        /// TOML configuration file (environment variables POPULARITY__SECTION__KEY override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// What this process does.
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
    },
    /// Zero-dependency demo: embedded broker, in-process store, synthetic
    /// newsroom, API and web page.
    Demo {
        /// HTTP address of the API and web page.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Use this Redis (redis://…) instead of the in-process store.
        #[arg(long)]
        redis: Option<String>,
        /// Behaviour events per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// Benchmark on this machine: starts its own redis-server and dev broker
    /// and prints a table (needs redis-server and wrk installed).
    Bench(popularity_cli::bench::BenchOptions),
    /// Produce realistic traffic to a Kafka cluster (progress on stderr).
    Loadgen(LoadgenArgs),
    /// Run a local Kafka-protocol broker for development (in memory; drops a
    /// partition's oldest data past 5 MiB). Prints `bootstrap.servers=HOST:PORT` first.
    DevBroker {
        /// Port on 127.0.0.1; random when omitted.
        #[arg(long)]
        port: Option<u16>,
        /// Partitions per topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// TOML configuration file, for the topic names.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct LoadgenArgs {
    /// TOML configuration file, for brokers, topics and Kafka properties.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bootstrap servers (overrides the configuration).
    #[arg(long)]
    brokers: Option<String>,
    /// Messages per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this long (e.g. 60s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Articles published at the start.
    #[arg(long, default_value_t = 200)]
    articles: usize,
    /// Zipf exponent of article popularity.
    #[arg(long, default_value_t = 1.1)]
    zipf_exponent: f64,
    /// Popularity ranks swapped per 1,000 events (drift).
    #[arg(long, default_value_t = 5)]
    drift: usize,
    /// Publish a new article every N events (0: never).
    #[arg(long, default_value_t = 500)]
    publish_every: usize,
    /// Distinct visitors.
    #[arg(long, default_value_t = 50_000)]
    visitors: usize,
    /// Fraction of shares.
    #[arg(long, default_value_t = 0.04)]
    shares: f64,
    /// Fraction of engagement events.
    #[arg(long, default_value_t = 0.15)]
    engagement: f64,
    /// Fraction of crawler traffic.
    #[arg(long, default_value_t = 0.02)]
    bots: f64,
    /// Fraction of repeated events.
    #[arg(long, default_value_t = 0.02)]
    duplicates: f64,
    /// Fraction of malformed messages.
    #[arg(long, default_value_t = 0.001)]
    invalid: f64,
    /// Encoding of behaviour events.
    #[arg(long, value_enum, default_value = "json")]
    format: WireFormat,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// mimalloc's `purge_delay` option (its number in `mi_option_t`, which
/// `libmimalloc-sys` does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps freed memory for a second (its `purge_delay`) and gives
/// it back only when the thread that freed it next takes memory from its
/// segments, which a thread that frees a large buffer and then allocates
/// only small ones may not do for minutes. Given back at once, the
/// consumer's RSS less its filters' tables ended row (t)'s backlogs 54–94
/// MiB lower, for no more CPU per event (docs/benchmarks.md). An
/// operator's `MIMALLOC_PURGE_DELAY` wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, before any other thread
        // runs (the function is not thread-safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> anyhow::Result<()> {
    purge_freed_memory_at_once();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(start())
}

async fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before anything is printed or bound: a signal right after the banner
    // must stop the process.
    let shutdown = CancellationToken::new();
    popularity::shutdown::on_signals(shutdown.clone())?;
    // The log format is part of the configuration of the commands that have
    // one; the others take it from the environment.
    let config = match &cli.command {
        Command::Serve { config, .. } | Command::DevBroker { config, .. } => config.clone(),
        Command::Loadgen(a) => a.config.clone(),
        Command::Demo { .. } | Command::Bench(_) => None,
    };
    let settings = Settings::from_env(config.as_deref())?;
    let telemetry = popularity::logging::init(&settings)?;
    let done = run(cli.command, settings, shutdown).await;
    // Spans not sent yet go before the process exits.
    telemetry.finish().await;
    done
}

/// Runs `command`.
async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { role, .. } => {
            let app = App::build(settings, role).await?;
            tracing::info!(address = %app.local_addr(), ?role, "popularity serving");
            app.run(shutdown).await
        }
        Command::Demo {
            listen,
            redis,
            rate,
        } => {
            let options = popularity_cli::demo::DemoOptions {
                listen,
                redis_url: redis,
                rate,
            };
            popularity_cli::demo::run(options, shutdown).await
        }
        Command::Bench(options) => {
            // A failed row leaves the service, broker and Redis of the run
            // behind: exit at once rather than wait for them.
            if let Err(e) = popularity_cli::bench::run(options).await {
                eprintln!("Error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Loadgen(a) => {
            let mut settings = settings;
            if let Some(b) = a.brokers {
                settings.kafka.brokers = b;
            }
            let shape = Shape {
                articles: a.articles,
                zipf_exponent: a.zipf_exponent,
                drift_per_1000: a.drift,
                publish_every: a.publish_every,
                visitors: a.visitors,
                shares: a.shares,
                engagement: a.engagement,
                bots: a.bots,
                duplicates: a.duplicates,
                invalid: a.invalid,
                format: a.format,
                seed: a.seed,
                ..Shape::default()
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let mut newsroom = Newsroom::new(shape, now);
            let producer = popularity_cli::loadgen::producer(&settings.kafka)?;
            let limits = popularity_cli::loadgen::Limits {
                rate: (a.rate > 0.0).then_some(a.rate),
                duration: a.duration,
                count: a.count,
                progress: true,
                clock: None,
            };
            let sent = popularity_cli::loadgen::run(
                &producer,
                &settings.kafka,
                &mut newsroom,
                limits,
                &shutdown,
            )
            .await;
            eprintln!(
                "loadgen: done: {} delivered, {} failed in {:.1}s ({:.0}/s)",
                sent.delivered,
                sent.failed,
                sent.elapsed.as_secs_f64(),
                sent.delivered as f64 / sent.elapsed.as_secs_f64().max(1e-9)
            );
            anyhow::ensure!(
                sent.failed == 0,
                "{} messages were not delivered",
                sent.failed
            );
            Ok(())
        }
        Command::DevBroker {
            port, partitions, ..
        } => {
            let t = &settings.kafka.topics;
            let mut broker =
                DevBroker::start(&[&t.events, &t.articles, &t.dead_letter], partitions)?;
            if let Some(port) = port {
                broker.listen_on(port).await?;
            }
            println!("bootstrap.servers={}", broker.bootstrap_servers());
            eprintln!(
                "dev broker: topics {}, {}, {} with {partitions} partitions each; in memory, \
                 drops a partition's oldest data past 5 MiB; for development only. Ctrl-C stops it.",
                t.events, t.articles, t.dead_letter
            );
            shutdown.cancelled().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option's number is mimalloc's `purge_delay`: its default, 1000
    /// ms in mimalloc 3, is what the number reads before it is set.
    #[test]
    fn freed_memory_is_purged_at_once_by_mimallocs_own_option() {
        assert!(
            std::env::var_os("MIMALLOC_PURGE_DELAY").is_none(),
            "run the tests without MIMALLOC_PURGE_DELAY"
        );
        // SAFETY: reads one of mimalloc's options.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        purge_freed_memory_at_once();
        assert_eq!(get(), 0);
    }
}
