//! Moves values from the previous layout (`fv:{view}:{entity_id}`, one hash per view and
//! entity) into entity hashes (see [`freshet_core::store_layout`]), without losing any.
//!
//! Each legacy hash is written into its entity hash with the versioned write as a
//! backfill would write it, so a newer value already there (a processor of this version
//! that ran first) is kept, and the migration can run beside a live processor of this
//! version. The legacy key is deleted only when the entity hash then holds that view at
//! the legacy version or newer, and only if the legacy hash was not rewritten meanwhile
//! (its version is checked in the same step as the delete). Keys of views the
//! definitions do not know, and corrupt hashes, are left where they are and counted.
//! Running it again is harmless: what was moved is gone, what was left is left again.

use crate::{write_updates, RawHash};
use freshet_core::store_layout::{
    FeatureUpdate, LegacyKey, StoredValues, ViewStorage, Writer, LEGACY_KEY_PREFIX, VERSION,
};
use redis::aio::ConnectionLike;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Keys asked for per `SCAN` step (and moved per pipeline).
const SCAN_COUNT: usize = 500;

/// Deletes a legacy hash if its version is still the one that was migrated.
const DELETE_IF_UNCHANGED: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Legacy hashes looked at.
    pub scanned: u64,
    /// Written into their entity hash and deleted.
    pub moved: u64,
    /// Deleted because the entity hash already held the view at that version or newer.
    pub already_newer: u64,
    /// Left in place: a view the definitions do not have.
    pub unknown_view: u64,
    /// Left in place: a hash that does not decode (logged with its key by the caller
    /// through `on_problem`).
    pub unreadable: u64,
    /// Left in place: rewritten while being migrated (run the migration again).
    pub changed_meanwhile: u64,
}

/// Migrates every legacy hash. `views` gives each known view's storage; `progress` is
/// called after every step with the report so far; `on_problem` with each key left in
/// place and why.
pub async fn migrate_legacy<C: ConnectionLike>(
    connection: &mut C,
    views: &HashMap<String, ViewStorage>,
    mut progress: impl FnMut(&MigrationReport),
    mut on_problem: impl FnMut(&str, &str),
) -> redis::RedisResult<MigrationReport> {
    static DELETE: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(DELETE_IF_UNCHANGED));
    let mut report = MigrationReport::default();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{LEGACY_KEY_PREFIX}:*"))
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(connection)
            .await?;
        cursor = next;
        if !keys.is_empty() {
            let mut read = redis::pipe();
            for key in &keys {
                read.cmd("HGETALL").arg(key).cmd("PTTL").arg(key);
            }
            let replies: Vec<redis::Value> = read.query_async(connection).await?;
            let mut moves: Vec<(String, FeatureUpdate, ViewStorage)> = Vec::new();
            for (key, reply) in keys.iter().zip(replies.chunks_exact(2)) {
                report.scanned += 1;
                let Some(legacy) = LegacyKey::parse(key) else {
                    continue;
                };
                let Some(storage) = views.get(legacy.view) else {
                    report.unknown_view += 1;
                    on_problem(key, "its view is not in the definitions");
                    continue;
                };
                let hash: RawHash =
                    redis::from_redis_value(reply[0].clone()).map_err(redis::RedisError::from)?;
                let remaining_ms: i64 = redis::from_redis_value(reply[1].clone()).unwrap_or(-1);
                let stored = match StoredValues::decode_legacy(hash.fields()) {
                    Ok(Some(stored)) => stored,
                    Ok(None) => continue, // expired or deleted since the scan
                    Err(e) => {
                        report.unreadable += 1;
                        on_problem(key, &e.to_string());
                        continue;
                    }
                };
                let storage = ViewStorage {
                    entity_type: storage.entity_type.clone(),
                    // The value expires when it would have; a key without expiry
                    // gets the view's TTL.
                    ttl_ms: if remaining_ms > 0 {
                        remaining_ms
                    } else {
                        storage.ttl_ms
                    },
                };
                let update = FeatureUpdate {
                    view: legacy.view.to_string(),
                    entity: legacy.entity_id.to_string(),
                    version: stored.version,
                    event_time_ms: stored.event_time_ms,
                    values: stored.values,
                };
                moves.push((key.clone(), update, storage));
            }
            for (key, update, storage) in &moves {
                let applied =
                    write_updates(connection, [(update, storage)], Writer::Backfill).await?;
                let deleted: i64 = DELETE
                    .key(key)
                    .arg(VERSION)
                    .arg(freshet_core::store_layout::encode_version(update.version))
                    .invoke_async(connection)
                    .await?;
                match (applied, deleted) {
                    (_, 0) => {
                        report.changed_meanwhile += 1;
                        on_problem(key, "it was rewritten while being migrated; run again");
                    }
                    (0, _) => report.already_newer += 1,
                    _ => report.moved += 1,
                }
            }
            progress(&report);
        }
        if cursor == 0 {
            break;
        }
    }
    Ok(report)
}
