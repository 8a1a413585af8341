//! The processor's checkpoint in RocksDB: per input partition its next offset, its clock
//! and the state of every entity.
//!
//! Keys (all state is scoped by partition, so partitions can later be split between
//! processor instances):
//!
//! ```text
//! p/{topic}/{partition}/offset      next offset to read (i64, big-endian)
//! p/{topic}/{partition}/clock       largest event time seen (i64)
//! p/{topic}/{partition}/w/{view}/{group}/{start}/{entity}
//!                                   one window or pane of an entity's state
//!                                   (`freshet_engine::state_codec`)
//! p/{topic}/{partition}/w/{view}/{group}/sessions/{entity}
//!                                   the sessions of an entity's session group
//! v/{view}                          fingerprint of the view's definition
//! outbox/{epoch}                    an epoch an earlier release checkpointed before its
//!                                   Redis write (JSON; epoch zero-padded)
//! ```
//!
//! An entity's state is kept in pieces (see [`StatePart`]) so that an epoch writes only the
//! windows and panes it changed. Earlier versions kept each entity's whole state under
//! `p/{topic}/{partition}/s/{view}/{entity}`; such keys are split into pieces when the
//! partition is loaded.
//!
//! [`Checkpoint::commit_epochs`] writes one synced WriteBatch: the state changes, offsets
//! and clocks of one or more epochs, in order, so after a crash the store holds either all
//! of them or none. An epoch is checkpointed once it is in Redis, so nothing of Redis'
//! needs to be kept here. Releases before that wrote Redis beside the checkpoint and kept
//! each epoch's updates (its outbox) until delivered: [`Checkpoint::outboxes`] still
//! finds those, for the processor to deliver once on its first start.

use freshet_core::store_layout::FeatureUpdate;
use freshet_engine::{
    EntityState, PartKey, PartitionEngine, ServedWindow, StateKey, StatePart, TouchedPart,
};
use rocksdb::{MemtableFactory, Options, WriteBatch, WriteOptions, DB};
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

/// An update of an epoch's outbox.
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

/// Everything one epoch delivers. Kept in memory; releases before the delivery wrote Redis
/// first also kept it in the checkpoint until delivered (see [`Checkpoint::outboxes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub epoch: u64,
    /// The values the epoch leaves, one per (view, entity) it changed: for Redis and the
    /// output topic.
    pub updates: Vec<OutboxUpdate>,
    /// With every change published (`PublishedChanges::All`): the epoch's earlier changes
    /// of pairs in `updates`, oldest first; published before them, never written to Redis.
    #[serde(default)]
    pub superseded: Vec<OutboxUpdate>,
    pub dead_letters: Vec<DeadLetter>,
    /// Next offset of every partition at the end of the epoch.
    pub offsets: Vec<(String, i32, i64)>,
}

/// A view's fingerprints (see `freshet_engine::fingerprint`): the one to store, and the
/// one earlier releases stored, which is accepted once and replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFingerprint {
    pub view: String,
    pub current: String,
    pub legacy: String,
}

/// What the checkpoint holds for one partition.
#[derive(Debug, Default)]
pub struct PartitionCheckpoint {
    pub next_offset: Option<i64>,
    pub clock: Option<i64>,
    /// The pieces of each entity's state, for [`PartitionEngine::restore`].
    pub entities: HashMap<StateKey, Vec<(PartKey, StatePart)>>,
}

pub struct Checkpoint {
    db: DB,
}

/// What an epoch changed in one partition: taken from its engine at the end of the epoch,
/// written by [`Checkpoint::commit_epochs`].
#[derive(Debug)]
pub struct PartitionChanges {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub clock: Option<i64>,
    /// Pieces of entity state changed in the epoch.
    pub states: Vec<TouchedPart>,
    /// Whether the epoch processed records of the partition (only then does the
    /// changelog get its offset and clock).
    pub progressed: bool,
}

impl PartitionChanges {
    pub fn take(
        topic: &str,
        partition: i32,
        engine: &mut PartitionEngine,
        progressed: bool,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            next_offset: engine.next_offset(),
            clock: engine.clock(),
            states: engine.drain_touched(),
            progressed,
        }
    }
}

pub(crate) fn partition_prefix(topic: &str, partition: i32) -> String {
    format!("p/{topic}/{partition}/")
}

