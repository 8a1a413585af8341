//! The processor's main loop: recover, then read epochs of records, checkpoint each epoch
//! and deliver it exactly once. The protocol and why each crash point is safe are in
//! `docs/processor.md`.

mod delivering;
mod epochs;
mod reading;
mod rebalancing;
mod record_traces;
mod restoring;

use delivering::*;
use epochs::*;
use reading::*;
use rebalancing::*;
use record_traces::*;
use restoring::*;

use crate::changelog::ChangelogTopic;
use crate::checkpoint::{
    Checkpoint, DeadLetter, Outbox, OutboxUpdate, PartitionChanges, ViewFingerprint,
};
use crate::delivery::{DeliveryError, KafkaSink, RedisSink};
use crate::metrics::ProcessorMetrics;
use anyhow::{bail, Context as _};
use freshet_avro::WireDecoder;
use freshet_core::load_dir;
use freshet_core::store_layout::ViewStorage;
use freshet_engine::event_decoder::{DecodeError, EventDecoder};
use freshet_engine::{CompiledView, Event, Outcome, PartitionEngine};
use freshet_kafka::input_queue::{InputHeaders, InputQueue};
use opentelemetry::trace::{Span, SpanContext, SpanKind, TraceContextExt, Tracer};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
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

/// Which changes of feature values the output topic receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishedChanges {
    /// The values each epoch leaves: one update per (view, entity) it changed, as Redis
    /// receives them.
    Epoch,
    /// Every change: one update per (view, entity) for each event time its partition's
    /// clock reached while the values changed, so the topic holds the values as of every
    /// moment of event time (what training sets recompute from the events). Redis still
    /// receives each epoch's last values.
    All,
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub features_dir: PathBuf,
    pub brokers: String,
    pub registry: freshet_avro::Registry,
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
    /// Which changes the output topic receives.
    pub published_changes: PublishedChanges,
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
        &config.registry,
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
    // Per source topic with an `idle_timeout`: how long its partitions may be quiet.
    let mut idle_timeouts: HashMap<String, Duration> = HashMap::new();
    for source in &defs.sources {
        if views.iter().any(|v| v.topic == source.topic) {
            if let Some(timeout) = source.idle_timeout {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(0);
                idle_timeouts.insert(source.topic.clone(), Duration::from_millis(ms));
                metrics.idle_advances.with_label_values(&[&source.topic]);
            }
            sources.insert(
                source.topic.clone(),
                EventDecoder::new(
                    WireDecoder::new(&config.registry, source.schema.avro.clone()),
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
    let metadata_consumer: BaseConsumer = freshet_kafka::client_config()
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

    let storage: HashMap<String, ViewStorage> = views
        .iter()
        .map(|v| (v.name.clone(), v.storage()))
        .collect();
    let mut redis = connect_redis(&config.redis_url, storage, &stop).await?;

    // Epochs an earlier release checkpointed but maybe did not write to Redis (it wrote
    // Redis beside the checkpoint and kept each epoch's outbox until delivered; this one
    // checkpoints an epoch once it is in Redis and keeps no outbox): their values are the
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
            "writing an epoch an earlier release left to Redis"
        );
        write_redis(&mut redis, &outbox, &metrics, &stop).await;
        checkpoint.clear_outbox(outbox.epoch)?;
        metrics.epochs.with_label_values(&["recovered"]).inc();
    }

    let (handover, records_in) = std::sync::mpsc::sync_channel::<Handed>(HANDOVER_DEPTH);
    let context = InputContext::with_rebalancing(Rebalancing {
        slot_of: slots
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.topic.clone(), s.partition), i))
            .collect(),
        handover: handover.clone(),
        forwarder: std::sync::OnceLock::new(),
        last_generation: AtomicU64::new(0),
        changes: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
        metrics: metrics.clone(),
    });
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
    if !idle_timeouts.is_empty() {
        // How the reading thread knows a quiet partition has no backlog.
        consumer_config.set("enable.partition.eof", "true");
    }
    freshet_kafka::keep_fetching(&mut consumer_config);
    let consumer: InputConsumer = consumer_config
        .create_with_context(context)
        .context("cannot create the Kafka consumer")?;
    let input = InputQueue::new(consumer);
    let context = input.consumer().context().clone();
    context.forward_to(input.forwarder());
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
        wake: handover.clone(),
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

    let in_flight = EpochsInFlight::default();
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
        idle: slots
            .iter()
            .map(|s| IdleWatch {
                timeout: idle_timeouts.get(&s.topic).copied(),
                ..IdleWatch::default()
            })
            .collect(),
        idle_checked: Instant::now(),
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

async fn connect_redis(
    url: &str,
    storage: HashMap<String, ViewStorage>,
    stop: &AtomicBool,
) -> anyhow::Result<RedisSink> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match RedisSink::connect(url, storage.clone()).await {
            Ok(sink) => return Ok(sink),
            Err(e @ DeliveryError::BadRedisUrl(_)) => bail!("{e}"),
            Err(e) if !stop.load(Ordering::Relaxed) => {
                let url = freshet_store::redacted_url(url);
                let refused = matches!(&e, DeliveryError::Redis(r)
                    if r.kind() == redis::ErrorKind::AuthenticationFailed);
                if refused {
                    // Retried all the same: the user may be on its way (an ACL being set up).
                    tracing::warn!(error = %e, %url, "Redis refused the user or password of the URL; retrying");
                } else {
                    tracing::warn!(error = %e, %url, "Redis is not reachable; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(e) => bail!(
                "Redis at {} is not reachable: {e}",
                freshet_store::redacted_url(url)
            ),
        }
    }
}
