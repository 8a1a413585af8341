//! Kafka plumbing every Freshet service needs the same way.
//!
//! - [`ensure_topic`]: creates a topic when it does not exist. Brokers such as tansu do not
//!   create topics on first use, and a produce to a missing topic only times out, so
//!   services create what they write to at start-up, with a clear error if they cannot.
//! - [`group_consumer_config`]: consumer-group settings that join a group in seconds
//!   rather than the ~25 s librdkafka's defaults take against tansu.
//! - [`keep_fetching`]: for consumers that work through a backlog: no one-second pause in
//!   fetching each time their read-ahead queue fills.
//! - [`partition_for_key`]: the partition librdkafka's default partitioner puts a keyed
//!   record in, so events read from a file can be split the way the topic splits them.
//! - [`input_queue`]: a consumer's partitions read from librdkafka a batch at a time (the
//!   processor's input and backfill's).

pub mod input_queue;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach the Kafka brokers at {brokers}: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("cannot create topic {topic} on {brokers}: {reason}")]
    Create {
        topic: String,
        brokers: String,
        reason: String,
    },
}

/// Creates `topic` with `partitions` partitions unless it exists. Returns whether it was
/// created.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<bool, TopicError> {
    create_topic(brokers, topic, partitions, &[]).await
}

/// [`ensure_topic`] for a compacted topic (`cleanup.policy=compact`: the last record of
/// each key is kept, a key whose last record has no value goes). A broker that refuses
/// the setting (tansu keeps every record anyway) gets a plain topic, with a warning.
pub async fn ensure_compacted_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<bool, TopicError> {
    match create_topic(brokers, topic, partitions, &[("cleanup.policy", "compact")]).await {
        Err(TopicError::Create { reason, .. }) => {
            tracing::warn!(
                topic,
                reason,
                "the broker refused a compacted topic; creating a plain one"
            );
            create_topic(brokers, topic, partitions, &[]).await
        }
        other => other,
    }
}

/// librdkafka properties every Kafka client of this process starts from: what the
/// operator gave (`--kafka-option KEY=VALUE`, `FRESHET_KAFKA_*`), for SASL, TLS and any
/// other setting a managed Kafka needs. Set once at start by [`set_client_options`].
static CLIENT_OPTIONS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Why the operator's Kafka settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientOptionsError {
    /// librdkafka's own message, which names the property.
    #[error("Kafka setting refused by librdkafka: {0}")]
    Refused(String),
    #[error("the Kafka settings were already set in this process")]
    AlreadySet,
}

/// Makes `options` (librdkafka property names and values) the start of every client's
/// configuration ([`client_config`]); properties the code sets itself for a client
/// (such as its group or isolation level) are set after them. Checked here by librdkafka,
/// so a misspelt property or a bad value fails at start with its message.
pub fn set_client_options(options: Vec<(String, String)>) -> Result<(), ClientOptionsError> {
    let mut probe = ClientConfig::new();
    for (key, value) in &options {
        probe.set(key, value);
    }
    probe
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(|e| ClientOptionsError::Refused(refusal(&e)))?;
    CLIENT_OPTIONS
        .set(options)
        .map_err(|_| ClientOptionsError::AlreadySet)
}

/// librdkafka's reason, without the refused value (it may be a password).
fn refusal(error: &rdkafka::error::KafkaError) -> String {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, description, key, _) => {
            format!("{description} (property `{key}`)")
        }
        other => other.to_string(),
    }
}

/// A client configuration holding the operator's settings ([`set_client_options`]);
/// every Kafka client of Freshet starts from it.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in CLIENT_OPTIONS.get().map(Vec::as_slice).unwrap_or_default() {
        config.set(key, value);
    }
    config
}

async fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    config: &[(&str, &str)],
) -> Result<bool, TopicError> {
    let admin: AdminClient<DefaultClientContext> = client_config()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| TopicError::Unreachable {
            brokers: brokers.to_string(),
            reason: e.to_string(),
        })?;
    // Create and accept "already exists" rather than look first: a metadata request from an
    // admin or producer client may itself auto-create the topic, with the broker's default
    // partition count instead of ours (tansu does).
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (name, value) in config {
        new = new.set(name, value);
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| TopicError::Create {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((_, code)) => {
                return Err(TopicError::Create {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(true)
}

/// Settings for a consumer in group `group`: short session and heartbeat timeouts so a
/// group forms in about 3 s, manual offset commits.
pub fn group_consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = client_config();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "10000");
    config
}

/// How long librdkafka waits before fetching again for a partition whose read-ahead queue
/// was full (over `queued.min.messages` or `queued.max.messages.kbytes`).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Settings for a consumer that works through a backlog more slowly than the broker can
/// send it (the processor catching up, a backfill). librdkafka reads ahead until its queue
/// is full, and then by default waits `fetch.queue.backoff.ms` = 1000 ms before fetching
/// again: long enough for the application to empty the queue and then sit idle. The
/// processor spent 44% of a catch-up waiting for input that way, at 0.12 of a bare
/// consumer's rate; with [`FETCH_QUEUE_BACKOFF_MS`] it waited 8%, at 0.22. The queue's
/// memory stays bounded by the same thresholds.
pub fn keep_fetching(config: &mut ClientConfig) -> &mut ClientConfig {
    config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
}

/// The partition librdkafka's default partitioner (`consistent_random`) chooses for a
/// record with a non-empty `key` in a topic of `partitions` partitions: CRC-32 of the key
/// modulo the partition count. Backfill from a file uses it to give every event the
/// partition (and so the watermark) it has in the live topic.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (crc32fast::hash(key) % partitions as u32) as i32
}

/// A consumer context that does not report reaching a partition's end as an error: readers
/// of history (backfill, training sets) ask for those events (`enable.partition.eof`) to
/// know when they are done, since tansu cannot tell a partition's end otherwise.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}