/// The key of a piece of state, after the partition's prefix.
fn part_key(view: &str, entity: &str, part: PartKey) -> String {
    let mut key = String::new();
    write_part_key(&mut key, view, entity, part);
    key
}

/// Appends [`part_key`]'s key to `out`.
pub(crate) fn write_part_key(out: &mut String, view: &str, entity: &str, part: PartKey) {
    let mut number = itoa::Buffer::new();
    out.push_str("w/");
    out.push_str(view);
    out.push('/');
    out.push_str(number.format(part.group()));
    out.push('/');
    match part {
        PartKey::Window { start, .. } => out.push_str(number.format(start)),
        PartKey::Sessions { .. } => out.push_str("sessions"),
    }
    out.push('/');
    out.push_str(entity);
}

/// Adds the writes of an epoch to `batch` (see [`Checkpoint::commit_epochs`]).
fn epoch_batch(partitions: &[PartitionChanges], view_names: &[String], batch: &mut WriteBatch) {
    // In any order: the vector memtable sorts when it is flushed.
    let mut key = String::new();
    for changes in partitions {
        let p = partition_prefix(&changes.topic, changes.partition);
        batch.put(format!("{p}offset"), changes.next_offset.to_be_bytes());
        if let Some(clock) = changes.clock {
            batch.put(format!("{p}clock"), clock.to_be_bytes());
        }
        // A piece no checkpoint ever held needs no deletion here (only the changelog's).
        for touched in changes.states.iter().filter(|t| !t.unwritten) {
            key.clear();
            key.push_str(&p);
            write_part_key(
                &mut key,
                &view_names[touched.view],
                &touched.entity,
                touched.part,
            );
            match touched.state.as_deref() {
                Some(bytes) => batch.put(&key, bytes),
                None => batch.delete(&key),
            }
        }
    }
}

/// About the size of the write batch of an epoch, at least: each record takes its key,
/// its value and up to a dozen bytes of framing.
fn batch_size(partitions: &[PartitionChanges], view_names: &[String]) -> usize {
    const FRAMING: usize = 12;
    // The numbers and separators of a key: `p/`, `/`, a partition, `/w/`, `/`, a group,
    // `/`, a window start, `/`.
    const KEY_PUNCTUATION: usize = 2 + 1 + 11 + 3 + 1 + 20 + 1 + 20 + 1;
    let pieces: usize = partitions
        .iter()
        .flat_map(|changes| changes.states.iter().map(|t| (changes.topic.len(), t)))
        .map(|(topic, t)| {
            let key = KEY_PUNCTUATION + topic + view_names[t.view].len() + t.entity.len();
            FRAMING + key + t.state.as_ref().map_or(0, Vec::len)
        })
        .sum();
    let offsets: usize = partitions
        .iter()
        .map(|c| 2 * (FRAMING + KEY_PUNCTUATION + c.topic.len() + 8))
        .sum();
    FRAMING + pieces + offsets
}

/// `{view}/{group}/{start or sessions}/{entity}` back into its parts (entities may hold `/`).
fn parse_part_key(rest: &str) -> Option<(&str, &str, PartKey)> {
    let mut fields = rest.splitn(4, '/');
    let (view, group, which, entity) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let group = group.parse().ok()?;
    let part = match which {
        "sessions" => PartKey::Sessions { group },
        start => PartKey::Window {
            group,
            start: start.parse().ok()?,
        },
    };
    Some((view, entity, part))
}

