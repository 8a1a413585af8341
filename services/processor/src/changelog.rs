//! The changelog: a Kafka topic holding every epoch's state changes, produced in the
//! epoch's transaction beside its feature updates and input offsets, so that a partition's
//! state can move to another processor instance, or come back after its disk is lost.
//!
//! One topic per deployment, `{group}-state`, with as many partitions as the widest source:
//! the state of source partition `p` (of any source topic) lives in changelog partition
//! `p`. A record's key is the checkpoint's key for the same piece
//! (`p/{topic}/{partition}/w/{view}/{group}/{start}/{entity}`, `.../sessions/{entity}`),
//! its value the piece as the checkpoint stores it, or nothing for a removed piece (a
//! tombstone, which compaction drops). Each epoch that moved a partition on also writes
//! `p/{topic}/{partition}/offset` (the partition's next offset) and `.../clock`.
//!
//! Every record carries the partition's next offset at the end of its epoch (header
//! [`HEADER_END`], 8 bytes big-endian), and a piece its view's fingerprint
//! ([`HEADER_VIEW`]). Restoring a partition whose group offset is `O` takes, for every key,
//! the record with the largest end offset not past `O` ([`read_partition`]). That rule
//! gives the state at `O` even from a broker that hands aborted transactions to a
//! `read_committed` reader (tansu does): the engine is deterministic, so any epoch's
//! record, committed or not, holds the true value of its piece at its end offset, and
//! the committed epoch that last changed a piece before `O` wrote it (a piece created and
//! removed within one epoch included, [`freshet_engine::TouchedPart::unwritten`]). Records
//! past `O` belong to epochs not committed (yet). `docs/scaling.md` has the whole argument.

use crate::checkpoint::PartitionChanges;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The header with a record's end offset.
pub const HEADER_END: &str = "freshet.end";
/// The header with a piece's view fingerprint (its first [`FINGERPRINT_CHARS`] hex digits).
pub const HEADER_VIEW: &str = "freshet.view";
/// Hex digits of a view fingerprint a changelog record carries: enough to tell two
/// definitions apart, short enough not to double the size of a small piece.
pub const FINGERPRINT_CHARS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("cannot read the changelog {topic}: {cause}")]
    Kafka {
        topic: String,
        cause: rdkafka::error::KafkaError,
    },
    #[error(
        "the changelog {topic} partition {partition} sent nothing for {waited:?} before its end"
    )]
    Stalled {
        topic: String,
        partition: i32,
        waited: Duration,
    },
}

/// The changelog topic of a deployment.
pub fn topic_name(group: &str) -> String {
    format!("{group}-state")
}

/// The short fingerprint a changelog record carries for a view.
pub fn short_fingerprint(fingerprint: &str) -> String {
    let digits = fingerprint.rsplit(':').next().unwrap_or(fingerprint);
    digits.chars().take(FINGERPRINT_CHARS).collect()
}

/// What a deployment writes to its changelog.
#[derive(Debug, Clone)]
pub struct ChangelogTopic {
    pub topic: String,
    /// By view index: the view's name and short fingerprint.
    pub views: Vec<(String, String)>,
}

impl ChangelogTopic {
    /// Hands each changelog record of one partition's epoch changes to `send`, the offset
    /// and clock last. Nothing for a partition the epoch did not move on.
    pub fn records(
        &self,
        changes: &PartitionChanges,
        mut send: impl FnMut(BaseRecord<'_, [u8], [u8]>) -> Result<usize, rdkafka::error::KafkaError>,
    ) -> Result<usize, rdkafka::error::KafkaError> {
        if !changes.progressed {
            return Ok(0);
        }
        let end = changes.next_offset.to_be_bytes();
        let prefix = crate::checkpoint::partition_prefix(&changes.topic, changes.partition);
        let mut bytes = 0;
        let mut key = String::new();
        for touched in &changes.states {
            key.clear();
            key.push_str(&prefix);
            let (view, fingerprint) = &self.views[touched.view];
            crate::checkpoint::write_part_key(&mut key, view, &touched.entity, touched.part);
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: HEADER_END,
                    value: Some(&end[..]),
                })
                .insert(Header {
                    key: HEADER_VIEW,
                    value: Some(fingerprint.as_bytes()),
                });
            let mut record = BaseRecord::to(&self.topic)
                .partition(changes.partition)
                .key(key.as_bytes())
                .headers(headers);
            if let Some(state) = &touched.state {
                record = record.payload(state.as_slice());
            }
            bytes += send(record)?;
        }
        let clock = changes.clock.map(i64::to_be_bytes);
        for (name, value) in [("clock", clock), ("offset", Some(end))] {
            let Some(value) = value else { continue };
            let key = format!("{prefix}{name}");
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: HEADER_END,
                value: Some(&end[..]),
            });
            bytes += send(
                BaseRecord::to(&self.topic)
                    .partition(changes.partition)
                    .key(key.as_bytes())
                    .payload(&value[..])
                    .headers(headers),
            )?;
        }
        Ok(bytes)
    }
}

