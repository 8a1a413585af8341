//! `freshet-flink-sink`: a Flink job's feature windows into Redis.
//!
//! `freshet compile --target flink-sql` makes a Flink job that writes one JSON row per
//! closed window to an upsert-kafka topic. This service reads that topic (every
//! partition, from the beginning, at each start: the topic is a table, compacted to the
//! latest row of each key) into a [`table::WindowTable`] and writes each changed
//! (view, entity) to Redis with the processor's versioned write, so the serving API
//! answers from Flink-computed features unchanged. See `docs/flink-sql.md`.
//!
//! Nothing is lost or moved back on a crash: a restart reads the topic again and writes
//! the same values under the same versions (`table.rs`), which Redis takes as no change.

pub mod metrics;
pub mod table;

use freshet_core::definitions::Definitions;
use freshet_core::store_layout::{FeatureUpdate, ViewStorage, Writer};
use freshet_store::{StoreConnection, StoreTarget};
use metrics::SinkMetrics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use table::{Applied, WindowTable};

/// The topic `freshet compile --target flink-sql` writes to, and this sink reads, unless
/// told otherwise.
pub const DEFAULT_TOPIC: &str = "flink_feature_windows";

/// Rows applied between two writes at most.
const BATCH_MAX: usize = 5_000;
/// How long a batch waits for more rows.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// How often a wait for rows checks whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// Wait before trying a failed Redis write again.
const RETRY_WAIT: Duration = Duration::from_millis(500);
/// Rows named one by one in the log when refused; later ones are only counted.
const NAMED_BAD_ROWS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Kafka at {brokers}: {context}: {source}")]
    Kafka {
        brokers: String,
        context: String,
        source: KafkaError,
    },
    #[error("topic `{topic}`: {source}")]
    Topic {
        topic: String,
        source: freshet_kafka::TopicError,
    },
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub brokers: String,
    /// The Flink job's output topic.
    pub topic: String,
    /// Partitions of the topic when the sink creates it (compacted).
    pub partitions: i32,
}

