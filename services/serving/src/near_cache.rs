//! The near cache: entity hashes kept in the service's memory, so a lookup of a cached
//! entity costs no Redis round trip, kept fresh by Redis's own invalidation messages
//! (server-assisted client-side caching, RESP3 `CLIENT TRACKING`).
//!
//! How it stays fresh:
//! - A tracker connection (RESP3) subscribes with `CLIENT TRACKING ON BCAST PREFIX fe:`:
//!   Redis sends it the key of every write to an entity hash, as part of executing the
//!   write. Each key named is removed from the cache.
//! - A read that missed is put in the cache only if no invalidation of its key (nor a
//!   reconnect of the tracker) happened between sending the read and storing the reply
//!   (an invalidation counter per slot of key hashes, read before and after), so a reply
//!   overtaken by a newer write is never stored.
//! - The tracker sends `PING` every quarter of the staleness bound. Redis answers it after
//!   every invalidation it queued before, and the tracker applies those before recording
//!   the ping's send time as "confirmed". The cache serves only while the last
//!   confirmation is younger than the bound: a write Redis completed more than `bound`
//!   before a lookup has always been applied to the cache by then. If the tracker falls
//!   behind or loses its connection, lookups go to Redis (and the cache is emptied when it
//!   reconnects), so the bound holds whatever happens to the tracker.
//!
//! **The guarantee**: a value is never served from the cache after Redis has held a newer
//! one for longer than the staleness bound (`--near-cache-staleness-ms`, 100 ms by
//! default). In practice the invalidation arrives within a network round trip.
//!
//! The cache holds the whole of an entity's fields (every view of its entity type), read
//! with one `HMGET`, so any selection can be answered from it. It is bounded by entries;
//! least recently used entries are evicted first (`quick_cache`).

use crate::metrics::CacheMetrics;
use freshet_core::store_layout::KEY_PREFIX;
use freshet_store::RawFields;
use redis::{PushKind, Value};
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Invalidation counters: keys hash to one of these slots.
const SLOTS: usize = 1 << 16;

pub struct NearCache {
    entries: quick_cache::sync::Cache<String, Arc<RawFields>>,
    /// Per slot of key hashes: invalidations seen so far.
    slots: Box<[AtomicU64]>,
    /// Bumped whenever the cache is emptied (the tracker reconnected, or Redis was
    /// flushed): reads sent before it are not stored.
    era: AtomicU64,
    hasher: foldhash::fast::FixedState,
    origin: Instant,
    /// Microseconds after `origin` up to which every completed write's invalidation has
    /// been applied (0: never).
    confirmed_us: AtomicU64,
    bound: Duration,
    metrics: CacheMetrics,
}

/// What a read that missed must show the cache to be stored (see [`NearCache::ticket`]).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    slot: usize,
    invalidations: u64,
    era: u64,
}

