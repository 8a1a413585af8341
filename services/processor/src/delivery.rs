//! Delivering an epoch's outbox: one Kafka transaction (feature updates, dead letters and
//! the input offsets), then versioned writes to Redis.

use crate::changelog::ChangelogTopic;
use crate::checkpoint::{DeadLetter, Outbox, OutboxUpdate, PartitionChanges};
use crate::metrics::ProcessorMetrics;
use freshet_avro::{ReadyEncoder, WireEncoder};
use freshet_core::store_layout::{FeatureUpdate, ViewStorage, Writer};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use freshet_core::update_record::FEATURE_UPDATE_SCHEMA;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kafka transaction failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("another processor with the same group took over (this one was fenced): {0}")]
    Fenced(KafkaError),
    #[error("cannot encode a feature update: {0}")]
    Encode(#[from] freshet_avro::EncodeError),
    #[error("Redis write failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the epoch was not checkpointed, so its transaction was aborted")]
    NotCheckpointed,
    #[error("an update of view `{0}`, which this processor does not compute")]
    UnknownView(String),
    #[error(transparent)]
    BadRedisUrl(#[from] freshet_store::BadStoreUrl),
}

#[derive(Serialize)]
struct UpdateRecord<'a> {
    view: &'a str,
    entity: &'a str,
    version: i64,
    event_time: i64,
    values: BTreeMap<&'a str, String>,
    windows: &'a [freshet_engine::ServedWindow],
}

pub struct KafkaSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    encoder: WireEncoder,
    output_topic: String,
    dead_letter_topic: String,
    /// Where each epoch's state changes go too, and the counter of their bytes.
    changelog: Option<(ChangelogTopic, prometheus::IntCounter)>,
}

fn is_fatal(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(|c| {
        matches!(
            c,
            rdkafka::types::RDKafkaErrorCode::Fenced
                | rdkafka::types::RDKafkaErrorCode::ProducerFenced
        )
    })
}

/// The compression of the epochs' records, unless the operator chose one
/// (`--kafka-option compression.type=...`): lz4. An epoch of a catch-up carries tens of
/// thousands of changelog records; compressed, the broker and the producer's own thread
/// handle a fraction of the bytes. Catching up, the machine spent 5% less CPU per event
/// and the processor ran 7% faster (`docs/processor.md`, Performance).
pub const DEFAULT_COMPRESSION: &str = "lz4";

fn with_compression(mut config: rdkafka::ClientConfig) -> rdkafka::ClientConfig {
    if config.get("compression.type").is_none() && config.get("compression.codec").is_none() {
        config.set("compression.type", DEFAULT_COMPRESSION);
    }
    config
}

impl KafkaSink {
    /// A transactional producer; `init_transactions` fences any earlier producer with the
    /// same transactional id and aborts its open transaction.
    pub fn new(
        brokers: &str,
        registry: &freshet_avro::Registry,
        transactional_id: &str,
        output_topic: &str,
        dead_letter_topic: &str,
        changelog: Option<(ChangelogTopic, prometheus::IntCounter)>,
    ) -> Result<Self, DeliveryError> {
        let producer: ThreadedProducer<DefaultProducerContext> =
            with_compression(freshet_kafka::client_config())
                .set("bootstrap.servers", brokers)
                .set("transactional.id", transactional_id)
                .set("enable.idempotence", "true")
                // Records go out as soon as they are handed over: the transaction waits for
                // them anyway, so lingering would only delay every epoch.
                .set("linger.ms", "0")
                // Successes need no report: a failed record fails the transaction's commit.
                .set("delivery.report.only.error", "true")
                .set("transaction.timeout.ms", "60000")
                .create()?;
        producer.init_transactions(KAFKA_TIMEOUT)?;
        Ok(Self {
            producer,
            encoder: WireEncoder::new(registry, output_topic, Some(FEATURE_UPDATE_SCHEMA)),
            output_topic: output_topic.to_string(),
            dead_letter_topic: dead_letter_topic.to_string(),
            changelog,
        })
    }

    /// Publishes the outbox and the state changes (to the changelog) and commits the input
    /// offsets in one transaction.
    pub async fn publish(
        &self,
        outbox: &Outbox,
        changes: &[PartitionChanges],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), DeliveryError> {
        self.publish_epochs(&[(outbox, changes)], group).await
    }

