//! The serving side's connection to Redis: one multiplexed connection shared by every
//! request, made lazily and remade after a failure.
//!
//! The policy is "fail fast, recover by itself": the service starts even when Redis is
//! down; a request that finds no connection tries to make one (at most one attempt in
//! flight, and none within [`RECONNECT_PAUSE`] of a failed one, so an outage costs a
//! request microseconds, not a connect timeout); every command has a response timeout; a
//! connection that failed is dropped and the next request makes a new one. The
//! transitions (lost, back) are logged once each, not per request.

use freshet_store::RawFields;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest pause between two connection attempts while Redis is unreachable.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

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
    client: redis::Client,
    config: AsyncConnectionConfig,
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Held while a connection attempt is in flight, with the time of the last failure.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl FeatureStore {
    /// Checks the URL; connects only when first used.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Self {
            client,
            config,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        })
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
            if self
                .connection
                .lock()
                .expect("connection slot")
                .take()
                .is_some()
            {
                tracing::warn!(error = %e, "lost the connection to Redis; reconnecting");
            }
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Failed(e.to_string())
        }
    }

    /// The chosen fields of each key, in order, in one round trip.
    pub async fn read(&self, reads: &[(String, &[&str])]) -> Result<Vec<RawFields>, StoreError> {
        let mut connection = self.connection().await?;
        freshet_store::read_fields(&mut connection, reads)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Whether Redis answers `PING`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }
}
