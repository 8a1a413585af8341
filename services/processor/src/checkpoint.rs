//! The processor's checkpoint in RocksDB: per input partition its next offset, its clock
//! and the state of every entity, plus the outboxes of the epochs not yet delivered.
//!
//! Keys (all state is scoped by partition, so partitions can later be split between
//! processor instances):
//!
//! ```text
//! p/{topic}/{partition}/offset           next offset to read (i64, big-endian)
//! p/{topic}/{partition}/clock            largest event time seen (i64)
//! p/{topic}/{partition}/s/{view}/{entity} entity state (JSON)
//! v/{view}                               fingerprint of the view's definition
//! outbox/{epoch}                         an epoch not yet delivered (JSON; epoch zero-padded)
//! ```
//!
//! [`Checkpoint::commit_epoch`] writes one synced WriteBatch: state changes, offsets,
//! clocks and the epoch's outbox together, so after a crash the store holds either the
//! whole epoch or none of it. Epochs are delivered in the background while the next ones
//! are processed, so several outboxes can be waiting; each is removed once delivered.

use crate::engine::{EntityState, PartitionEngine, ServedWindow, StateKey};
use freshet_core::store_layout::FeatureUpdate;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot open the processor state at {path}: {cause}")]
    Open { path: String, cause: rocksdb::Error },
    #[error("processor state I/O failed: {0}")]
    Io(#[from] rocksdb::Error),
    #[error("processor state is damaged at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A record for the dead-letter topic, with why it is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub reason: String,
}

/// An update as kept in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxUpdate {
    pub view: String,
    pub entity: String,
    pub version: u64,
    pub event_time_ms: i64,
    pub values: BTreeMap<String, freshet_core::Value>,
    pub windows: Vec<ServedWindow>,
}

impl OutboxUpdate {
    pub fn feature_update(&self) -> FeatureUpdate {
        FeatureUpdate {
            view: self.view.clone(),
            entity: self.entity.clone(),
            version: self.version,
            event_time_ms: self.event_time_ms,
            values: self.values.clone(),
        }
    }
}

/// Everything one epoch delivers, kept until it is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub epoch: u64,
    pub updates: Vec<OutboxUpdate>,
    pub dead_letters: Vec<DeadLetter>,
    /// Next offset of every partition at the end of the epoch.
    pub offsets: Vec<(String, i32, i64)>,
}

/// What the checkpoint holds for one partition.
#[derive(Debug, Default)]
pub struct PartitionCheckpoint {
    pub next_offset: Option<i64>,
    pub clock: Option<i64>,
    pub entities: HashMap<StateKey, EntityState>,
}

pub struct Checkpoint {
    db: DB,
}

/// What an epoch changed in one partition: taken from its engine at the end of the epoch,
/// written by [`Checkpoint::commit_epoch`].
#[derive(Debug)]
pub struct PartitionChanges {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub clock: Option<i64>,
    /// Entity states changed in the epoch; `None`: removed.
    pub states: Vec<(StateKey, Option<EntityState>)>,
}

impl PartitionChanges {
    pub fn take(topic: &str, partition: i32, engine: &mut PartitionEngine) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            next_offset: engine.next_offset(),
            clock: engine.clock(),
            states: engine.drain_touched(),
        }
    }
}

fn prefix(topic: &str, partition: i32) -> String {
    format!("p/{topic}/{partition}/")
}

/// Where earlier versions kept their single outbox; read once and moved to its epoch key.
const LEGACY_OUTBOX: &[u8] = b"outbox";
const OUTBOX_PREFIX: &[u8] = b"outbox/";

fn outbox_key(epoch: u64) -> String {
    format!("outbox/{epoch:020}")
}

