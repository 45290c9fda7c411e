//! How the Redis store reaches its servers (DESIGN §4 "Topologies"): one
//! standalone server, the master the Sentinels name, or a Redis Cluster.
//! The store builds the same commands for all three, in [`Part`]s of one
//! slot each; this file decides where they go and what a failure means.
//!
//! - standalone and sentinel: every part of a call in one pipeline, one
//!   round trip (an atomic part inside it as `MULTI` … `EXEC`);
//! - cluster: each part to the primary of its slot, all at once; a single
//!   command is routed by the cluster client (MOVED, ASK and TRYAGAIN
//!   followed), a longer part is retried whole while slots move.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, RedisError, RedisResult, Script, Value};

use crate::config::{RedisMode, StoreSettings};

/// How long `WAIT` waits for replicas before the write counts as not replicated.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands that go to one slot together, replies in order. An atomic part
/// runs in `MULTI`/`EXEC`: a consistent read, or writes that land together.
#[derive(Debug, Default, Clone)]
pub(super) struct Part {
    cmds: Vec<Cmd>,
    atomic: bool,
}

impl Part {
    /// An empty part whose commands run as one transaction.
    pub fn atomic() -> Part {
        Part {
            cmds: Vec::new(),
            atomic: true,
        }
    }

    /// A part of one command.
    pub fn one(cmd: Cmd) -> Part {
        Part {
            cmds: vec![cmd],
            atomic: false,
        }
    }

    /// Adds a command; it must name a key of the same slot as the others.
    pub fn add(&mut self, cmd: Cmd) -> &mut Part {
        self.cmds.push(cmd);
        self
    }

    fn pipeline(&self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if self.atomic {
            pipe.atomic();
        }
        for c in &self.cmds {
            pipe.add_command(c.clone());
        }
        pipe
    }
}

/// The connection to the servers of one topology.
#[derive(Clone)]
pub(super) enum Link {
    Standalone(ConnectionManager),
    Sentinel(Arc<Sentinel>),
    Cluster(Arc<Cluster>),
}

/// A cluster connection, made again from the seed nodes after a failure
/// that a failover explains: the client follows MOVED, but a primary that
/// died answers nothing, so its slots are only learnt anew this way.
pub(super) struct Cluster {
    client: redis::cluster::ClusterClient,
    conn: Mutex<(ClusterConnection, std::time::Instant)>,
}

/// The shortest time between two rebuilds of a cluster connection.
const CLUSTER_RENEW_AFTER: Duration = Duration::from_millis(500);

