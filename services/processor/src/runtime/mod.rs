//! The processor's main loop: recover, then read epochs of records, checkpoint each epoch
//! and deliver it exactly once. The protocol and why each crash point is safe are in
//! `docs/processor.md`.

mod delivering;
mod epochs;
mod reading;
mod record_traces;

use delivering::*;
use epochs::*;
use reading::*;
use record_traces::*;

use crate::changelog::ChangelogTopic;
use crate::checkpoint::{
    Checkpoint, DeadLetter, Outbox, OutboxUpdate, PartitionChanges, ViewFingerprint,
};
use crate::delivery::{DeliveryError, KafkaSink, RedisSink};
use crate::input_queue::{InputHeaders, InputQueue};
use crate::metrics::ProcessorMetrics;
use anyhow::{bail, Context as _};
use freshet_avro::WireDecoder;
use freshet_core::load_dir;
use freshet_engine::event_decoder::{DecodeError, EventDecoder};
use freshet_engine::{CompiledView, Event, Outcome, PartitionEngine};
use opentelemetry::trace::{Span, SpanContext, SpanKind, TraceContextExt, Tracer};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with events behind the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatePolicy {
    /// Count them and drop them.
    Drop,
    /// Count them and send them to the dead-letter topic.
    DeadLetter,
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub features_dir: PathBuf,
    pub brokers: String,
    pub registry_url: String,
    pub redis_url: String,
    pub state_dir: PathBuf,
    /// Consumer group: one per processor deployment; its instances share the partitions.
    pub group_id: String,
    /// This instance, unique within the deployment and stable across its restarts: names
    /// its transactional id (`{group}-{instance}`) and, with `static_membership`, its
    /// `group.instance.id`.
    pub instance_id: String,
    /// Join the group as a static member (`group.instance.id`), so a restart within the
    /// session timeout gets its partitions back without a rebalance.
    pub static_membership: bool,
    /// Write each epoch's state changes to the changelog topic (`{group}-state`) and
    /// restore partitions from it.
    pub changelog: bool,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub late_events: LatePolicy,
    pub epoch_duration: Duration,
    pub epoch_max_records: usize,
    /// Partitions of topics the processor creates when they are missing.
    pub partitions: i32,
    /// Start a span per record continuing its `traceparent` (only worth it when spans are
    /// exported).
    pub trace_records: bool,
}

fn kafka_sink(
    config: &ProcessorConfig,
    transactional_id: &str,
    changelog: Option<(ChangelogTopic, prometheus::IntCounter)>,
) -> Result<KafkaSink, DeliveryError> {
    KafkaSink::new(
        &config.brokers,
        &config.registry_url,
        transactional_id,
        &config.output_topic,
        &config.dead_letter_topic,
        changelog,
    )
}

const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
const LAG_EVERY: Duration = Duration::from_secs(1);
const FETCH_WAIT_MAX_MS: &str = "5";