/// Reads the topic and applies it to Redis until `stop` is set. Redis outages are waited
/// out (writes are retried until they land); a broker that cannot be reached at start is
/// an error.
pub async fn run(
    defs: &Definitions,
    config: &SinkConfig,
    store: &StoreTarget,
    metrics: &SinkMetrics,
    stop: &AtomicBool,
) -> Result<(), SinkError> {
    let kafka = |context: &'static str| kafka_error(&config.brokers, context);
    freshet_kafka::ensure_compacted_topic(&config.brokers, &config.topic, config.partitions)
        .await
        .map_err(|source| SinkError::Topic {
            topic: config.topic.clone(),
            source,
        })?;
    let mut client = freshet_kafka::client_config();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "freshet-flink-sink")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: StreamConsumer = freshet_kafka::keep_fetching(&mut client)
        .create()
        .map_err(kafka("cannot create a consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), Duration::from_secs(10))
        .map_err(kafka("cannot read the topic's partitions"))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(&config.topic, partition, Offset::Beginning)
            .map_err(kafka("cannot assign the partitions"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("cannot assign the partitions"))?;
    tracing::info!(topic = %config.topic, partitions, "reading the Flink job's windows from the beginning");

    let Some(mut connection) = connect(store, stop).await else {
        return Ok(());
    };
    let mut table = WindowTable::new(defs);
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut refused = 0u64;
    loop {
        // A batch: the first row waits as long as it takes, the rest up to BATCH_WAIT.
        let mut changed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut rows = 0;
        let mut batch_end: Option<tokio::time::Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                write(&mut connection, &table, &changed, metrics, stop).await;
                return Ok(());
            }
            let wait = batch_end.map_or(STOP_CHECK, |end| {
                end.saturating_duration_since(tokio::time::Instant::now())
                    .min(STOP_CHECK)
            });
            let message = match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(message) => message,
                Err(_) if batch_end.is_some_and(|end| tokio::time::Instant::now() >= end) => break,
                Err(_) => continue,
            };
            match message {
                Ok(message) => {
                    rows += 1;
                    batch_end.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_WAIT);
                    at_end.remove(&message.partition());
                    let Some(payload) = message.payload() else {
                        // A deletion: window aggregations never retract a row.
                        metrics.rows.with_label_values(&["tombstone"]).inc();
                        continue;
                    };
                    match table.parse(payload) {
                        Ok(row) => {
                            let key = (row.view.clone(), row.entity.clone());
                            if table.apply(row) == Applied::Newer {
                                metrics.rows.with_label_values(&["applied"]).inc();
                                changed.insert(key);
                            } else {
                                metrics.rows.with_label_values(&["not_newer"]).inc();
                            }
                        }
                        Err(error) => {
                            metrics.rows.with_label_values(&["refused"]).inc();
                            refused += 1;
                            if refused <= NAMED_BAD_ROWS {
                                tracing::warn!(
                                    partition = message.partition(),
                                    offset = message.offset(),
                                    %error,
                                    "row refused"
                                );
                            } else if refused == NAMED_BAD_ROWS + 1 {
                                tracing::warn!("more rows refused; counted in freshet_flink_sink_rows_total{{outcome=\"refused\"}}");
                            }
                        }
                    }
                    if rows >= BATCH_MAX {
                        break;
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    at_end.insert(partition);
                    if at_end.len() as i32 == partitions && metrics.caught_up.get() == 0 {
                        write(&mut connection, &table, &changed, metrics, stop).await;
                        changed.clear();
                        metrics.caught_up.set(1);
                        tracing::info!(
                            entities = table.len(),
                            "caught up with the topic; applying new windows as they come"
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the topic failed; trying again");
                }
            }
        }
        write(&mut connection, &table, &changed, metrics, stop).await;
    }
}

fn kafka_error(brokers: &str, context: &'static str) -> impl FnOnce(KafkaError) -> SinkError {
    let brokers = brokers.to_string();
    move |source| SinkError::Kafka {
        brokers,
        context: context.to_string(),
        source,
    }
}

/// A connection to Redis, waiting for it as long as it takes (`None`: stopped first).
async fn connect(store: &StoreTarget, stop: &AtomicBool) -> Option<StoreConnection> {
    loop {
        match store.connect().await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                tracing::warn!(%error, "cannot reach Redis; trying again");
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                tokio::time::sleep(RETRY_WAIT).await;
            }
        }
    }
}

/// Writes the current values of `changed`, retrying until Redis takes them or `stop` is
/// set (values not written then are written by the next start, which reads the topic
/// again).
async fn write(
    connection: &mut StoreConnection,
    table: &WindowTable,
    changed: &BTreeSet<(String, String)>,
    metrics: &SinkMetrics,
    stop: &AtomicBool,
) {
    if changed.is_empty() {
        return;
    }
    let updates: Vec<_> = changed
        .iter()
        .filter_map(|(view, entity)| table.update(view, entity))
        .collect();
    // Pairs made before the loop: a closure over them held across the write's await
    // would not be `Send` for every lifetime.
    let pairs: Vec<(&FeatureUpdate, &ViewStorage)> = updates.iter().map(|(u, s)| (u, *s)).collect();
    loop {
        match connection
            .write_updates(pairs.clone(), Writer::Processor)
            .await
        {
            Ok(applied) => {
                metrics
                    .writes
                    .with_label_values(&["written"])
                    .inc_by(applied as u64);
                metrics
                    .writes
                    .with_label_values(&["kept_newer"])
                    .inc_by((updates.len() - applied) as u64);
                return;
            }
            Err(error) if stop.load(Ordering::Relaxed) => {
                tracing::error!(%error, values = updates.len(), "stopping with values not written to Redis; the next start writes them");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, values = updates.len(), "writing to Redis failed; trying again");
                tokio::time::sleep(RETRY_WAIT).await;
            }
        }
    }
}