/// The master the Sentinels name, connected; looked up again after any
/// failure that a failover explains (a dropped connection, a refused one,
/// `READONLY` from a demoted master).
pub(super) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    master: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    /// Connects as `settings.redis_mode` says.
    pub async fn open(settings: &StoreSettings) -> RedisResult<Link> {
        let urls = settings.redis_urls();
        Ok(match settings.redis_mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(urls[0])?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                Link::Standalone(ConnectionManager::new_with_config(client, config).await?)
            }
            RedisMode::Sentinel => {
                let client = SentinelClient::build(
                    urls.clone(),
                    settings.sentinel_master.clone(),
                    Some(master_connection_info(urls[0])?),
                    SentinelServerType::Master,
                )?;
                let s = Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    master: Mutex::new(None),
                };
                s.connection(&Self::sentinel_config()).await?;
                Link::Sentinel(Arc::new(s))
            }
            RedisMode::Cluster => {
                let client = redis::cluster::ClusterClient::builder(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(8)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Link::Cluster(Arc::new(Cluster {
                    client,
                    conn: Mutex::new((conn, std::time::Instant::now())),
                }))
            }
        })
    }

    /// Sends `parts` and returns each one's replies (for an atomic part,
    /// the replies of its commands). A server error in any reply fails the
    /// call: what ran before it may have applied, like a lost reply.
    pub async fn send(&self, parts: Vec<Part>) -> RedisResult<Vec<Vec<Value>>> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Link::Standalone(c) => send_merged(&mut c.clone(), parts).await,
            Link::Sentinel(s) => {
                // A connection to a master that is gone fails once: ask the
                // Sentinels again and send once more (a repeated write is
                // refused by its fences or sets what it set).
                let mut c = s.connection(&Self::sentinel_config()).await?;
                match s.check(send_merged(&mut c, parts.clone()).await) {
                    Err(e) if failover(&e) => {
                        let mut c = s.connection(&Self::sentinel_config()).await?;
                        s.check(send_merged(&mut c, parts).await)
                    }
                    r => r,
                }
            }
            Link::Cluster(c) => {
                c.check(try_join_all(parts.iter().map(|p| send_routed(c, p))).await)
                    .await
            }
        }
    }

    /// One command, its reply.
    pub async fn one(&self, cmd: Cmd) -> RedisResult<Value> {
        let mut replies = self.send(vec![Part::one(cmd)]).await?;
        Ok(replies
            .pop()
            .and_then(|mut r| r.pop())
            .unwrap_or(Value::Nil))
    }

    /// Loads `script` on every primary (a restarted or promoted server has
    /// an empty script cache, so this precedes every batch that calls it).
    pub async fn load(&self, script: &Script) -> RedisResult<()> {
        let invocation = script.prepare_invoke();
        match self {
            Link::Standalone(c) => invocation.load_async(&mut c.clone()).await.map(drop),
            Link::Sentinel(s) => {
                let mut c = s.connection(&Self::sentinel_config()).await?;
                s.check(invocation.load_async(&mut c).await).map(drop)
            }
            // SCRIPT LOAD is routed to every primary.
            Link::Cluster(c) => {
                let r = invocation.load_async(&mut c.connection()).await.map(drop);
                c.check(r).await
            }
        }
    }

    /// `WAIT replicas` on every primary: the writes this process sent are
    /// held by that many replicas each, or the call fails (their outcome is
    /// then unknown, and the fences tell).
    pub async fn wait(&self, replicas: usize) -> RedisResult<()> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(WAIT_TIMEOUT.as_millis() as u64);
        // In a cluster WAIT goes to every primary and answers the smallest count.
        let held: usize = redis::from_redis_value(self.one(cmd).await?)
            .map_err(|e| RedisError::from((redis::ErrorKind::Parse, "WAIT", e.to_string())))?;
        if held < replicas {
            return Err(RedisError::from((
                redis::ErrorKind::Io,
                "write not replicated",
                format!("{held} of {replicas} replicas acknowledged within {WAIT_TIMEOUT:?}"),
            )));
        }
        Ok(())
    }

    /// Whether the servers can take writes: the master answers, or every
    /// slot of the cluster is served.
    pub async fn ping(&self) -> RedisResult<()> {
        if let Link::Cluster(_) = self {
            let info: String =
                redis::from_redis_value(self.one(redis::cmd("CLUSTER").arg("INFO").clone()).await?)
                    .map_err(|e| {
                        RedisError::from((redis::ErrorKind::Parse, "CLUSTER INFO", e.to_string()))
                    })?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                    "cluster down",
                    "cluster_state is not ok (a slot has no primary)".to_string(),
                )));
            }
        }
        self.one(redis::cmd("PING")).await.map(drop)
    }

    /// Whether a master can be lost and replaced (Sentinel and Cluster).
    pub fn replicated(&self) -> bool {
        !matches!(self, Link::Standalone(_))
    }

    fn sentinel_config() -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }
}

/// How to reach the master the Sentinels name: with the credentials,
/// database and TLS of the first Sentinel URL (`rediss://:PASSWORD@…/0`).
fn master_connection_info(url: &str) -> RedisResult<SentinelNodeConnectionInfo> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(info.redis_settings().clone());
    Ok(match info.addr() {
        redis::ConnectionAddr::TcpTls { insecure, .. } => node.set_tls_mode(if *insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        }),
        _ => node,
    })
}

impl Cluster {
    fn connection(&self) -> ClusterConnection {
        self.conn.lock().expect("not poisoned").0.clone()
    }