fn corrupt(key: &[u8], reason: impl ToString) -> CheckpointError {
    CheckpointError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// Where earlier versions kept their single outbox; read once and moved to its epoch key.
const LEGACY_OUTBOX: &[u8] = b"outbox";
const OUTBOX_PREFIX: &[u8] = b"outbox/";

fn outbox_key(epoch: u64) -> String {
    format!("outbox/{epoch:020}")
}

fn parse_outbox(key: &[u8], bytes: &[u8]) -> Result<Outbox, CheckpointError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        // State is read only when the processor starts; while it runs, every epoch writes
        // thousands of keys. A vector memtable appends them and sorts once, when it is
        // flushed, where the default skip list searched its place for each (a third of the
        // checkpoint's CPU). Reading the memtable sorts it: slow, but only at start.
        options.set_memtable_factory(MemtableFactory::Vector);
        options.set_allow_concurrent_memtable_write(false);
        let db = DB::open(&options, path).map_err(|cause| CheckpointError::Open {
            path: path.display().to_string(),
            cause,
        })?;
        Ok(Self { db })
    }

    /// Drops the state of views whose definition changed since it was written (their old
    /// state would not fit), and records the current fingerprints. Returns the views reset.
    ///
    /// A view stored under its fingerprint of earlier releases ([`ViewFingerprint::legacy`])
    /// is unchanged: its state stays and the current fingerprint replaces the old one.
    pub fn reconcile_views(
        &self,
        fingerprints: &[ViewFingerprint],
    ) -> Result<Vec<String>, CheckpointError> {
        let mut reset = Vec::new();
        let mut batch = WriteBatch::default();
        for ViewFingerprint {
            view,
            current,
            legacy,
        } in fingerprints
        {
            let key = format!("v/{view}");
            let stored = self.db.get(&key)?;
            let Some(stored) = stored else {
                batch.put(&key, current.as_bytes());
                continue;
            };
            if stored == current.as_bytes() {
                continue;
            }
            if stored == legacy.as_bytes() {
                tracing::info!(
                    view,
                    "the view's state was saved by an earlier release; it stays, under the new fingerprint"
                );
            } else {
                reset.push(view.clone());
                for item in self.db.prefix_iterator(b"p/") {
                    let (k, _) = item?;
                    let text = String::from_utf8_lossy(&k);
                    if !text.starts_with("p/") {
                        break;
                    }
                    if text.contains(&format!("/w/{view}/"))
                        || text.contains(&format!("/s/{view}/"))
                    {
                        batch.delete(&k);
                    }
                }
            }
            batch.put(&key, current.as_bytes());
        }
        self.db.write(batch)?;
        Ok(reset)
    }

    /// The fingerprint stored for a view, if any.
    pub fn view_fingerprint(&self, view: &str) -> Result<Option<String>, CheckpointError> {
        Ok(self
            .db
            .get(format!("v/{view}"))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// What is stored for a partition; entity states come back keyed by view index, in
    /// pieces. States in the older whole-entity layout are split into pieces on the way.
    pub fn load_partition(
        &self,
        topic: &str,
        partition: i32,
        view_index: &HashMap<String, usize>,
    ) -> Result<PartitionCheckpoint, CheckpointError> {
        let p = partition_prefix(topic, partition);
        let read_i64 = |name: &str| self.read_i64(&format!("{p}{name}"));
        let mut out = PartitionCheckpoint {
            next_offset: read_i64("offset")?,
            clock: read_i64("clock")?,
            entities: HashMap::new(),
        };
        let parts_prefix = format!("{p}w/");
        for item in self.db.prefix_iterator(parts_prefix.as_bytes()) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(parts_prefix.as_bytes()) else {
                break;
            };
            let rest = String::from_utf8_lossy(rest);
            let (view, entity, part) =
                parse_part_key(&rest).ok_or_else(|| corrupt(&k, "not a state key"))?;
            let Some(&vi) = view_index.get(view) else {
                continue;
            };
            let state = StatePart::decode(&v).map_err(|e| corrupt(&k, e))?;
            out.entities
                .entry((vi, entity.to_string()))
                .or_default()
                .push((part, state));
        }
        self.split_whole_states(&p, view_index, &mut out.entities)?;
        Ok(out)
    }

    /// Moves states kept whole by earlier versions (`{p}s/{view}/{entity}`) to pieces, in
    /// one synced batch, and adds them to `entities`.
    fn split_whole_states(
        &self,
        p: &str,
        view_index: &HashMap<String, usize>,
        entities: &mut HashMap<StateKey, Vec<(PartKey, StatePart)>>,
    ) -> Result<(), CheckpointError> {
        let whole_prefix = format!("{p}s/");
        let mut batch = WriteBatch::default();
        for item in self.db.prefix_iterator(whole_prefix.as_bytes()) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(whole_prefix.as_bytes()) else {
                break;
            };
            batch.delete(&k);
            let rest = String::from_utf8_lossy(rest);
            let Some((view, entity)) = rest.split_once('/') else {
                continue;
            };
            let Some(&vi) = view_index.get(view) else {
                continue;
            };
            let state: EntityState = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            let parts = state.parts();
            for (part, piece) in &parts {
                batch.put(
                    format!("{p}{}", part_key(view, entity, *part)),
                    piece.encode(),
                );
            }
            entities
                .entry((vi, entity.to_string()))
                .or_default()
                .extend(parts);
        }
        if !batch.is_empty() {
            self.write_synced(batch)?;
        }
        Ok(())
    }

    /// Writes the memtable out, so that reads that follow come from sorted files: reading
    /// the vector memtable sorts a copy of all of it, for every iterator. Taking partitions
    /// over reads the checkpoint while the processor runs (six partitions taken over one by
    /// one took 5 s each in a debug build with a full memtable; after a flush, a few ms).
    pub fn flush(&self) -> Result<(), CheckpointError> {
        self.db.flush()?;
        Ok(())
    }

    /// The next offset of a partition as checkpointed, if any.
    pub fn partition_offset(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, CheckpointError> {
        self.read_i64(&format!("{}offset", partition_prefix(topic, partition)))
    }

    /// An 8-byte big-endian integer (an offset or a clock), if stored.
    fn read_i64(&self, key: &str) -> Result<Option<i64>, CheckpointError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(bytes) => bytes
                .as_slice()
                .try_into()
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| CheckpointError::Corrupt {
                    key: key.to_string(),
                    reason: "not an 8-byte integer".into(),
                }),
        }
    }

    /// Writes a partition's state as restored from elsewhere (the changelog), in one synced
    /// batch: with `wipe`, everything checkpointed for the partition goes first; then
    /// `pieces` (keys as the checkpoint writes them; `None` removes), the offset and the
    /// clock.
    pub fn write_restored<'a>(
        &self,
        (topic, partition): (&str, i32),
        wipe: bool,
        pieces: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        next_offset: i64,
        clock: Option<i64>,
    ) -> Result<(), CheckpointError> {
        let p = partition_prefix(topic, partition);
        let mut batch = WriteBatch::default();
        if wipe {
            for item in self.db.prefix_iterator(p.as_bytes()) {
                let (k, _) = item?;
                if !k.starts_with(p.as_bytes()) {
                    break;
                }
                batch.delete(&k);
            }
        }
        for (key, value) in pieces {
            match value {
                Some(v) => batch.put(key, v),
                None => batch.delete(key),
            }
        }
        batch.put(format!("{p}offset"), next_offset.to_be_bytes());
        match clock {
            Some(clock) => batch.put(format!("{p}clock"), clock.to_be_bytes()),
            None => batch.delete(format!("{p}clock")),
        }
        self.write_synced(batch)
    }

    /// The outboxes an earlier release left: epochs it checkpointed but may not have
    /// written to Redis, oldest first.
    pub fn outboxes(&self) -> Result<Vec<Outbox>, CheckpointError> {
        if let Some(bytes) = self.db.get(LEGACY_OUTBOX)? {
            let outbox = parse_outbox(LEGACY_OUTBOX, &bytes)?;
            let mut batch = WriteBatch::default();
            batch.put(outbox_key(outbox.epoch), &bytes);
            batch.delete(LEGACY_OUTBOX);
            self.write_synced(batch)?;
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

    /// Writes the epochs atomically and durably, in order: the partitions' offsets and
    /// clocks, and the entity states they changed. Several epochs in one batch share one
    /// sync (the delivery checkpoints those that queued up while the last one synced).
    pub fn commit_epochs(
        &self,
        epochs: &[&[PartitionChanges]],
        view_names: &[String],
    ) -> Result<(), CheckpointError> {
        // Allocated once at about its final size: grown from nothing, a catch-up epoch's
        // batch (megabytes) was copied at each doubling, into memory fresh from the kernel.
        let size = epochs.iter().map(|e| batch_size(e, view_names)).sum();
        let mut batch = WriteBatch::with_capacity_bytes(size);
        for partitions in epochs {
            epoch_batch(partitions, view_names, &mut batch);
        }
        self.write_synced(batch)
    }

    /// [`Checkpoint::commit_epochs`] of one epoch.
    pub fn commit_epoch(
        &self,
        partitions: &[PartitionChanges],
        view_names: &[String],
    ) -> Result<(), CheckpointError> {
        self.commit_epochs(&[partitions], view_names)
    }

    /// Writes `batch` atomically and waits until it is on disk.
    fn write_synced(&self, batch: WriteBatch) -> Result<(), CheckpointError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        Ok(())
    }

    /// Removes an outbox once delivered. Not synced: if it is lost, delivery is repeated,
    /// and repeating it is harmless (see docs/processor.md).
    pub fn clear_outbox(&self, epoch: u64) -> Result<(), CheckpointError> {
        self.db.delete(outbox_key(epoch))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_engine::acc::Acc;

    fn outbox(epoch: u64, offset: i64) -> Outbox {
        Outbox {
            epoch,
            updates: Vec::new(),
            superseded: Vec::new(),
            dead_letters: Vec::new(),
            offsets: vec![("user_events".into(), 0, offset)],
        }
    }

    /// An outbox as releases before this one wrote it beside their epoch's state.
    fn leave_outbox(checkpoint: &Checkpoint, outbox: &Outbox) {
        checkpoint
            .db
            .put(
                outbox_key(outbox.epoch),
                serde_json::to_vec(outbox).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn outboxes_left_by_an_earlier_release_come_back_oldest_first_until_each_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        // Epoch 10 sorts after epoch 9 only if the key pads the number.
        for (epoch, offset) in [(9, 90), (10, 100), (11, 110)] {
            leave_outbox(&checkpoint, &outbox(epoch, offset));
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

    fn one_piece_of_view_0(checkpoint: &Checkpoint) {
        let changes = [PartitionChanges {
            topic: "t".into(),
            partition: 0,
            next_offset: 1,
            clock: Some(0),
            states: vec![TouchedPart {
                view: 0,
                entity: "e".into(),
                part: PartKey::Window { group: 0, start: 0 },
                state: Some(serde_json::to_vec(&piece(3)).unwrap()),
                unwritten: false,
            }],
            progressed: true,
        }];
        checkpoint
            .commit_epoch(&changes, &["v".to_string()])
            .unwrap();
    }

    #[test]
    fn state_under_the_fingerprint_of_an_earlier_release_stays_and_is_refingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let views = HashMap::from([("v".to_string(), 0)]);
        let fp = |current: &str, legacy: &str| {
            vec![ViewFingerprint {
                view: "v".into(),
                current: current.into(),
                legacy: legacy.into(),
            }]
        };
        // An earlier release stored its fingerprint "old" and some state.
        assert!(checkpoint
            .reconcile_views(&fp("old", "older"))
            .unwrap()
            .is_empty());
        one_piece_of_view_0(&checkpoint);
        assert_eq!(parts_of(&checkpoint, &views).len(), 1);
        // This release computes "new" and recognises "old" as its legacy fingerprint.
        assert!(checkpoint
            .reconcile_views(&fp("new", "old"))
            .unwrap()
            .is_empty());
        assert_eq!(parts_of(&checkpoint, &views).len(), 1, "the state stayed");
        assert_eq!(
            checkpoint.view_fingerprint("v").unwrap().as_deref(),
            Some("new")
        );
        // A second start finds the new fingerprint stored...
        assert!(checkpoint
            .reconcile_views(&fp("new", "old"))
            .unwrap()
            .is_empty());
        // ...and a real change of definition still drops the state.
        assert_eq!(
            checkpoint.reconcile_views(&fp("changed", "old")).unwrap(),
            vec!["v".to_string()]
        );
        assert!(parts_of(&checkpoint, &views).is_empty());
        assert_eq!(
            checkpoint.view_fingerprint("v").unwrap().as_deref(),
            Some("changed")
        );
    }

    fn parts_of(
        checkpoint: &Checkpoint,
        views: &HashMap<String, usize>,
    ) -> BTreeMap<(usize, String), Vec<(PartKey, StatePart)>> {
        let loaded = checkpoint.load_partition("t", 0, views).unwrap();
        loaded
            .entities
            .into_iter()
            .map(|(k, mut parts)| {
                parts.sort_by_key(|(key, _)| *key);
                (k, parts)
            })
            .collect()
    }

    fn piece(n: i64) -> StatePart {
        StatePart::Window(vec![Acc::Count(n)])
    }

    #[test]
    fn an_epochs_batch_is_allocated_at_its_full_size_at_once() {
        let long_name = "a_view_with_a_name_longer_than_most".to_string();
        let states = (0..500)
            .map(|i| TouchedPart {
                view: 1,
                entity: format!("entity-{i}").into(),
                part: if i % 3 == 0 {
                    PartKey::Sessions { group: 2 }
                } else {
                    PartKey::Window {
                        group: 1,
                        start: -1_700_000_000_000 - i,
                    }
                },
                // Values outweigh keys, as JSON states do.
                state: (i % 5 != 0).then(|| vec![b'7'; 200 + i as usize % 50]),
                unwritten: false,
            })
            .collect();
        let changes = [PartitionChanges {
            topic: "user_events".into(),
            partition: 11,
            next_offset: i64::MAX,
            clock: Some(i64::MIN),
            states,
            progressed: true,
        }];
        let names = ["v".to_string(), long_name];
        let mut batch = WriteBatch::default();
        epoch_batch(&changes, &names, &mut batch);
        assert_eq!(batch.len(), 500 + 2);
        let estimate = batch_size(&changes, &names);
        assert!(
            (batch.size_in_bytes()..=batch.size_in_bytes() * 2).contains(&estimate),
            "estimate {estimate} for a batch of {} bytes",
            batch.size_in_bytes()
        );
    }

    #[test]
    fn epochs_checkpointed_together_leave_what_they_would_one_after_another() {
        let views = HashMap::from([("v".to_string(), 0)]);
        let pane = |start| PartKey::Window { group: 0, start };
        let epoch = |next_offset, states: Vec<(&str, Option<i64>)>| PartitionChanges {
            topic: "t".into(),
            partition: 0,
            next_offset,
            clock: Some(next_offset * 10),
            states: states
                .into_iter()
                .map(|(entity, n)| TouchedPart {
                    view: 0,
                    entity: entity.into(),
                    part: pane(0),
                    state: n.map(|n| piece(n).encode()),
                    unwritten: false,
                })
                .collect(),
            progressed: true,
        };
        let epochs = || {
            [
                vec![epoch(3, vec![("a", Some(1)), ("b", Some(1))])],
                vec![epoch(5, vec![("a", None), ("b", Some(2)), ("c", Some(7))])],
                vec![epoch(6, vec![("a", Some(4))])],
            ]
        };
        let (together, one_by_one) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let together = Checkpoint::open(together.path()).unwrap();
        let epochs_together = epochs();
        let refs: Vec<&[PartitionChanges]> = epochs_together.iter().map(Vec::as_slice).collect();
        together.commit_epochs(&refs, &["v".to_string()]).unwrap();
        let one_by_one = Checkpoint::open(one_by_one.path()).unwrap();
        for e in epochs() {
            one_by_one.commit_epoch(&e, &["v".to_string()]).unwrap();
        }
        for checkpoint in [&together, &one_by_one] {
            assert_eq!(
                parts_of(checkpoint, &views),
                BTreeMap::from([
                    ((0, "a".to_string()), vec![(pane(0), piece(4))]),
                    ((0, "b".to_string()), vec![(pane(0), piece(2))]),
                    ((0, "c".to_string()), vec![(pane(0), piece(7))]),
                ])
            );
            let loaded = checkpoint.load_partition("t", 0, &views).unwrap();
            assert_eq!((loaded.next_offset, loaded.clock), (Some(6), Some(60)));
        }
    }

    #[test]
    fn pieces_of_state_come_back_as_written_and_removed_ones_stay_away() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let views = HashMap::from([("v".to_string(), 0)]);
        let pane = |start| PartKey::Window { group: 0, start };
        let touched = |entity: &str, part, state: Option<StatePart>| TouchedPart {
            view: 0,
            entity: entity.into(),
            part,
            state: state.map(|s| s.encode()),
            unwritten: false,
        };
        let changes = |states| PartitionChanges {
            topic: "t".into(),
            partition: 0,
            next_offset: 7,
            clock: Some(-5),
            states,
            progressed: true,
        };
        // Entity ids may hold the separator; pane starts may be negative.
        let states = vec![
            touched("a/b", pane(-1_000), Some(piece(1))),
            touched("a/b", pane(0), Some(piece(2))),
            touched("c", pane(0), Some(piece(3))),
        ];
        checkpoint
            .commit_epoch(&[changes(states)], &["v".into()])
            .unwrap();
        let states = vec![
            touched("a/b", pane(-1_000), None),
            touched("c", pane(0), Some(piece(4))),
        ];
        checkpoint
            .commit_epoch(&[changes(states)], &["v".into()])
            .unwrap();
        assert_eq!(
            parts_of(&checkpoint, &views),
            BTreeMap::from([
                ((0, "a/b".to_string()), vec![(pane(0), piece(2))]),
                ((0, "c".to_string()), vec![(pane(0), piece(4))]),
            ])
        );
        let loaded = checkpoint.load_partition("t", 0, &views).unwrap();
        assert_eq!((loaded.next_offset, loaded.clock), (Some(7), Some(-5)));
    }

    #[test]
    fn a_whole_state_left_by_an_earlier_version_is_split_into_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let views = HashMap::from([("v".to_string(), 0)]);
        let whole = EntityState::with_groups(vec![freshet_engine::GroupState::Tumbling {
            windows: BTreeMap::from([(0, vec![Acc::Count(5)]), (60_000, vec![Acc::Count(1)])]),
        }]);
        let legacy_key = b"p/t/0/s/v/user/1".as_slice();
        checkpoint
            .db
            .put(legacy_key, serde_json::to_vec(&whole).unwrap())
            .unwrap();
        let expected = BTreeMap::from([(
            (0, "user/1".to_string()),
            vec![
                (PartKey::Window { group: 0, start: 0 }, piece(5)),
                (
                    PartKey::Window {
                        group: 0,
                        start: 60_000,
                    },
                    piece(1),
                ),
            ],
        )]);
        assert_eq!(parts_of(&checkpoint, &views), expected);
        assert_eq!(
            checkpoint.db.get(legacy_key).unwrap(),
            None,
            "moved, not copied"
        );
        drop(checkpoint);
        let reopened = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(parts_of(&reopened, &views), expected);
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
        leave_outbox(&checkpoint, &outbox(5, 50));
        assert_eq!(checkpoint.outboxes().unwrap(), vec![legacy, outbox(5, 50)]);
        checkpoint.clear_outbox(4).unwrap();
        checkpoint.clear_outbox(5).unwrap();
        assert_eq!(checkpoint.outboxes().unwrap(), Vec::new());
        assert_eq!(checkpoint.db.get(LEGACY_OUTBOX).unwrap(), None);
    }

    #[test]
    fn pieces_an_earlier_release_saved_as_json_are_read_and_saved_anew_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let views = HashMap::from([("v".to_string(), 0)]);
        // An earlier release's piece: its JSON text.
        one_piece_of_view_0(&checkpoint);
        let key = format!(
            "{}{}",
            partition_prefix("t", 0),
            part_key("v", "e", PartKey::Window { group: 0, start: 0 })
        );
        let stored = || checkpoint.db.get(key.as_bytes()).unwrap().unwrap();
        assert_eq!(stored()[0], b'{');
        let parts = parts_of(&checkpoint, &views);
        assert_eq!(
            parts[&(0, "e".to_string())],
            [(PartKey::Window { group: 0, start: 0 }, piece(3))]
        );
        // The piece changes: saved in this release's form, and read back.
        let changes = [PartitionChanges {
            topic: "t".into(),
            partition: 0,
            next_offset: 2,
            clock: Some(0),
            states: vec![TouchedPart {
                view: 0,
                entity: "e".into(),
                part: PartKey::Window { group: 0, start: 0 },
                state: Some(piece(4).encode()),
                unwritten: false,
            }],
            progressed: true,
        }];
        checkpoint
            .commit_epoch(&changes, &["v".to_string()])
            .unwrap();
        assert_eq!(stored()[0], freshet_engine::state_codec::FORMAT_1);
        assert!(stored().len() < serde_json::to_vec(&piece(4)).unwrap().len() / 2);
        let parts = parts_of(&checkpoint, &views);
        assert_eq!(
            parts[&(0, "e".to_string())],
            [(PartKey::Window { group: 0, start: 0 }, piece(4))]
        );
        // A piece of a format this release does not know stops the load, naming the key.
        checkpoint.db.put(key.as_bytes(), [0x7f, 0]).unwrap();
        let err = checkpoint
            .load_partition("t", 0, &views)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&key) && err.contains("unknown format (first byte 0x7f)"),
            "{err}"
        );
    }
}