/// Runs the processor until `stop` is set; then finishes the epoch in progress, delivers
/// every checkpointed epoch and returns.
///
/// Two workers share the work: a processing thread reads records, aggregates them and
/// checkpoints each epoch; a delivery task publishes checkpointed epochs in order and
/// applies them to Redis. An epoch ends as soon as the delivery task is idle (group
/// commit), so under load epochs grow and their delivery cost is shared by more records,
/// and at low rates each record is delivered without waiting for a timer.
pub async fn run(
    config: ProcessorConfig,
    metrics: ProcessorMetrics,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let defs = load_dir(&config.features_dir)?;
    let views = Arc::new(CompiledView::compile_all(&defs));
    let view_names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    let view_index: HashMap<String, usize> = view_names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();

    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create the state folder {}",
            config.state_dir.display()
        )
    })?;
    let checkpoint = Arc::new(Checkpoint::open(&config.state_dir.join("rocksdb"))?);
    let fingerprints: Vec<ViewFingerprint> = views
        .iter()
        .map(|v| ViewFingerprint {
            view: v.name.clone(),
            current: freshet_engine::fingerprint::fingerprint(v),
            legacy: freshet_engine::fingerprint::legacy(v),
        })
        .collect();
    for view in checkpoint.reconcile_views(&fingerprints)? {
        tracing::warn!(
            view,
            "the view's definition changed; its state starts empty (backfill to recompute history)"
        );
    }

    let mut sources: HashMap<String, EventDecoder> = HashMap::new();
    for source in &defs.sources {
        if views.iter().any(|v| v.topic == source.topic) {
            sources.insert(
                source.topic.clone(),
                EventDecoder::new(
                    WireDecoder::new(&config.registry_url, source.schema.avro.clone()),
                    &source.entity_key_field,
                    &source.event_time_field,
                ),
            );
        }
    }
    for topic in sources.keys() {
        freshet_kafka::ensure_topic(&config.brokers, topic, config.partitions).await?;
        // A series per source from the start, so its rates read 0 rather than nothing.
        metrics.late_events.with_label_values(&[topic]);
        metrics.events.with_label_values(&[topic]);
    }
    freshet_kafka::ensure_topic(&config.brokers, &config.output_topic, config.partitions).await?;
    freshet_kafka::ensure_topic(&config.brokers, &config.dead_letter_topic, 1).await?;

    // Every partition of every source, each with a slot for its engine while this instance
    // owns it.
    let mut slots: Vec<PartitionSlot> = Vec::new();
    let mut topics: Vec<String> = sources.keys().cloned().collect();
    topics.sort();
    let metadata_consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .context("cannot create a Kafka client")?;
    for topic in &topics {
        let metadata = metadata_consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read the partitions of {topic}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            bail!("topic {topic} has no partitions");
        }
        for partition in 0..partitions as i32 {
            slots.push(PartitionSlot {
                topic: topic.clone(),
                partition,
                engine: None,
                generation: 0,
                resumed_at: 0,
                unconfirmed_local: None,
            });
        }
    }
    let changelog = if config.changelog {
        let widest = slots.iter().map(|s| s.partition + 1).max().unwrap_or(1);
        let topic = crate::changelog::topic_name(&config.group_id);
        freshet_kafka::ensure_compacted_topic(&config.brokers, &topic, widest).await?;
        let metadata = metadata_consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read the partitions of {topic}"))?;
        let has = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        if has < widest {
            bail!(
                "the changelog topic {topic} has {has} partitions, fewer than the {widest} of the \
                 widest source: state of source partition p lives in changelog partition p. \
                 Add partitions to it (kafka-topics --alter --partitions {widest})"
            );
        }
        Some(ChangelogTopic {
            topic,
            views: fingerprints
                .iter()
                .map(|f| {
                    (
                        f.view.clone(),
                        crate::changelog::short_fingerprint(&f.current),
                    )
                })
                .collect(),
        })
    } else {
        None
    };
    drop(metadata_consumer);

    let ttl_ms: HashMap<String, i64> = views.iter().map(|v| (v.name.clone(), v.ttl_ms)).collect();
    let mut redis = connect_redis(&config.redis_url, ttl_ms, &stop).await?;

    // Epochs checkpointed by the last run but maybe not in Redis: their values are the
    // values of their versions whatever became of their transaction (the engine is
    // deterministic), so they go to Redis now, which ignores what it already has. Their
    // Kafka side is not repeated: the group's offsets say where each partition resumes,
    // and whoever owns it now publishes whatever is not committed.
    let mut epoch = 0;
    for outbox in checkpoint.outboxes()? {
        epoch = outbox.epoch + 1;
        tracing::info!(
            epoch = outbox.epoch,
            updates = outbox.updates.len(),
            "writing an epoch left by the last run to Redis"
        );
        write_redis(&mut redis, &outbox, &metrics, &stop).await;
        checkpoint.clear_outbox(outbox.epoch)?;
        metrics.epochs.with_label_values(&["recovered"]).inc();
    }

    let (handover, records_in) = std::sync::mpsc::sync_channel::<Handed>(HANDOVER_DEPTH);
    let generations = Arc::new(AtomicU64::new(0));
    let context = InputContext {
        rebalance: Some(Rebalancing {
            slot_of: slots
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.topic.clone(), s.partition), i))
                .collect(),
            handover: handover.clone(),
            forwarder: std::sync::OnceLock::new(),
            generations: generations.clone(),
            changes: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            metrics: metrics.clone(),
        }),
        ..InputContext::default()
    };
    let mut consumer_config =
        freshet_kafka::group_consumer_config(&config.brokers, &config.group_id);
    consumer_config
        .set(
            "client.id",
            format!("freshet-processor-{}", config.instance_id),
        )
        // Partitions move one by one between instances, the others keep being processed.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Taking a partition over restores its state first, and the reading thread waits
        // for that when the processing thread's queue is full: allow a minute (the group
        // waits this long for members to rejoin a rebalance, too).
        .set("max.poll.interval.ms", "60000")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", LAG_EVERY.as_millis().to_string())
        // A broker may hold a fetch for this long even when records are waiting (tansu
        // does: 500 ms, librdkafka's default, put 130 ms into median freshness).
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        // Every partition is assigned at the group's offset. If the broker has no
        // record there (the topic was recreated or truncated), resetting to either end
        // would skip input or mix two topics' offsets in one state: stop instead.
        .set("auto.offset.reset", "error");
    if config.static_membership {
        consumer_config.set("group.instance.id", &config.instance_id);
    }
    freshet_kafka::keep_fetching(&mut consumer_config);
    let consumer: InputConsumer = consumer_config
        .create_with_context(context)
        .context("cannot create the Kafka consumer")?;
    let input = InputQueue::new(consumer);
    let context = input.consumer().context().clone();
    if let Some(rebalancing) = &context.rebalance {
        let _ = rebalancing.forwarder.set(input.forwarder());
    }
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    input
        .consumer()
        .subscribe(&topic_names)
        .context("cannot subscribe to the source topics")?;

    let transactional_id = format!("{}-{}", config.group_id, config.instance_id);
    let kafka = kafka_sink(
        &config,
        &transactional_id,
        changelog
            .clone()
            .map(|c| (c, metrics.changelog_bytes.clone())),
    )?;
    let tracer = opentelemetry::global::tracer("freshet-processor");
    let delivery = Delivery {
        kafka,
        redis,
        input: context.clone(),
        transactional_id,
        changelog: changelog.clone(),
        checkpoint: checkpoint.clone(),
        view_names,
        metrics: metrics.clone(),
        config: config.clone(),
        stop: stop.clone(),
        tracer: opentelemetry::global::tracer("freshet-processor"),
    };
    tracing::info!(
        instance = config.instance_id.as_str(),
        group = config.group_id.as_str(),
        topics = topics.join(",").as_str(),
        partitions = slots.len(),
        views = views.len(),
        changelog = changelog.as_ref().map_or("off", |c| c.topic.as_str()),
        "joining the group"
    );

    let in_flight = Arc::new(AtomicUsize::new(0));
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let stop_processing = stop.clone();
    let reader = Reader {
        out_of_range: input_gone(&config.state_dir, "the group's committed offset"),
        input,
        inputs: sources
            .into_iter()
            .map(|(topic, decoder)| {
                let mut engine_of = Vec::new();
                for (i, slot) in slots.iter().enumerate().filter(|(_, s)| s.topic == topic) {
                    let at = usize::try_from(slot.partition).expect("partitions are not negative");
                    if engine_of.len() <= at {
                        engine_of.resize(at + 1, None);
                    }
                    engine_of[at] = Some(i);
                }
                TopicInput {
                    topic,
                    decoder,
                    engine_of,
                }
            })
            .collect(),
        trace_records: config.trace_records,
        keep_late: config.late_events == LatePolicy::DeadLetter,
        late_checks: slots
            .iter()
            .map(|_| LateCheck {
                clock: None,
                delay: 0,
                known: false,
            })
            .collect(),
        generations: vec![0; slots.len()],
        tracer,
        runtime: tokio::runtime::Handle::current(),
        registry_waits: slots.iter().map(|_| None).collect(),
        registry_unavailable: metrics.registry_unavailable.clone(),
    };
    let processing = Processing {
        slots,
        input: context.clone(),
        restorer: Restorer {
            checkpoint,
            views,
            view_index,
            changelog,
            fingerprints: fingerprints
                .iter()
                .map(|f| {
                    (
                        f.view.clone(),
                        crate::changelog::short_fingerprint(&f.current),
                    )
                })
                .collect(),
        },
        metrics,
        config,
        stop,
    };
    let deliverer_in_flight = in_flight.clone();
    let processing = tokio::task::spawn_blocking(move || {
        processing.run(reader, (handover, records_in), epoch, sender, in_flight)
    });
    // Delivery runs here until the processing thread drops its sender (it delivers what is
    // queued first) or until it fails; then the processing thread stops after its epoch.
    let delivered = delivery.run(receiver, deliverer_in_flight).await;
    if delivered.is_err() {
        stop_processing.store(true, Ordering::Relaxed);
    }
    let processed = processing.await.context("the processing thread failed")?;
    // A delivery error is the cause of any error of the processing.
    delivered?;
    let epoch = processed?;
    tracing::info!(epoch, "stopped after delivering the last epoch");
    Ok(())
}