impl NearCache {
    /// A cache of at most `capacity` entities, serving only while invalidations are
    /// confirmed within `bound`. Nothing is served until [`NearCache::track`] runs.
    pub fn new(capacity: usize, bound: Duration, metrics: CacheMetrics) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            era: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
            origin: Instant::now(),
            confirmed_us: AtomicU64::new(0),
            bound,
            metrics,
        }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Whether entries may be served now: invalidations are confirmed within the bound.
    pub fn usable(&self) -> bool {
        let confirmed = self.confirmed_us.load(Ordering::Acquire);
        confirmed > 0 && self.now_us().saturating_sub(confirmed) <= self.bound.as_micros() as u64
    }

    /// The cached fields of `key`; counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<RawFields>> {
        let found = self.entries.get(key);
        match found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        }
        found
    }

    /// Counts `reads` the cache could not answer because it was not confirmed fresh.
    pub fn missed(&self, reads: u64) {
        self.metrics.misses.inc_by(reads);
    }

    fn slot(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SLOTS
    }

    /// Taken before a read of `key` is sent.
    pub fn ticket(&self, key: &str) -> Ticket {
        let slot = self.slot(key.as_bytes());
        Ticket {
            slot,
            era: self.era.load(Ordering::Acquire),
            invalidations: self.slots[slot].load(Ordering::Acquire),
        }
    }

    /// Stores what a read of `key` returned, unless the key was invalidated (or the cache
    /// emptied) since `ticket` was taken. A read Redis answered with an error is not
    /// stored.
    pub fn insert(&self, key: String, fields: &Arc<RawFields>, ticket: Ticket) {
        if fields.error().is_some() || fields.is_timed_out() || !self.unchanged(ticket) {
            return;
        }
        self.entries.insert(key.clone(), fields.clone());
        // Checked again after the insert: an invalidation that raced with it either
        // bumped the counter first (seen here, and the entry is removed) or removes the
        // entry itself.
        if !self.unchanged(ticket) {
            self.entries.remove(&key);
        }
        self.metrics.entries.set(self.entries.len() as i64);
    }

    fn unchanged(&self, ticket: Ticket) -> bool {
        self.slots[ticket.slot].load(Ordering::Acquire) == ticket.invalidations
            && self.era.load(Ordering::Acquire) == ticket.era
    }

    /// Applies an invalidation of `key`.
    fn invalidate(&self, key: &[u8]) {
        self.slots[self.slot(key)].fetch_add(1, Ordering::AcqRel);
        if let Ok(key) = std::str::from_utf8(key) {
            if self.entries.remove(key).is_some() {
                self.metrics.invalidations.inc();
            }
        }
    }

    /// Empties the cache; reads in flight are not stored.
    fn clear(&self) {
        self.era.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.metrics.entries.set(0);
    }
}

/// What the tracker follows: one server, or every master of a Redis Cluster.
#[derive(Clone)]
pub enum Tracked {
    Server(Box<redis::Client>),
    /// Some nodes of the cluster (with the cluster URL's credentials); its masters are
    /// found from them, and each gets a tracker connection.
    Cluster(Vec<redis::Client>),
}

/// Keeps `cache` fresh for as long as the service runs: connects the tracker (RESP3,
/// `CLIENT TRACKING ON BCAST PREFIX fe:`, one connection per server: every master of a
/// cluster), applies invalidations, confirms them with `PING`s, and reconnects after a
/// failure (the cache is emptied and serves nothing until the new connections are
/// confirmed). On a cluster each confirmation also checks that the set of masters is the
/// one tracked; when it changes (a failover, a new node), the trackers start again.
pub async fn track(cache: Arc<NearCache>, tracked: Tracked) {
    // Whether the outage was logged: once per outage, not per failed reconnect.
    let mut down = false;
    loop {
        let error = track_once(&cache, &tracked, &mut down).await;
        // Serve nothing more from the cache until new connections are confirmed.
        cache.confirmed_us.store(0, Ordering::Release);
        cache.clear();
        if !down {
            tracing::warn!(%error, "near cache: lost invalidations from Redis; serving from Redis until they are back");
            down = true;
        }
        tokio::time::sleep(crate::store::RECONNECT_PAUSE).await;
    }
}

/// A RESP3 connection that sends its push messages to `pushes`, with tracking on.
async fn tracker_connection(
    cache: &NearCache,
    server: &redis::Client,
    pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let timeout = cache.bound.max(Duration::from_millis(20));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout * 10))
        .set_response_timeout(Some(timeout))
        .set_push_sender(pushes);
    let info = server.get_connection_info().clone().set_redis_settings(
        server
            .get_connection_info()
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3),
    );
    let mut connection = freshet_store::tls::client(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg(&["TRACKING", "ON", "BCAST", "PREFIX"][..])
        .arg(format!("{KEY_PREFIX}:"))
        .query_async::<()>(&mut connection)
        .await?;
    Ok(connection)
}