    /// Publishes several epochs in one transaction, in order: each one's state changes,
    /// updates and dead letters, then the input offsets the last one reached. Its outcome
    /// is the same as publishing them one after another, in fewer transactions: the
    /// publishing stage does this with the epochs that queued up while it committed.
    pub async fn publish_epochs(
        &self,
        epochs: &[(&Outbox, &[PartitionChanges])],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), DeliveryError> {
        let mut payloads = Vec::with_capacity(epochs.len());
        for (outbox, _) in epochs {
            payloads.push(self.encode(outbox).await?);
        }
        let parts: Vec<EpochRecords<'_>> = epochs
            .iter()
            .zip(&payloads)
            .map(|(&(outbox, changes), payloads)| EpochRecords {
                outbox,
                changes,
                payloads,
            })
            .collect();
        self.abort_unless_done(self.transaction(&parts, group, || true))
    }

    /// The outbox's updates as keyed records for the output topic: the superseded changes
    /// first, so each (view, entity)'s records are in the order of its changes.
    pub async fn encode(&self, outbox: &Outbox) -> Result<Vec<(String, Vec<u8>)>, DeliveryError> {
        let encoder = self.encoder.ready().await?;
        let mut payloads = Vec::with_capacity(outbox.superseded.len() + outbox.updates.len());
        for u in outbox.superseded.iter().chain(&outbox.updates) {
            payloads.push((format!("{}:{}", u.view, u.entity), encode(&encoder, u)?));
        }
        Ok(payloads)
    }

    /// Publishes the encoded outbox and commits the input offsets in one transaction, which
    /// commits only if `may_commit` (called once the records are on their way) says so;
    /// otherwise it is aborted and [`DeliveryError::NotCheckpointed`] returned.
    pub fn publish_encoded(
        &self,
        outbox: &Outbox,
        changes: &[PartitionChanges],
        group: &ConsumerGroupMetadata,
        payloads: &[(String, Vec<u8>)],
        may_commit: impl FnOnce() -> bool,
    ) -> Result<(), DeliveryError> {
        let parts = [EpochRecords {
            outbox,
            changes,
            payloads,
        }];
        self.abort_unless_done(self.transaction(&parts, group, may_commit))
    }

    /// A transaction that failed is aborted, unless the producer is fenced.
    fn abort_unless_done(&self, result: Result<(), DeliveryError>) -> Result<(), DeliveryError> {
        if let Err(e) = &result {
            if let DeliveryError::Kafka(k) = e {
                if is_fatal(k) {
                    return Err(DeliveryError::Fenced(k.clone()));
                }
            }
            let _ = self.producer.abort_transaction(KAFKA_TIMEOUT);
        }
        result
    }

    fn transaction(
        &self,
        epochs: &[EpochRecords<'_>],
        group: &ConsumerGroupMetadata,
        may_commit: impl FnOnce() -> bool,
    ) -> Result<(), DeliveryError> {
        self.producer.begin_transaction()?;
        let mut changelog_bytes = 0;
        // By (topic, partition): the offset the last epoch holding the partition reached.
        let mut ends: Vec<(&str, i32, i64)> = Vec::new();
        for epoch in epochs {
            if let Some((changelog, _)) = &self.changelog {
                for partition in epoch.changes {
                    changelog_bytes += changelog.records(partition, |record| {
                        let bytes = record.key.map_or(0, <[u8]>::len)
                            + record.payload.map_or(0, <[u8]>::len);
                        self.send(record).map(|()| bytes)
                    })?;
                }
            }
            for (key, payload) in epoch.payloads {
                self.send(
                    BaseRecord::to(&self.output_topic)
                        .key(key.as_bytes())
                        .payload(payload.as_slice()),
                )?;
            }
            for dl in &epoch.outbox.dead_letters {
                self.send(dead_letter_record(&self.dead_letter_topic, dl))?;
            }
            for (topic, partition, next) in &epoch.outbox.offsets {
                match ends
                    .iter_mut()
                    .find(|(t, p, _)| t == topic && p == partition)
                {
                    Some(end) => end.2 = *next,
                    None => ends.push((topic, *partition, *next)),
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, next) in ends {
            offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        self.producer
            .send_offsets_to_transaction(&offsets, group, KAFKA_TIMEOUT)?;
        if !may_commit() {
            return Err(DeliveryError::NotCheckpointed);
        }
        self.wait_delivered()?;
        self.producer.commit_transaction(KAFKA_TIMEOUT)?;
        if let Some((_, counter)) = &self.changelog {
            counter.inc_by(changelog_bytes as u64);
        }
        Ok(())
    }

    /// Waits until every record sent is acknowledged. `commit_transaction` would wait too,
    /// but rdkafka's wait polls in steps of 100 ms, which added 100 ms to every epoch.
    fn wait_delivered(&self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// One epoch's part of a transaction.
struct EpochRecords<'a> {
    outbox: &'a Outbox,
    changes: &'a [PartitionChanges],
    payloads: &'a [(String, Vec<u8>)],
}

fn encode(encoder: &ReadyEncoder<'_>, u: &OutboxUpdate) -> Result<Vec<u8>, DeliveryError> {
    let record = UpdateRecord {
        view: &u.view,
        entity: &u.entity,
        version: u.version as i64,
        event_time: u.event_time_ms,
        values: u
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_json_string()))
            .collect(),
        windows: &u.windows,
    };
    Ok(encoder.encode(&record)?)
}

fn dead_letter_record<'a>(topic: &'a str, dl: &'a DeadLetter) -> BaseRecord<'a, [u8], [u8]> {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "freshet.error",
            value: Some(dl.reason.as_bytes()),
        })
        .insert(Header {
            key: "freshet.source.topic",
            value: Some(dl.topic.as_bytes()),
        })
        .insert(Header {
            key: "freshet.source.partition",
            value: Some(dl.partition.to_string().as_bytes()),
        })
        .insert(Header {
            key: "freshet.source.offset",
            value: Some(dl.offset.to_string().as_bytes()),
        });
    let mut record = BaseRecord::to(topic).headers(headers);
    if let Some(key) = &dl.key {
        record = record.key(key.as_slice());
    }
    if let Some(payload) = &dl.payload {
        record = record.payload(payload.as_slice());
    }
    record
}

/// Whether the outbox's transaction committed: the group's committed offsets are at or past
/// the outbox's on every partition. Epochs are published in order and each moves at least
/// one partition on, so before an epoch's commit some partition's committed offset is
/// behind the epoch's.
pub fn transaction_committed(
    consumer: &BaseConsumer<impl ConsumerContext>,
    outbox: &Outbox,
) -> Result<bool, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, _) in &outbox.offsets {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, KAFKA_TIMEOUT)?;
    Ok(outbox.offsets.iter().all(|(topic, partition, next)| {
        committed
            .find_partition(topic, *partition)
            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= *next))
    }))
}