/// The input consumer's context: keeps each partition's high watermark as librdkafka's
/// statistics report it, which come from fetch responses (asking the broker with
/// ListOffsets instead does not work on tansu, which answers 1 for any partition), and
/// handles the group's rebalances ([`Rebalancing`]).
#[derive(Default)]
pub struct InputContext {
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// The consumer's group metadata as of the last rebalance, for the transactions.
    group: Mutex<Option<Arc<ConsumerGroupMetadata>>>,
    rebalance: Option<Rebalancing>,
}

/// What the reading thread hands the processing thread, in order.
enum Handed {
    Records(Vec<ReadRecord>),
    /// The group assigned these partitions (slot, the group's committed offset), under
    /// `generation`: the reading thread tags their records with it from now on.
    Assigned {
        partitions: Vec<(usize, Option<i64>)>,
        generation: u64,
    },
    /// The group takes these partitions away: the epoch in progress ends, and once every
    /// epoch is delivered their engines go and `done` is told.
    Revoked {
        slots: Vec<usize>,
        done: std::sync::mpsc::Sender<()>,
    },
}

/// A change of the assignment for the reading thread to apply.
enum SlotChange {
    /// Assigned under a generation.
    Assigned {
        slot: usize,
        generation: u64,
    },
    Revoked {
        slot: usize,
    },
    /// The processing thread restored the partition assigned under `generation`: its
    /// engine's clock and watermark delay, for the reading thread's lateness test.
    Restored {
        slot: usize,
        generation: u64,
        clock: Option<i64>,
        delay: i64,
    },
}

