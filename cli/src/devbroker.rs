//! The dev broker: librdkafka's mock cluster, a Kafka-protocol broker held in
//! memory, for development, tests and the demo.
//!
//! It is built for tests, not for keeping data: each partition silently drops
//! its oldest data past 5 MiB or 100,000 message sets (fixed in librdkafka).
//! Pace producers, compress batches (lz4) or use more partitions accordingly.

use std::ffi::{CStr, CString};
use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rdkafka_sys as sys;

/// A running mock cluster with one broker; stopped when dropped.
pub struct DevBroker {
    cluster: *mut sys::rd_kafka_mock_cluster_t,
    bootstrap: String,
    proxy: Option<tokio::task::JoinHandle<()>>,
    // The client that owns the cluster's handle; dropped after the cluster.
    _owner: BaseProducer,
}

// SAFETY: the mock cluster runs on its own thread and guards its state with
// its own lock; the pointer is only used to create topics, read the bootstrap
// address and destroy the cluster, all of which librdkafka allows from any thread.
unsafe impl Send for DevBroker {}
unsafe impl Sync for DevBroker {}

impl DevBroker {
    /// Starts a broker on a random loopback port and creates `topics` with
    /// `partitions` partitions each.
    pub fn start(topics: &[&str], partitions: i32) -> anyhow::Result<DevBroker> {
        if partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        let owner: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .context("creating the mock cluster's client")?;
        // SAFETY: `owner` is a live client and outlives the cluster (see Drop).
        let cluster = unsafe { sys::rd_kafka_mock_cluster_new(owner.client().native_ptr(), 1) };
        if cluster.is_null() {
            bail!("librdkafka could not start a mock cluster");
        }
        // SAFETY: the cluster is live; the returned string is owned by it.
        let bootstrap = unsafe { CStr::from_ptr(sys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        let broker = DevBroker {
            cluster,
            bootstrap,
            proxy: None,
            _owner: owner,
        };
        for topic in topics {
            let name = CString::new(*topic).context("topic name contains NUL")?;
            // SAFETY: the cluster is live and `name` is a valid C string.
            let err =
                unsafe { sys::rd_kafka_mock_topic_create(cluster, name.as_ptr(), partitions, 1) };
            if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                bail!("creating topic {topic}: {err:?}");
            }
        }
        Ok(broker)
    }

    /// Serves the broker on `port` of 127.0.0.1 (the mock cluster itself
    /// always binds a random port, so a small TCP relay listens on `port` and
    /// the broker advertises it). Needs a Tokio runtime.
    pub async fn listen_on(&mut self, port: u16) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let port = listener.local_addr()?.port();
        let target: SocketAddr = self
            .bootstrap
            .parse()
            .with_context(|| format!("unexpected bootstrap address {}", self.bootstrap))?;
        let host = CString::new("127.0.0.1").expect("no NUL");
        // SAFETY: the cluster is live; broker 1 is its only broker.
        unsafe {
            sys::rd_kafka_mock_broker_set_host_port(self.cluster, 1, host.as_ptr(), port as i32)
        };
        self.bootstrap = format!("127.0.0.1:{port}");
        self.proxy = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// Takes the broker down (it closes its connections and refuses new
    /// ones) or brings it back, as a broker outage would.
    pub fn set_down(&self, down: bool) {
        // SAFETY: the cluster is live; broker 1 is its only broker.
        unsafe {
            if down {
                sys::rd_kafka_mock_broker_set_down(self.cluster, 1);
            } else {
                sys::rd_kafka_mock_broker_set_up(self.cluster, 1);
            }
        }
    }

    /// Takes away the leader of a partition of `topic` (`up` false), so
    /// that nothing can be produced to it, or gives it back.
    pub fn set_partition_leader(
        &self,
        topic: &str,
        partition: i32,
        up: bool,
    ) -> anyhow::Result<()> {
        let name = CString::new(topic).context("topic name contains NUL")?;
        let broker = if up { 1 } else { -1 };
        // SAFETY: the cluster is live and `name` is a valid C string.
        let err = unsafe {
            sys::rd_kafka_mock_partition_set_leader(self.cluster, name.as_ptr(), partition, broker)
        };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("setting the leader of {topic} [{partition}]: {err:?}");
        }
        Ok(())
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.abort();
        }
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed once.
        unsafe { sys::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}