fn parse_outbox(key: &[u8], bytes: &[u8]) -> Result<Outbox, CheckpointError> {
    serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, path).map_err(|cause| CheckpointError::Open {
            path: path.display().to_string(),
            cause,
        })?;
        Ok(Self { db })
    }

    /// Drops the state of views whose definition changed since it was written (their old
    /// state would not fit), and records the current fingerprints. Returns the views reset.
    pub fn reconcile_views(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, CheckpointError> {
        let mut reset = Vec::new();
        let mut batch = WriteBatch::default();
        for (view, fingerprint) in fingerprints {
            let key = format!("v/{view}");
            let stored = self.db.get(&key)?;
            if stored.as_deref() != Some(fingerprint.as_bytes()) {
                if stored.is_some() {
                    reset.push(view.clone());
                    for item in self.db.prefix_iterator(b"p/") {
                        let (k, _) = item?;
                        let text = String::from_utf8_lossy(&k);
                        if !text.starts_with("p/") {
                            break;
                        }
                        if text.contains(&format!("/s/{view}/")) {
                            batch.delete(&k);
                        }
                    }
                }
                batch.put(&key, fingerprint.as_bytes());
            }
        }
        self.db.write(batch)?;
        Ok(reset)
    }

    /// What is stored for a partition; entity states come back keyed by view index.
    pub fn load_partition(
        &self,
        topic: &str,
        partition: i32,
        view_index: &HashMap<String, usize>,
    ) -> Result<PartitionCheckpoint, CheckpointError> {
        let p = prefix(topic, partition);
        let read_i64 = |name: &str| -> Result<Option<i64>, CheckpointError> {
            let key = format!("{p}{name}");
            match self.db.get(&key)? {
                None => Ok(None),
                Some(bytes) => bytes
                    .as_slice()
                    .try_into()
                    .map(|b| Some(i64::from_be_bytes(b)))
                    .map_err(|_| CheckpointError::Corrupt {
                        key,
                        reason: "not an 8-byte integer".into(),
                    }),
            }
        };
        let mut out = PartitionCheckpoint {
            next_offset: read_i64("offset")?,
            clock: read_i64("clock")?,
            entities: HashMap::new(),
        };
        let state_prefix = format!("{p}s/");
        for item in self.db.prefix_iterator(state_prefix.as_bytes()) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(state_prefix.as_bytes()) else {
                break;
            };
            let rest = String::from_utf8_lossy(rest);
            let Some((view, entity)) = rest.split_once('/') else {
                continue;
            };
            let Some(&vi) = view_index.get(view) else {
                continue;
            };
            let state: EntityState =
                serde_json::from_slice(&v).map_err(|e| CheckpointError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?;
            out.entities.insert((vi, entity.to_string()), state);
        }
        Ok(out)
    }

    /// The epochs checkpointed but not yet known to be delivered, oldest first.
    pub fn outboxes(&self) -> Result<Vec<Outbox>, CheckpointError> {
        if let Some(bytes) = self.db.get(LEGACY_OUTBOX)? {
            let outbox = parse_outbox(LEGACY_OUTBOX, &bytes)?;
            let mut batch = WriteBatch::default();
            batch.put(outbox_key(outbox.epoch), &bytes);
            batch.delete(LEGACY_OUTBOX);
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            self.db.write_opt(batch, &sync)?;
        }
        let mut out = Vec::new();
        let from = rocksdb::IteratorMode::From(OUTBOX_PREFIX, rocksdb::Direction::Forward);
        for item in self.db.iterator(from) {
            let (k, v) = item?;
            if !k.starts_with(OUTBOX_PREFIX) {
                break;
            }
            out.push(parse_outbox(&k, &v)?);
        }
        Ok(out)
    }

    /// Writes the epoch atomically and durably: the partitions' offsets and clocks, the
    /// entity states they changed, and the outbox.
    pub fn commit_epoch(
        &self,
        partitions: &[PartitionChanges],
        view_names: &[String],
        outbox: &Outbox,
    ) -> Result<(), CheckpointError> {
        let mut batch = WriteBatch::default();
        for changes in partitions {
            let p = prefix(&changes.topic, changes.partition);
            batch.put(format!("{p}offset"), changes.next_offset.to_be_bytes());
            if let Some(clock) = changes.clock {
                batch.put(format!("{p}clock"), clock.to_be_bytes());
            }
            for ((vi, entity), state) in &changes.states {
                let key = format!("{p}s/{}/{entity}", view_names[*vi]);
                match state {
                    Some(state) => {
                        batch.put(key, serde_json::to_vec(state).expect("state serialises"))
                    }
                    None => batch.delete(key),
                }
            }
        }
        batch.put(
            outbox_key(outbox.epoch),
            serde_json::to_vec(outbox).expect("outbox serialises"),
        );
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        Ok(())
    }

    /// Removes a delivered epoch's outbox. Not synced: if it is lost, delivery is repeated,
    /// and repeating it is harmless (see docs/processor.md).
    pub fn clear_outbox(&self, epoch: u64) -> Result<(), CheckpointError> {
        self.db.delete(outbox_key(epoch))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(epoch: u64, offset: i64) -> Outbox {
        Outbox {
            epoch,
            updates: Vec::new(),
            dead_letters: Vec::new(),
            offsets: vec![("user_events".into(), 0, offset)],
        }
    }

    fn commit(checkpoint: &Checkpoint, outbox: &Outbox) {
        checkpoint
            .commit_epoch(&[], &[], outbox)
            .expect("epoch committed");
    }

    #[test]
    fn epochs_waiting_for_delivery_come_back_oldest_first_until_each_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        // Epoch 10 sorts after epoch 9 only if the key pads the number.
        for (epoch, offset) in [(9, 90), (10, 100), (11, 110)] {
            commit(&checkpoint, &outbox(epoch, offset));
        }
        let epochs = |c: &Checkpoint| -> Vec<u64> {
            c.outboxes().unwrap().iter().map(|o| o.epoch).collect()
        };
        assert_eq!(epochs(&checkpoint), vec![9, 10, 11]);
        checkpoint.clear_outbox(10).unwrap();
        assert_eq!(epochs(&checkpoint), vec![9, 11]);
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(
            reopened.outboxes().unwrap(),
            vec![outbox(9, 90), outbox(11, 110)]
        );
    }

    #[test]
    fn an_outbox_left_by_an_earlier_version_is_delivered_then_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let legacy = outbox(4, 40);
        checkpoint
            .db
            .put(LEGACY_OUTBOX, serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        commit(&checkpoint, &outbox(5, 50));
        assert_eq!(checkpoint.outboxes().unwrap(), vec![legacy, outbox(5, 50)]);
        checkpoint.clear_outbox(4).unwrap();
        checkpoint.clear_outbox(5).unwrap();
        assert_eq!(checkpoint.outboxes().unwrap(), Vec::new());
        assert_eq!(checkpoint.db.get(LEGACY_OUTBOX).unwrap(), None);
    }
}