/// The group's rebalances, handled in librdkafka's rebalance callback (on the reading
/// thread, inside its poll): an assignment is forwarded to the input queue at the group's
/// committed offsets and announced to the processing thread, which restores the
/// partitions' state before it takes their records; a revocation waits until the
/// processing thread has delivered every epoch that holds the partitions' records, so two
/// instances never both write a partition's epoch.
pub struct Rebalancing {
    slot_of: HashMap<(String, i32), usize>,
    handover: std::sync::mpsc::SyncSender<Handed>,
    forwarder: std::sync::OnceLock<crate::input_queue::PartitionForwarder>,
    generations: Arc<AtomicU64>,
    /// For the reading thread, applied after each poll.
    changes: Mutex<Vec<SlotChange>>,
    /// Why the consumer cannot go on (the group's offsets could not be read).
    fatal: Mutex<Option<String>>,
    metrics: ProcessorMetrics,
}

impl ClientContext for InputContext {
    fn stats(&self, statistics: Statistics) {
        let mut marks = self.high_watermarks.lock().expect("watermarks");
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    marks.insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for InputContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let Some(rebalancing) = &self.rebalance else {
            return;
        };
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = rebalancing.assign(consumer, partitions);
                let done = if cooperative {
                    consumer.incremental_assign(&assigned)
                } else {
                    consumer.assign(&assigned)
                };
                done.map_err(|e| format!("cannot take the assigned partitions: {e}"))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                *self.group.lock().expect("group") = consumer.group_metadata().map(Arc::new);
                rebalancing.revoke(partitions);
                let done = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                done.map_err(|e| format!("cannot give the revoked partitions up: {e}"))
            }
            other => {
                tracing::warn!(error = ?other, "the group's rebalance failed");
                let _ = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                Ok(())
            }
        };
        *self.group.lock().expect("group") = consumer.group_metadata().map(Arc::new);
        if let Err(e) = result {
            rebalancing.fail(e);
        }
    }
}

