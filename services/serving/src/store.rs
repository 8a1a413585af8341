//! The serving side's connection to Redis: one multiplexed connection shared by every
//! request, made lazily and remade after a failure.
//!
//! The policy is "fail fast, recover by itself": the service starts even when Redis is
//! down; a request that finds no connection tries to make one (at most one attempt in
//! flight, and none within [`RECONNECT_PAUSE`] of a failed one, so an outage costs a
//! request microseconds, not a connect timeout); every command has a response timeout; a
//! connection that failed is dropped and the next request makes a new one. The
//! transitions (lost, back) are logged once each, not per request.
//!
//! A Redis Cluster (`redis+cluster://host1:port1,host2:port2`) is read through one cluster
//! connection, made and remade by the same policy: each entity's `HMGET` goes to its
//! slot's node, the nodes in parallel.
//!
//! Large reads (a batch lookup) go over a small pool of [`BatchConnection`]s instead: the
//! multiplexed connection's reply parser costs more CPU than Redis spends answering a
//! 1,000-entity batch (see `freshet_store::BatchConnection`). They follow the same policy:
//! no attempt while the multiplexed connection is known to be down, the same timeout, and
//! a lost connection drops every pooled one.

use freshet_store::{BatchConnection, BatchReadError, RawFields, StoreConnection, StoreTarget};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::AsyncConnectionConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest pause between two connection attempts while Redis is unreachable.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Reads of at least this many keys go over a pooled [`BatchConnection`]; smaller ones
/// share the multiplexed connection, where they pipeline with concurrent requests.
const LARGE_READ: usize = 32;

/// Idle batch connections kept for the next large reads (more are made while more large
/// reads run at once, and closed afterwards).
const IDLE_BATCH_CONNECTIONS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached or did not answer in time.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error (e.g. a key of the wrong type).
    #[error("Redis answered with an error: {0}")]
    Failed(String),
    #[error("invalid Redis URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

pub struct FeatureStore {
    /// The server (the first node's, for a cluster: see `cluster`).
    client: redis::Client,
    /// Set for a Redis Cluster, whose reads all go through its cluster connection.
    cluster: Option<ClusterStore>,
    config: AsyncConnectionConfig,
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Held while a connection attempt is in flight, with the time of the last failure.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    batch_connections: Mutex<Vec<BatchConnection>>,
    timeout: Duration,
}

struct ClusterStore {
    client: ClusterClient,
    /// The nodes the URL names, for the near cache's tracker.
    seeds: Vec<redis::Client>,
    connection: Mutex<Option<ClusterConnection>>,
    /// Held while a connection attempt is in flight, with the time of the last failure.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl FeatureStore {
    /// Checks the URL; connects only when first used.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (client, cluster) =
            match StoreTarget::parse(url, Some(timeout)).map_err(|e| bad(e.reason))? {
                StoreTarget::Single(client) => (*client, None),
                StoreTarget::Cluster(cluster) => {
                    let seeds = freshet_store::cluster_node_urls(url)
                        .unwrap_or_default()
                        .iter()
                        .map(|node| freshet_store::tls::client(node.as_str()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| bad(e.to_string()))?;
                    let client = seeds
                        .first()
                        .cloned()
                        .ok_or_else(|| bad("a cluster URL lists its nodes".to_string()))?;
                    let cluster = ClusterStore {
                        client: *cluster,
                        seeds,
                        connection: Mutex::new(None),
                        connecting: tokio::sync::Mutex::new(None),
                    };
                    (client, Some(cluster))
                }
            };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Self {
            client,
            cluster,
            config,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            batch_connections: Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// What the near cache's tracker follows: this server, or the cluster's nodes named
    /// in the URL.
    pub fn tracked(&self) -> crate::near_cache::Tracked {
        match &self.cluster {
            None => crate::near_cache::Tracked::Server(Box::new(self.client.clone())),
            Some(cluster) => crate::near_cache::Tracked::Cluster(cluster.seeds.clone()),
        }
    }

    /// The cluster connection, made when first needed (by the same policy as
    /// [`FeatureStore::connection`]).
    async fn cluster_connection(
        &self,
        cluster: &ClusterStore,
    ) -> Result<ClusterConnection, StoreError> {
        let current = || cluster.connection.lock().expect("cluster slot").clone();
        if let Some(c) = current() {
            return Ok(c);
        }
        let mut last_failure = cluster.connecting.lock().await;
        if let Some(c) = current() {
            return Ok(c);
        }
        if last_failure.is_some_and(|at| at.elapsed() < RECONNECT_PAUSE) {
            return Err(StoreError::Unavailable(
                "not connected (reconnecting)".into(),
            ));
        }
        match tokio::time::timeout(self.timeout * 4, cluster.client.get_async_connection()).await {
            Ok(Ok(c)) => {
                if last_failure.take().is_some() {
                    tracing::info!("connected to the Redis Cluster again");
                }
                *cluster.connection.lock().expect("cluster slot") = Some(c.clone());
                Ok(c)
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout * 4),
                };
                if last_failure.is_none() {
                    tracing::warn!(error = %e, "cannot connect to the Redis Cluster; requests get 503 until it is back");
                }
                *last_failure = Some(Instant::now());
                Err(StoreError::Unavailable(e))
            }
        }
    }