/// The masters of a cluster (`CLUSTER SLOTS`), as (host, port), from `connection`
/// (`seed` gives the host of a node that reports none).
async fn cluster_masters(
    connection: &mut redis::aio::MultiplexedConnection,
    seed: &redis::Client,
) -> redis::RedisResult<BTreeSet<(String, u16)>> {
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(connection)
        .await?;
    let seed_host = match seed.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) => host.clone(),
        _ => String::new(),
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    let mut masters = BTreeSet::new();
    if let Value::Array(ranges) = slots {
        for range in ranges {
            let Value::Array(range) = range else { continue };
            let Some(Value::Array(master)) = range.get(2) else {
                continue;
            };
            let host = master.first().map(text).unwrap_or_default();
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            let host = if host.is_empty() || host == "?" {
                seed_host.clone()
            } else {
                host
            };
            masters.insert((host, *port as u16));
        }
    }
    if masters.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "CLUSTER SLOTS named no master",
        )));
    }
    Ok(masters)
}

/// One set of tracker connections, until one fails (or the cluster's masters change);
/// why it ended. Clears `down` once tracking runs.
async fn track_once(cache: &NearCache, tracked: &Tracked, down: &mut bool) -> redis::RedisError {
    match track_until_error(cache, tracked, down).await {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

async fn track_until_error(
    cache: &NearCache,
    tracked: &Tracked,
    down: &mut bool,
) -> redis::RedisResult<std::convert::Infallible> {
    let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let (servers, masters, seed) = match tracked {
        Tracked::Server(client) => (vec![(**client).clone()], None, (**client).clone()),
        Tracked::Cluster(seeds) => {
            let mut found = None;
            let mut last = None;
            for seed in seeds {
                // A plain connection: only to ask for the masters.
                let timeout = cache.bound.max(Duration::from_millis(20)) * 10;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                match seed
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(mut connection) => match cluster_masters(&mut connection, seed).await {
                        Ok(masters) => {
                            found = Some((masters, seed.clone()));
                            break;
                        }
                        Err(e) => last = Some(e),
                    },
                    Err(e) => last = Some(e),
                }
            }
            let Some((masters, seed)) = found else {
                return Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no cluster node listed"))
                }));
            };
            let servers = masters
                .iter()
                .map(|(host, port)| {
                    freshet_store::tls::client(freshet_store::tls::at_node(
                        seed.get_connection_info(),
                        host,
                        *port,
                    ))
                })
                .collect::<redis::RedisResult<Vec<_>>>()?;
            (servers, Some(masters), seed)
        }
    };
    let mut connections = Vec::with_capacity(servers.len());
    for server in &servers {
        connections.push(tracker_connection(cache, server, sender.clone()).await?);
    }
    drop(sender);
    // Entries stored before tracking began may have missed invalidations.
    cache.clear();
    tracing::info!(
        bound_ms = cache.bound.as_millis() as u64,
        servers = connections.len(),
        "near cache: tracking invalidations"
    );
    *down = false;
    let mut ticks = tokio::time::interval(cache.bound / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => apply(cache, push)?,
                None => return Err(redis::RedisError::from((redis::ErrorKind::Io, "the tracker connections closed"))),
            },
            _ = ticks.tick() => {
                let sent = cache.now_us();
                let pings = connections.iter().map(|c| {
                    let mut c = c.clone();
                    async move { redis::cmd("PING").query_async::<()>(&mut c).await }
                });
                futures::future::try_join_all(pings).await?;
                if let Some(masters) = &masters {
                    let now = cluster_masters(&mut connections[0], &seed).await?;
                    if &now != masters {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "the cluster's masters changed",
                        )));
                    }
                }
                // Every invalidation Redis queued before answering is in the channel now.
                while let Ok(push) = pushes.try_recv() {
                    apply(cache, push)?;
                }
                cache.confirmed_us.fetch_max(sent.max(1), Ordering::AcqRel);
            }
        }
    }
}

/// Applies one push message of the tracker connection.
fn apply(cache: &NearCache, push: redis::PushInfo) -> redis::RedisResult<()> {
    match push.kind {
        PushKind::Invalidate => {
            match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            cache.invalidate(key);
                        }
                    }
                }
                // A null list: Redis was flushed.
                _ => cache.clear(),
            }
            Ok(())
        }
        PushKind::Disconnection => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the tracker connection was closed",
        ))),
        _ => Ok(()),
    }
}