impl Rebalancing {
    /// Announces newly assigned partitions to the processing thread and returns them at the
    /// group's committed offsets, forwarded to the input queue, ready to assign.
    fn assign(
        &self,
        consumer: &BaseConsumer<InputContext>,
        partitions: &TopicPartitionList,
    ) -> TopicPartitionList {
        let mut committed = None;
        for attempt in 1..=5 {
            match consumer.committed_offsets(partitions.clone(), Duration::from_secs(10)) {
                Ok(list) => {
                    committed = Some(list);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot read the group's committed offsets; retrying")
                }
            }
        }
        let Some(committed) = committed else {
            self.fail(
                "cannot read the group's committed offsets of the assigned partitions".into(),
            );
            return TopicPartitionList::new();
        };
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let mut assigned = TopicPartitionList::new();
        let mut announced = Vec::new();
        let mut changes = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(&slot) = self.slot_of.get(&(topic.to_string(), partition)) else {
                tracing::warn!(topic, partition, "assigned a partition the processor did not find at start (added since?); it is not read until a restart");
                continue;
            };
            let offset = match element.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if assigned
                .add_partition_offset(topic, partition, Offset::Offset(offset.unwrap_or(0)))
                .is_err()
            {
                continue;
            }
            announced.push((slot, offset));
            changes.push(SlotChange::Assigned { slot, generation });
            self.metrics
                .partition_assigned
                .with_label_values(&[topic, &partition.to_string()])
                .set(1);
        }
        if announced.is_empty() {
            return assigned;
        }
        if let Some(forwarder) = self.forwarder.get() {
            if let Err(e) = forwarder.forward(consumer, &assigned) {
                self.fail(e.to_string());
                return TopicPartitionList::new();
            }
        }
        let described = describe(&assigned);
        tracing::info!(partitions = described.as_str(), "assigned by the group");
        self.metrics
            .rebalances
            .with_label_values(&["assigned"])
            .inc();
        self.metrics.assigned_partitions.add(announced.len() as i64);
        self.changes.lock().expect("changes").extend(changes);
        // The processing thread may have stopped; then nothing is read any more either.
        let _ = self.handover.send(Handed::Assigned {
            partitions: announced,
            generation,
        });
        assigned
    }

    /// Waits until the processing thread has delivered everything of the revoked
    /// partitions (see [`Handed::Revoked`]).
    fn revoke(&self, partitions: &TopicPartitionList) {
        let mut slots = Vec::new();
        for element in partitions.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            if let Some(&slot) = self.slot_of.get(&(topic.to_string(), partition)) {
                slots.push(slot);
                self.metrics
                    .partition_assigned
                    .with_label_values(&[topic, &partition.to_string()])
                    .set(0);
            }
        }
        if slots.is_empty() {
            return;
        }
        let described = describe(partitions);
        tracing::info!(
            partitions = described.as_str(),
            "revoked by the group; delivering what was processed of them"
        );
        let started = Instant::now();
        let (done, delivered) = std::sync::mpsc::channel();
        if self
            .handover
            .send(Handed::Revoked {
                slots: slots.clone(),
                done,
            })
            .is_ok()
        {
            // An error: the processing thread stopped (and with it, delivery).
            let _ = delivered.recv();
        }
        tracing::info!(
            partitions = described.as_str(),
            waited_ms = started.elapsed().as_millis() as u64,
            "gave the revoked partitions up"
        );
        self.metrics
            .rebalances
            .with_label_values(&["revoked"])
            .inc();
        self.metrics.assigned_partitions.sub(slots.len() as i64);
        self.changes
            .lock()
            .expect("changes")
            .extend(slots.into_iter().map(|slot| SlotChange::Revoked { slot }));
    }

    fn fail(&self, reason: String) {
        tracing::error!(reason = reason.as_str(), "the consumer cannot go on");
        self.fatal.lock().expect("fatal").get_or_insert(reason);
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{} at {o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl InputContext {
    fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .lock()
            .expect("watermarks")
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// The group metadata for a transaction's offsets: the generation of the last
    /// rebalance, so a fenced (zombie) instance's commit fails (KIP-447).
    pub(super) fn group_metadata(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.group.lock().expect("group").clone()
    }

    /// The assignment changes since the last call, for the reading thread.
    fn take_changes(&self) -> Vec<SlotChange> {
        self.rebalance
            .as_ref()
            .map(|r| std::mem::take(&mut *r.changes.lock().expect("changes")))
            .unwrap_or_default()
    }

    /// A change for the reading thread from the processing thread.
    fn push_change(&self, change: SlotChange) {
        if let Some(r) = &self.rebalance {
            r.changes.lock().expect("changes").push(change);
        }
    }

    /// Why the consumer cannot go on, if it cannot.
    pub(super) fn fatal(&self) -> Option<String> {
        self.rebalance
            .as_ref()
            .and_then(|r| r.fatal.lock().expect("fatal").clone())
    }
}

pub type InputConsumer = BaseConsumer<InputContext>;

/// The error for a checkpoint whose offsets the input does not have (`where_` says which).
fn input_gone(state_dir: &std::path::Path, where_: &str) -> String {
    format!(
        "the input has no record at the offset the checkpoint resumes from ({where_}): the \
         topic was recreated or truncated since the checkpoint was written. Versions are input \
         offsets, so start over: stop the processor, delete the views' keys in Redis and remove \
         the state folder {}",
        state_dir.display()
    )
}

/// An input partition, with its engine while this instance owns it.
pub(super) struct PartitionSlot {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) engine: Option<PartitionEngine>,
    /// The assignment the engine belongs to: records read under another are not its.
    pub(super) generation: u64,
    /// Where the engine resumed, to tell a topic recreated since.
    pub(super) resumed_at: i64,
    /// Where the local checkpoint held the partition when the group had no offset for it
    /// (the engine then starts over at 0): a topic that ends before it was recreated, or
    /// the broker replaced, since the checkpoint was written.
    pub(super) unconfirmed_local: Option<i64>,
}

/// A partition whose input ends before the offset its engine resumed from and that has not
/// moved since (a broker that does not report the offset as out of range, like tansu, just
/// answers its fetches with nothing): `(index, high watermark)`. Only a partition that has
/// not moved is judged: a record processed since the start shows the input goes on there,
/// and the high watermark in the statistics may be older than that record.
fn resumed_beyond_input(
    input: &InputContext,
    slots: &mut [PartitionSlot],
) -> Option<(usize, i64, i64)> {
    slots.iter_mut().enumerate().find_map(|(i, slot)| {
        let engine = slot.engine.as_ref()?;
        if slot
            .unconfirmed_local
            .is_some_and(|local| engine.next_offset() >= local)
        {
            // The input reaches the local checkpoint's offset: it was not recreated.
            slot.unconfirmed_local = None;
        }
        let high = input.high_watermark(&slot.topic, slot.partition)?;
        if let Some(local) = slot.unconfirmed_local.filter(|local| high < *local) {
            return Some((i, high, local));
        }
        (engine.next_offset() == slot.resumed_at && high < slot.resumed_at).then_some((
            i,
            high,
            slot.resumed_at,
        ))
    })
}

fn record_lag(input: &InputContext, slots: &[PartitionSlot], metrics: &ProcessorMetrics) {
    for slot in slots {
        let Some(engine) = &slot.engine else { continue };
        if let Some(high) = input.high_watermark(&slot.topic, slot.partition) {
            metrics
                .consumer_lag
                .with_label_values(&[&slot.topic, &slot.partition.to_string()])
                .set((high - engine.next_offset()).max(0));
        }
    }
}

/// Brings a partition's engine to the group's committed offset when the partition is
/// assigned: from the local checkpoint when it holds the partition at that offset, else
/// from the changelog.
pub(super) struct Restorer {
    pub(super) checkpoint: Arc<Checkpoint>,
    pub(super) views: Arc<Vec<CompiledView>>,
    pub(super) view_index: HashMap<String, usize>,
    pub(super) changelog: Option<ChangelogTopic>,
    /// By view name: the short fingerprint its changelog records carry.
    pub(super) fingerprints: HashMap<String, String>,
}

/// Logs a restore's progress every few seconds and counts its records.
struct ProgressLog<'a> {
    partition: String,
    started: Instant,
    last: Instant,
    read: u64,
    metrics: &'a ProcessorMetrics,
}