/// Versioned writes to Redis, pipelined.
/// A function rather than a closure, so the future holding the iterator is `Send` (a
/// closure's signature is not general enough over lifetimes for that).
fn update_and_storage(
    (update, storage): &(FeatureUpdate, Arc<ViewStorage>),
) -> (&FeatureUpdate, &ViewStorage) {
    (update, storage)
}

/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisSink {
    connection: freshet_store::StoreConnection,
    storage: Arc<HashMap<String, Arc<ViewStorage>>>,
}

impl RedisSink {
    pub async fn connect(
        url: &str,
        storage: HashMap<String, ViewStorage>,
    ) -> Result<Self, DeliveryError> {
        let connection = freshet_store::StoreTarget::parse(url, None)?
            .connect()
            .await?;
        Ok(Self {
            connection,
            storage: Arc::new(storage.into_iter().map(|(v, s)| (v, Arc::new(s))).collect()),
        })
    }

    /// Applies every update; a write whose version is not newer than the stored one is a
    /// no-op in Redis. Repeating this is harmless.
    pub async fn apply(
        &mut self,
        updates: &[OutboxUpdate],
        metrics: &ProcessorMetrics,
    ) -> Result<(), DeliveryError> {
        let started = Instant::now();
        let mut writes: Vec<(FeatureUpdate, Arc<ViewStorage>)> = Vec::with_capacity(updates.len());
        for u in updates {
            let storage = self
                .storage
                .get(&u.view)
                .ok_or_else(|| DeliveryError::UnknownView(u.view.clone()))?;
            writes.push((u.feature_update(), storage.clone()));
        }
        self.connection
            .write_updates(writes.iter().map(update_and_storage), Writer::Processor)
            .await?;
        metrics.redis_write.observe(started.elapsed().as_secs_f64());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for u in updates {
            metrics
                .freshness
                .observe(((now_ms - u.event_time_ms).max(0)) as f64 / 1_000.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_compressed_with_lz4_unless_the_operator_chose_a_compression() {
        let default = with_compression(rdkafka::ClientConfig::new());
        assert_eq!(default.get("compression.type"), Some("lz4"));
        for key in ["compression.type", "compression.codec"] {
            let mut chosen = rdkafka::ClientConfig::new();
            chosen.set(key, "zstd");
            let config = with_compression(chosen);
            assert_eq!(config.get(key), Some("zstd"), "{key}");
            if key == "compression.codec" {
                assert_eq!(config.get("compression.type"), None);
            }
        }
    }
}
