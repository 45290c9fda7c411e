//! A local `redis-server` child process on a free port, for the benchmark
//! and the tests (like [`crate::devbroker`] for Kafka): started, checked to
//! answer, stopped and started again on the same port and directory, and
//! killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk.
    None,
    /// An append-only file synced on every write, in a directory of its own:
    /// what was acknowledged survives a restart.
    AppendFsyncAlways,
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    persistence: Persistence,
    dir: PathBuf,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

/// A port that was free a moment ago (the caller retries if it is taken
/// before it binds).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server on a free port (trying another if the port is taken
    /// between the probe and the bind).
    pub fn start(persistence: Persistence) -> anyhow::Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let dir = std::env::temp_dir()
                .join(format!("popularity-redis-{port}-{}", std::process::id()));
            let mut server = RedisServer {
                child: None,
                port,
                persistence,
                dir,
                url: format!("redis://127.0.0.1:{port}"),
            };
            match server.up() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The server's process id, to stop and continue it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server again on its port (and directory) after [`RedisServer::down`].
    pub fn up(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir);
        match self.persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AppendFsyncAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install -y redis-server)")?;
        let client = redis::Client::open(self.url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "redis-server exited at start ({status}); port {} taken?",
                    self.port
                );
            }
            let ok = client
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("redis-server did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server (SIGKILL); [`RedisServer::up`] starts it again.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes every key.
    pub fn flush_all(&self) -> anyhow::Result<()> {
        let mut c = redis::Client::open(self.url.as_str())?.get_connection()?;
        redis::cmd("FLUSHALL").query::<()>(&mut c)?;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
