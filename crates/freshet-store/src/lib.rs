//! Feature values in Redis: the I/O half of [`freshet_core::store_layout`].
//!
//! The core crate says what the layout is (keys, fields, the versioned-write script) and
//! does no I/O; this crate talks to Redis with it, so the processor that writes and the
//! serving API that reads (and the tests that stand in for either) do it the same way:
//!
//! - [`write_updates`]: versioned writes, pipelined; a write whose version is not newer
//!   than the stored one is a no-op, so repeating or replaying writes is harmless.
//! - [`read_hashes`]: the hashes of many keys in one round trip.
//!
//! Both take any async Redis connection; connection management (reconnects, timeouts) is
//! the caller's, because a writer that must not lose an update and a reader that must fail
//! fast want different policies.

use freshet_core::store_layout::{FeatureUpdate, StoredValues, VERSIONED_WRITE_SCRIPT};
use redis::aio::ConnectionLike;

/// Updates per pipeline: bounds the size of one request to Redis.
const WRITE_CHUNK: usize = 1_000;

/// The fields of one hash as Redis returns them (empty when the key does not exist).
pub type Hash = Vec<(String, String)>;

/// Applies `updates`, each with its view's TTL in milliseconds (0 for none), through the
/// versioned-write script. Returns after Redis has answered every write.
pub async fn write_updates<'a, C: ConnectionLike>(
    connection: &mut C,
    updates: impl IntoIterator<Item = (&'a FeatureUpdate, i64)>,
) -> redis::RedisResult<()> {
    let mut updates = updates.into_iter().peekable();
    while updates.peek().is_some() {
        let mut pipe = redis::pipe();
        for (update, ttl_ms) in updates.by_ref().take(WRITE_CHUNK) {
            pipe.cmd("EVAL")
                .arg(VERSIONED_WRITE_SCRIPT)
                .arg(1)
                .arg(update.key())
                .arg(update.script_args(ttl_ms))
                .ignore();
        }
        pipe.query_async::<()>(connection).await?;
    }
    Ok(())
}

/// The hashes at `keys`, in the same order, in one round trip (`HGETALL` pipelined).
pub async fn read_hashes<C: ConnectionLike>(
    connection: &mut C,
    keys: &[String],
) -> redis::RedisResult<Vec<Hash>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("HGETALL").arg(key);
    }
    pipe.query_async(connection).await
}

/// Decodes a hash read by [`read_hashes`]; `Ok(None)` when the key did not exist.
pub fn decode(
    hash: &Hash,
) -> Result<Option<StoredValues>, freshet_core::store_layout::DecodeError> {
    StoredValues::decode(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
