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
    /// Further arguments: cluster mode, the master to replicate.
    args: Vec<String>,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

/// A port that was free a moment ago (the caller retries if it is taken
/// before it binds).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port below 55,536 whose cluster bus port (+10,000) is free too.
pub fn free_bus_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port < 55_536 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port pair"))
}

impl RedisServer {
    /// Starts a server on a free port (trying another if the port is taken
    /// between the probe and the bind).
    pub fn start(persistence: Persistence) -> anyhow::Result<RedisServer> {
        RedisServer::start_with(persistence, &[])
    }

    /// Starts a server with further arguments, on a port whose cluster bus
    /// port (10,000 above) is free too.
    pub fn start_with(persistence: Persistence, args: &[String]) -> anyhow::Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_bus_port()?;
            let dir = std::env::temp_dir()
                .join(format!("popularity-redis-{port}-{}", std::process::id()));
            // A server started with --requirepass is reached with it.
            let auth = args
                .iter()
                .position(|a| a == "--requirepass")
                .and_then(|i| args.get(i + 1))
                .map(|pw| format!(":{pw}@"))
                .unwrap_or_default();
            let mut server = RedisServer {
                child: None,
                port,
                persistence,
                dir,
                args: args.to_vec(),
                url: format!("redis://{auth}127.0.0.1:{port}"),
            };
            match server.up() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
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
            // A replica's first synchronisation starts at once, not after 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args);
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

/// A local Redis Cluster: primaries with replicas each, made by
/// `redis-cli --cluster create`, every slot served when it returns.
pub struct RedisCluster {
    /// Every node, primaries first as created.
    pub nodes: Vec<RedisServer>,
    /// The seed nodes, comma separated (`store.redis_url` in cluster mode).
    pub url: String,
}

/// How long a node may be silent before the others fail it over.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1_000;

impl RedisCluster {
    /// Starts `primaries × (1 + replicas)` nodes and joins them.
    pub fn start(primaries: usize, replicas: usize) -> anyhow::Result<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                // A replica takes over however long it lost its primary.
                "--cluster-replica-validity-factor",
                "0",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            nodes.push(RedisServer::start_with(Persistence::None, &args)?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create (apt-get install -y redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let cluster = RedisCluster {
            url: nodes
                .iter()
                .take(primaries)
                .map(|n| n.url.clone())
                .collect::<Vec<_>>()
                .join(","),
            nodes,
        };
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees
    /// on who serves every slot.
    pub fn wait_ok(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                redis::Client::open(n.url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("cluster not ok within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes that are primaries now, with their node ids.
    pub fn primaries(&self) -> anyhow::Result<Vec<(usize, String)>> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            let mut c = redis::Client::open(n.url.as_str())?.get_connection()?;
            let myself: String = redis::cmd("CLUSTER").arg("MYID").query(&mut c)?;
            let role: redis::Value = redis::cmd("ROLE").query(&mut c)?;
            if matches!(&role, redis::Value::Array(v) if matches!(v.first(), Some(redis::Value::BulkString(b)) if b == b"master"))
            {
                out.push((i, myself));
            }
        }
        Ok(out)
    }
}

/// A master with replicas under Sentinels, all local.
pub struct RedisSentinels {
    /// The first master, then its replicas.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Child>,
    dirs: Vec<PathBuf>,
    /// The Sentinels, comma separated (`store.redis_url` in sentinel mode).
    pub url: String,
    /// The master's name (`store.sentinel_master`).
    pub master_name: String,
}

impl RedisSentinels {
    /// Starts a master, `replicas` replicas of it and `sentinels` Sentinels
    /// (a quorum of two) that fail it over after one second of silence.
    pub fn start(replicas: usize, sentinels: usize) -> anyhow::Result<RedisSentinels> {
        RedisSentinels::start_with_password(replicas, sentinels, None)
    }

    /// The same, every server and Sentinel requiring `password` when given
    /// (the URLs then carry it).
    pub fn start_with_password(
        replicas: usize,
        sentinels: usize,
        password: Option<&str>,
    ) -> anyhow::Result<RedisSentinels> {
        let auth: Vec<String> = password
            .map(|pw| {
                ["--requirepass", pw, "--masterauth", pw]
                    .map(String::from)
                    .to_vec()
            })
            .unwrap_or_default();
        let master = RedisServer::start_with(Persistence::None, &auth)?;
        let master_port = master.port;
        let mut servers = vec![master];
        for _ in 0..replicas {
            let mut args = vec![
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                master_port.to_string(),
            ];
            args.extend(auth.iter().cloned());
            servers.push(RedisServer::start_with(Persistence::None, &args)?);
        }
        let sentinel_auth = password
            .map(|pw| format!("requirepass {pw}\nsentinel auth-pass popularity {pw}\n"))
            .unwrap_or_default();
        let url_auth = password.map(|pw| format!(":{pw}@")).unwrap_or_default();
        let master_name = "popularity".to_string();
        let mut children = Vec::new();
        let mut dirs = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..sentinels {
            let port = free_port()?;
            let dir = std::env::temp_dir()
                .join(format!("popularity-sentinel-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {master_name} 1000\n\
                     sentinel failover-timeout {master_name} 3000\n\
                     sentinel parallel-syncs {master_name} 2\n{sentinel_auth}",
                    dir.display()
                ),
            )?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server --sentinel")?;
            children.push(child);
            dirs.push(dir);
            urls.push(format!("redis://{url_auth}127.0.0.1:{port}"));
        }
        let set = RedisSentinels {
            servers,
            sentinels: children,
            dirs,
            url: urls.join(","),
            master_name,
        };
        set.wait_ready(replicas, Duration::from_secs(20))?;
        Ok(set)
    }

    /// Waits until every Sentinel names a master and the master has
    /// `replicas` replicas online (synchronised, acknowledging writes).
    fn wait_ready(&self, replicas: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let named = self.url.split(',').all(|u| self.master_of(u).is_ok());
            let online = self.master().is_ok_and(|m| {
                redis::Client::open(self.servers[m].url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                    })
                    // Online: past the first full synchronisation, acknowledging writes.
                    .is_ok_and(|i| i.matches("state=online").count() >= replicas)
            });
            if named && online {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Sentinels not ready within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn master_of(&self, sentinel: &str) -> anyhow::Result<u16> {
        let mut c = redis::Client::open(sentinel)?.get_connection()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query(&mut c)?;
        Ok(port)
    }

    /// The index in `servers` of the master the first Sentinel names.
    pub fn master(&self) -> anyhow::Result<usize> {
        let port = self.master_of(self.url.split(',').next().expect("a sentinel"))?;
        self.servers
            .iter()
            .position(|s| s.port == port)
            .context("the Sentinels name a server not started here")
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for c in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