    /// After a failure: a dead or replaced primary, or slots that moved.
    async fn check<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r {
            if retryable(e) {
                self.renew(e).await;
            }
        }
        r
    }

    /// Rebuilds the connection from the seeds, at most every [`CLUSTER_RENEW_AFTER`].
    async fn renew(&self, e: &RedisError) {
        let due = self.conn.lock().expect("not poisoned").1.elapsed() >= CLUSTER_RENEW_AFTER;
        if due {
            self.conn.lock().expect("not poisoned").1 = std::time::Instant::now();
            match self.client.get_async_connection().await {
                Ok(c) => {
                    tracing::warn!(error = %e, "cluster node lost; slots learnt again from the seeds");
                    *self.conn.lock().expect("not poisoned") = (c, std::time::Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "cluster seeds do not answer"),
            }
        }
    }
}

/// Failures a failover explains: the server is gone, or no longer the master.
pub(super) fn failover(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        || matches!(
            e.code(),
            Some("READONLY" | "MASTERDOWN" | "LOADING" | "CLUSTERDOWN")
        )
}

impl Sentinel {
    /// The master's connection, discovered through the Sentinels when there is none.
    async fn connection(
        &self,
        config: &redis::AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.master.lock().expect("not poisoned").clone() {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(c) = self.master.lock().expect("not poisoned").clone() {
            return Ok(c);
        }
        let c = client.get_async_connection_with_config(config).await?;
        tracing::info!("connected to the master the Sentinels name");
        *self.master.lock().expect("not poisoned") = Some(c.clone());
        Ok(c)
    }

    /// Forgets the master after a failure a failover explains.
    fn check<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r {
            if failover(e) {
                tracing::warn!(error = %e, "master lost; asking the Sentinels again");
                *self.master.lock().expect("not poisoned") = None;
            }
        }
        r
    }
}

/// Every part in one pipeline, one round trip; replies split per part.
async fn send_merged<C: ConnectionLike + Send>(
    conn: &mut C,
    parts: Vec<Part>,
) -> RedisResult<Vec<Vec<Value>>> {
    let mut pipe = redis::pipe();
    let mut shape = Vec::with_capacity(parts.len());
    for p in parts {
        shape.push((p.cmds.len(), p.atomic));
        if p.atomic {
            pipe.cmd("MULTI");
        }
        for c in p.cmds {
            pipe.add_command(c);
        }
        if p.atomic {
            pipe.cmd("EXEC");
        }
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut it = replies.into_iter();
    let mut out = Vec::with_capacity(shape.len());
    for (n, atomic) in shape {
        let values: Vec<Value> = if atomic {
            // OK, one QUEUED per command, then EXEC's array.
            let exec = it.by_ref().nth(n + 1).unwrap_or(Value::Nil);
            match exec {
                Value::Array(v) => v,
                other => return Err(unexpected(other)),
            }
        } else {
            it.by_ref().take(n).collect()
        };
        out.push(checked(values)?);
    }
    Ok(out)
}

/// One part to the primary of its slot.
async fn send_routed(cluster: &Cluster, part: &Part) -> RedisResult<Vec<Value>> {
    if part.cmds.is_empty() {
        return Ok(Vec::new());
    }
    if !part.atomic && part.cmds.len() == 1 {
        let v: Value = part.cmds[0].query_async(&mut cluster.connection()).await?;
        return checked(vec![v]);
    }
    // The cluster client routes a pipeline by its first key but does not
    // follow a redirect inside it: while a slot moves, learn the slots
    // again and retry the part.
    let pipe = part.pipeline();
    let mut delay = Duration::from_millis(25);
    for attempt in 0.. {
        match pipe
            .query_async::<Vec<Value>>(&mut cluster.connection())
            .await
        {
            Ok(v) => return checked(v),
            Err(e) if attempt < 8 && retryable(&e) => {
                tracing::debug!(error = %e, "part retried while the cluster moves slots");
                cluster.renew(&e).await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Errors a moving or failing-over cluster gives, that a retry can outlive.
fn retryable(e: &RedisError) -> bool {
    failover(e)
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "EXECABORT" | "LOADING")
        )
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::Moved
                    | redis::ServerErrorKind::Ask
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::ExecAbort
            )
        )
}

/// The replies, or the first server error among them.
fn checked(values: Vec<Value>) -> RedisResult<Vec<Value>> {
    values.into_iter().map(Value::extract_error).collect()
}

fn unexpected(v: Value) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected reply",
        format!("{v:?}"),
    ))
}