impl crate::changelog::RestoreProgress for ProgressLog<'_> {
    fn read(&mut self, records: u64) {
        self.read += records;
        self.metrics.restore_records.inc_by(records);
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(
                partition = self.partition.as_str(),
                records = self.read,
                per_second = (self.read as f64 / seconds) as u64,
                "restoring from the changelog"
            );
        }
    }
}

impl Restorer {
    /// The engine of `(topic, partition)` at `committed` (the group's offset; none: the
    /// partition has never been committed, so it starts empty at 0). Returns where it came
    /// from too.
    pub(super) fn restore(
        &self,
        config: &ProcessorConfig,
        metrics: &ProcessorMetrics,
        (topic, partition): (&str, i32),
        committed: Option<i64>,
    ) -> anyhow::Result<(PartitionEngine, &'static str, Option<i64>)> {
        let at = committed.unwrap_or(0);
        let local = self.checkpoint.partition_offset(topic, partition)?;
        let unconfirmed_local = local.filter(|l| committed.is_none() && *l > 0);
        let from = if local == Some(at) {
            "local"
        } else if at == 0 {
            self.checkpoint.write_restored(
                (topic, partition),
                true,
                std::iter::empty(),
                0,
                None,
            )?;
            "empty"
        } else if let Some(changelog) = &self.changelog {
            // The local state is a prefix of the committed one (this instance owned the
            // partition before another did): only what came after it is needed.
            let since = local.filter(|l| *l < at);
            let started = Instant::now();
            let mut progress = ProgressLog {
                partition: format!("{topic}/{partition}"),
                started,
                last: started,
                read: 0,
                metrics,
            };
            let restored = crate::changelog::read_partition(
                &config.brokers,
                &changelog.topic,
                (topic, partition),
                (since, at),
                &self.fingerprints,
                &mut progress,
            )?;
            metrics
                .restore_seconds
                .inc_by(restored.elapsed.as_secs_f64());
            if !restored.reaches_committed {
                bail!(
                    "the changelog {} does not hold {topic}/{partition} at the group's offset {at} \
                     (it was written by a processor without a changelog, or the topic was deleted), \
                     and the local state is at {}: the state cannot be restored. Start the \
                     deployment over with a new --group-id (and backfill), or run the instance \
                     that holds the state",
                    changelog.topic,
                    local.map_or("nothing".to_string(), |l| l.to_string()),
                );
            }
            tracing::info!(
                partition = format!("{topic}/{partition}").as_str(),
                at,
                since,
                records_read = restored.read,
                keys = restored.records.len(),
                seconds = restored.elapsed.as_secs_f64(),
                "restored from the changelog"
            );
            let clock = restored.clock(topic, partition);
            self.checkpoint.write_restored(
                (topic, partition),
                since.is_none(),
                restored.pieces(),
                at,
                clock,
            )?;
            "changelog"
        } else {
            bail!(
                "the local state holds {topic}/{partition} at {}, not at the group's offset {at}, \
                 and the changelog is off (--changelog off): the state cannot be restored. Turn \
                 the changelog on, or start over with a new --group-id",
                local.map_or("nothing".to_string(), |l| l.to_string()),
            );
        };
        self.checkpoint.flush()?;
        let saved = self
            .checkpoint
            .load_partition(topic, partition, &self.view_index)?;
        let mut engine = PartitionEngine::restore(
            self.views.clone(),
            topic,
            saved.next_offset.unwrap_or(0),
            saved.clock,
            saved.entities,
        )?;
        engine.report_unwritten_deletions(self.changelog.is_some());
        Ok((engine, from, unconfirmed_local))
    }
}

async fn connect_redis(
    url: &str,
    ttl_ms: HashMap<String, i64>,
    stop: &AtomicBool,
) -> anyhow::Result<RedisSink> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match RedisSink::connect(url, ttl_ms.clone()).await {
            Ok(sink) => return Ok(sink),
            Err(e) if !stop.load(Ordering::Relaxed) => {
                tracing::warn!(error = %e, url, "Redis is not reachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(e) => bail!("Redis at {url} is not reachable: {e}"),
        }
    }
}
