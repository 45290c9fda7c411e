//! The `popularity` binary: parses the command line and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use popularity::app::{App, Role};
use popularity::config::Settings;
use popularity::devbroker::DevBroker;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    popularity::shutdown::on_signals(shutdown.clone());
    match cli.command {
        Command::Serve { config, role } => {
            let settings = Settings::from_env(config.as_deref())?;
            let app = App::build(settings, role).await?;
            tracing::info!(address = %app.local_addr(), ?role, "popularity serving");
            app.run(shutdown).await
        }
        Command::DevBroker {
            port,
            partitions,
            config,
        } => {
            let settings = Settings::from_env(config.as_deref())?;
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