/// A partition's state as the changelog holds it at a committed offset.
#[derive(Debug, Default)]
pub struct RestoredPartition {
    /// By checkpoint key: the piece (or clock) with the largest end offset not past the
    /// committed offset; `None` for a removed piece.
    pub records: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>,
    /// Whether the changelog has the epoch that ended at the committed offset (without
    /// it, the changelog cannot give the state there: it was written by a processor
    /// without a changelog, or the topic was deleted).
    pub reaches_committed: bool,
    /// Records read, and of them those of this partition kept.
    pub read: u64,
    pub kept: u64,
    pub elapsed: Duration,
}

impl RestoredPartition {
    /// The clock at the committed offset.
    pub fn clock(&self, topic: &str, partition: i32) -> Option<i64> {
        let key = format!(
            "{}clock",
            crate::checkpoint::partition_prefix(topic, partition)
        );
        let (_, value) = self.records.get(key.as_bytes())?;
        Some(i64::from_be_bytes(value.as_deref()?.try_into().ok()?))
    }

    /// The pieces of state (clock and offset left out).
    pub fn pieces(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.records
            .iter()
            .filter(|(k, _)| !k.ends_with(b"/clock") && !k.ends_with(b"/offset"))
            .map(|(k, (_, v))| (k.as_slice(), v.as_deref()))
    }
}

/// How a restore reports progress.
pub trait RestoreProgress {
    fn read(&mut self, records: u64);
}

/// Reads changelog partition `partition` to its end and keeps what source partition
/// `(topic, partition)` held at offset `committed`: for each key, the record with the
/// largest end offset in `(since, committed]` whose view fingerprint is `views`' (the
/// current definitions; state of a changed view is left out, as the checkpoint drops it).
pub fn read_partition(
    brokers: &str,
    changelog: &str,
    (topic, partition): (&str, i32),
    (since, committed): (Option<i64>, i64),
    views: &HashMap<String, String>,
    progress: &mut dyn RestoreProgress,
) -> Result<RestoredPartition, ChangelogError> {
    let started = Instant::now();
    let kafka = |cause| ChangelogError::Kafka {
        topic: changelog.to_string(),
        cause,
    };
    let consumer: BaseConsumer<RestoreContext> = freshet_kafka::client_config()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{changelog}-restore"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // Compaction or retention may have removed the first records: start at the oldest.
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(RestoreContext)
        .map_err(kafka)?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(changelog, partition, Offset::Offset(0))
        .map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;

    let prefix = crate::checkpoint::partition_prefix(topic, partition);
    let prefix = prefix.as_bytes();
    let offset_key = [prefix, b"offset"].concat();
    let mut out = RestoredPartition::default();
    let since = since.unwrap_or(i64::MIN);
    const STALL: Duration = Duration::from_secs(30);
    let mut last_record = Instant::now();
    loop {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            if last_record.elapsed() > STALL {
                return Err(ChangelogError::Stalled {
                    topic: changelog.to_string(),
                    partition,
                    waited: STALL,
                });
            }
            continue;
        };
        last_record = Instant::now();
        let message = match message {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
            Err(e) => return Err(kafka(e)),
        };
        out.read += 1;
        if out.read % 4096 == 0 {
            progress.read(4096);
        }
        let Some(key) = message.key() else { continue };
        if !key.starts_with(prefix) {
            continue;
        }
        let mut end = None;
        let mut fingerprint = None;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                match header.key {
                    HEADER_END => {
                        end = header
                            .value
                            .and_then(|v| v.try_into().ok())
                            .map(i64::from_be_bytes)
                    }
                    HEADER_VIEW => fingerprint = header.value,
                    _ => {}
                }
            }
        }
        let Some(end) = end else { continue };
        if end <= since || end > committed {
            continue;
        }
        if key == offset_key.as_slice() && end == committed {
            out.reaches_committed = true;
        }
        if let Some(view) = piece_view(&key[prefix.len()..]) {
            let current = views.get(view).map(String::as_bytes);
            if current.is_none() || current != fingerprint {
                continue;
            }
        }
        match out.records.get_mut(key) {
            Some((at, _)) if *at > end => {}
            Some(slot) => *slot = (end, message.payload().map(<[u8]>::to_vec)),
            None => {
                out.records
                    .insert(key.to_vec(), (end, message.payload().map(<[u8]>::to_vec)));
            }
        }
        out.kept += 1;
    }
    progress.read(out.read % 4096);
    out.elapsed = started.elapsed();
    Ok(out)
}

/// The restore consumer's context: the end of the partition, which it waits for, is not
/// an error to log.
struct RestoreContext;

impl rdkafka::client::ClientContext for RestoreContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let end = rdkafka::types::RDKafkaErrorCode::PartitionEOF;
        if error.rdkafka_error_code() != Some(end) {
            tracing::error!(%error, reason, "changelog consumer error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for RestoreContext {}

/// The view of a piece's key after the partition's prefix (`w/{view}/...`); `None` for the
/// offset and clock.
fn piece_view(rest: &[u8]) -> Option<&str> {
    let rest = rest.strip_prefix(b"w/")?;
    let end = rest.iter().position(|&b| b == b'/')?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_fingerprint_is_the_first_hex_digits_after_the_algorithm() {
        assert_eq!(
            short_fingerprint("sha256:d3bc7e8f0123456789abcdef"),
            "d3bc7e8f01234567"
        );
        assert_eq!(
            piece_view(b"w/user_click_stats/0/60000/u1"),
            Some("user_click_stats")
        );
        assert_eq!(piece_view(b"clock"), None);
    }
}
