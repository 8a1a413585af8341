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

use crate::checkpoint::{
    Checkpoint, DeadLetter, Outbox, OutboxUpdate, PartitionChanges, ViewFingerprint,
};
use crate::delivery::{transaction_committed, DeliveryError, KafkaSink, RedisSink};
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Consumer group and transactional id: one per processor deployment.
    pub group_id: String,
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
) -> Result<KafkaSink, DeliveryError> {
    KafkaSink::new(
        &config.brokers,
        &config.registry_url,
        transactional_id,
        &config.output_topic,
        &config.dead_letter_topic,
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

    let mut consumer_config =
        freshet_kafka::group_consumer_config(&config.brokers, &config.group_id);
    consumer_config
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", LAG_EVERY.as_millis().to_string())
        // A broker may hold a fetch for this long even when records are waiting (tansu
        // does: 500 ms, librdkafka's default, put 130 ms into median freshness).
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        // Every partition is assigned at the checkpoint's offset. If the broker has no
        // record there (the topic was recreated or truncated), resetting to either end
        // would skip input or mix two topics' offsets in one state: stop instead.
        .set("auto.offset.reset", "error");
    freshet_kafka::keep_fetching(&mut consumer_config);
    let consumer: InputConsumer = consumer_config
        .create_with_context(InputContext::default())
        .context("cannot create the Kafka consumer")?;

    // One engine per input partition, restored from the checkpoint.
    let mut engines: Vec<(String, i32, PartitionEngine)> = Vec::new();
    let mut topics: Vec<&String> = sources.keys().collect();
    topics.sort();
    for topic in topics {
        let metadata = consumer
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
            let saved = checkpoint.load_partition(topic, partition, &view_index)?;
            let engine = PartitionEngine::restore(
                views.clone(),
                topic,
                saved.next_offset.unwrap_or(0),
                saved.clock,
                saved.entities,
            )?;
            engines.push((topic.clone(), partition, engine));
        }
    }
    metrics.entities.set(
        engines
            .iter()
            .map(|(_, _, e)| e.entity_count() as i64)
            .sum(),
    );

    let transactional_id = format!("{}-tx", config.group_id);
    let kafka = kafka_sink(&config, &transactional_id)?;
    let ttl_ms: HashMap<String, i64> = views.iter().map(|v| (v.name.clone(), v.ttl_ms)).collect();
    let redis = connect_redis(&config.redis_url, ttl_ms, &stop).await?;
    let group = consumer
        .group_metadata()
        .context("the Kafka consumer has no group metadata")?;
    let tracer = opentelemetry::global::tracer("freshet-processor");
    let mut delivery = Delivery {
        kafka,
        redis,
        group,
        transactional_id,
        checkpoint: checkpoint.clone(),
        view_names,
        metrics: metrics.clone(),
        config: config.clone(),
        stop: stop.clone(),
        tracer: opentelemetry::global::tracer("freshet-processor"),
    };

    let mut epoch = 0;
    for outbox in checkpoint.outboxes()? {
        epoch = outbox.epoch + 1;
        let committed = transaction_committed(&consumer, &outbox)
            .context("cannot read the group's committed offsets")?;
        tracing::info!(
            epoch = outbox.epoch,
            committed,
            "finishing an epoch left by the last run"
        );
        let recovered = Epoch {
            outbox: Arc::new(outbox),
            changes: Vec::new(),
            events: Vec::new(),
            traced: HashMap::new(),
        };
        let started = Instant::now();
        delivery.deliver(&recovered, committed, "recovered").await?;
        metrics
            .epoch_duration
            .observe(started.elapsed().as_secs_f64());
    }

    let mut assignment = TopicPartitionList::new();
    for (topic, partition, engine) in &engines {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(engine.next_offset()))?;
    }
    let input = InputQueue::assign(consumer, &assignment)?;
    let resumed_at = engines
        .iter()
        .map(|(topic, partition, engine)| {
            format!("{topic}/{partition} at {}", engine.next_offset())
        })
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        partitions = engines.len(),
        views = views.len(),
        from = resumed_at.as_str(),
        "processing"
    );

    let in_flight = Arc::new(AtomicUsize::new(0));
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let stop_processing = stop.clone();
    let reader = Reader {
        out_of_range: input_gone(&config.state_dir, &resumed_at),
        input,
        inputs: sources
            .into_iter()
            .map(|(topic, decoder)| {
                let mut engine_of = Vec::new();
                for (i, (_, partition, _)) in
                    engines.iter().enumerate().filter(|(_, e)| e.0 == topic)
                {
                    let at = usize::try_from(*partition).expect("partitions are not negative");
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
        late_checks: engines
            .iter()
            .map(|(_, _, e)| LateCheck {
                clock: e.clock(),
                delay: e.watermark_delay(),
            })
            .collect(),
        tracer,
        runtime: tokio::runtime::Handle::current(),
        registry_waits: engines.iter().map(|_| None).collect(),
        registry_unavailable: metrics.registry_unavailable.clone(),
    };
    let processing = Processing {
        engines,
        input: reader.input.consumer().context().clone(),
        metrics,
        config,
        stop,
    };
    let deliverer_in_flight = in_flight.clone();
    let processing =
        tokio::task::spawn_blocking(move || processing.run(reader, epoch, sender, in_flight));
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
/// statistics report it, which come from fetch responses. (Asking the broker with
/// ListOffsets instead does not work on tansu, which answers 1 for any partition.)
#[derive(Default)]
pub struct InputContext {
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
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

impl ConsumerContext for InputContext {}

impl InputContext {
    fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .lock()
            .expect("watermarks")
            .get(&(topic.to_string(), partition))
            .copied()
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

/// A partition whose input ends before the offset its engine resumed from and that has not
/// moved since (a broker that does not report the offset as out of range, like tansu, just
/// answers its fetches with nothing): `(index, high watermark)`. Only a partition that has
/// not moved is judged: a record processed since the start shows the input goes on there,
/// and the high watermark in the statistics may be older than that record.
fn resumed_beyond_input(
    input: &InputContext,
    engines: &[(String, i32, PartitionEngine)],
    resumed: &[i64],
) -> Option<(usize, i64)> {
    engines.iter().zip(resumed).enumerate().find_map(
        |(i, ((topic, partition, engine), &resumed))| {
            let high = input.high_watermark(topic, *partition)?;
            (engine.next_offset() == resumed && high < resumed).then_some((i, high))
        },
    )
}

fn record_lag(
    input: &InputContext,
    engines: &[(String, i32, PartitionEngine)],
    metrics: &ProcessorMetrics,
) {
    for (topic, partition, engine) in engines {
        if let Some(high) = input.high_watermark(topic, *partition) {
            metrics
                .consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set((high - engine.next_offset()).max(0));
        }
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