    /// A read of a cluster: concurrent `HMGET`s, each to its slot's node.
    async fn read_cluster(
        &self,
        cluster: &ClusterStore,
        reads: &[(String, &[&str])],
        each: impl FnMut(RawFields),
    ) -> Result<(), StoreError> {
        let connection = self.cluster_connection(cluster).await?;
        let mut connection = StoreConnection::Cluster(connection);
        let read = tokio::time::timeout(self.timeout, connection.read_fields(reads))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer in time",
                )))
            });
        match read {
            Ok(read) => {
                read.into_iter().for_each(each);
                Ok(())
            }
            // Redis answered with an error of its own (nodes that cannot be reached, or
            // a cluster that lost slots, give errors without a server code).
            Err(e) if e.code().is_some() && !e.is_cluster_error() => {
                Err(StoreError::Failed(e.to_string()))
            }
            Err(e) => {
                cluster.connection.lock().expect("cluster slot").take();
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.connection.lock().expect("connection slot").clone()
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut last_failure = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        if last_failure.is_some_and(|at| at.elapsed() < RECONNECT_PAUSE) {
            return Err(StoreError::Unavailable(
                "not connected (reconnecting)".into(),
            ));
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        {
            Ok(c) => {
                if last_failure.take().is_some() {
                    tracing::info!("connected to Redis again");
                }
                *self.connection.lock().expect("connection slot") = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                if last_failure.is_none() {
                    tracing::warn!(error = %e, "cannot connect to Redis; requests get 503 until it is back");
                }
                *last_failure = Some(Instant::now());
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }

    /// Classifies a command's error; a connection that failed is dropped so the next
    /// request makes a new one.
    fn failed(&self, e: redis::RedisError) -> StoreError {
        let broken = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error();
        if broken {
            self.lost(&e);
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Failed(e.to_string())
        }
    }

    /// Drops every connection after one failed, so the next request makes new ones.
    fn lost(&self, error: &dyn std::fmt::Display) {
        self.batch_connections
            .lock()
            .expect("batch connection pool")
            .clear();
        if self
            .connection
            .lock()
            .expect("connection slot")
            .take()
            .is_some()
        {
            tracing::warn!(error = %error, "lost the connection to Redis; reconnecting");
        }
    }

    /// The chosen fields of each key, in one round trip, handed to `each` in order. A large read hands over each reply as it arrives, so the caller
    /// builds its answer while Redis is still answering; if the read then fails, what
    /// `each` was given must be discarded.
    pub async fn read_each(
        &self,
        reads: &[(String, &[&str])],
        each: impl FnMut(RawFields),
    ) -> Result<(), StoreError> {
        if let Some(cluster) = &self.cluster {
            return self.read_cluster(cluster, reads, each).await;
        }
        let mut connection = self.connection().await?;
        if reads.len() >= LARGE_READ {
            return self.read_large(reads, each).await;
        }
        let read = freshet_store::read_fields(&mut connection, reads)
            .await
            .map_err(|e| self.failed(e))?;
        read.into_iter().for_each(each);
        Ok(())
    }

    /// A large read over a pooled batch connection. A pooled connection may have died
    /// while idle (Redis restarted): reads are idempotent, so when it fails before any
    /// reply, the read is retried once on a new connection.
    async fn read_large(
        &self,
        reads: &[(String, &[&str])],
        mut each: impl FnMut(RawFields),
    ) -> Result<(), StoreError> {
        let pooled = self
            .batch_connections
            .lock()
            .expect("batch connection pool")
            .pop();
        let reused = pooled.is_some();
        let mut delivered = 0;
        let mut counted = |fields| {
            delivered += 1;
            each(fields)
        };
        let mut result = self.read_on(pooled, reads, &mut counted).await;
        if result.is_err() && reused && delivered == 0 {
            result = self.read_on(None, reads, &mut each).await;
        }
        result.map_err(|e| match e {
            // Redis is there but refuses the URL's credentials or database: not an outage.
            BatchReadError::Setup { .. } => StoreError::Failed(e.to_string()),
            _ => {
                self.lost(&e);
                StoreError::Unavailable(e.to_string())
            }
        })
    }

    /// One large read on `connection` (or a new one), within the timeout; the connection
    /// goes back to the pool if the read succeeded (after an error it may be out of step).
    async fn read_on(
        &self,
        connection: Option<BatchConnection>,
        reads: &[(String, &[&str])],
        each: &mut impl FnMut(RawFields),
    ) -> Result<(), BatchReadError> {
        let work = async {
            let mut connection = match connection {
                Some(c) => c,
                None => BatchConnection::connect(self.client.get_connection_info()).await?,
            };
            let read = connection.read_fields_each(reads, each).await;
            if read.is_ok() {
                let mut pool = self
                    .batch_connections
                    .lock()
                    .expect("batch connection pool");
                if pool.len() < IDLE_BATCH_CONNECTIONS {
                    pool.push(connection);
                }
            }
            read
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(BatchReadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                )))
            })
    }

    /// Whether Redis answers `PING` (some node of a cluster).
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Some(cluster) = &self.cluster {
            let mut connection = StoreConnection::Cluster(self.cluster_connection(cluster).await?);
            return match tokio::time::timeout(self.timeout, connection.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                Err(_) => Err(StoreError::Unavailable("no answer in time".into())),
            };
        }
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }
}
