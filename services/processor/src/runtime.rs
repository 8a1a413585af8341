//! The processor's main loop: recover, then read epochs of records, checkpoint each epoch
//! and deliver it exactly once. The protocol and why each crash point is safe are in
//! `docs/processor.md`.

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

/// A processed epoch on its way to the checkpoint and delivery.
struct Epoch {
    /// Shared with the task that writes it to Redis.
    outbox: Arc<Outbox>,
    /// The state changes to checkpoint with the outbox (none for a recovered epoch, whose
    /// checkpoint is already written).
    changes: Vec<PartitionChanges>,
    /// Records processed per source topic, counted once delivered.
    events: Vec<(String, u64)>,
    /// With tracing on: each entity's latest record span this epoch, the parent of the
    /// span of its Redis write, so an event's trace ends where its values land.
    traced: HashMap<String, SpanContext>,
}

/// The processing thread: read records in, processed epochs out.
struct Processing {
    engines: Vec<(String, i32, PartitionEngine)>,
    /// The input consumer's context, for the lag of each partition.
    input: Arc<InputContext>,
    metrics: ProcessorMetrics,
    config: ProcessorConfig,
    stop: Arc<AtomicBool>,
}

/// A record as the reading thread hands it to the processing thread: decoded, with what a
/// dead letter would need.
struct ReadRecord {
    /// Index of the partition's engine.
    engine: usize,
    offset: i64,
    event: Result<Event, DecodeError>,
    /// The span continuing the record's trace (with tracing on).
    span: Option<SpanContext>,
    /// Key and value, kept when the record may become a dead letter (undecodable, or late
    /// with late events dead-lettered).
    raw: Option<RawRecord>,
}

/// A record's key and value as read.
#[derive(Default)]
struct RawRecord {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// The reading thread: reads the input in batches and decodes, beside the processing
/// thread.
struct Reader {
    input: InputQueue<InputContext>,
    /// Per source topic (a list: there are few, and a record's topic is found by comparing
    /// names rather than hashing them).
    inputs: Vec<TopicInput>,
    trace_records: bool,
    keep_late: bool,
    /// The error when a partition's offset is out of range.
    out_of_range: String,
    /// Per engine (with `keep_late`): a clock at least the engine's, to keep the bytes of
    /// the records that may be late.
    late_checks: Vec<LateCheck>,
    tracer: opentelemetry::global::BoxedTracer,
    runtime: tokio::runtime::Handle,
    /// Per engine: the partition stands still until the registry answers.
    registry_waits: Vec<Option<RegistryWait>>,
    registry_unavailable: prometheus::IntGauge,
}

/// A partition whose record at `offset` could not be decoded because the schema registry
/// could not be asked (unreachable, timed out, failing). The record may be sound, so it is
/// neither dead-lettered nor skipped: the partition is paused and, at `retry_at`, sought
/// back to `offset` and resumed, so the record is read again; records of the partition
/// read meanwhile (fetched before the pause) are dropped, and they come again after it.
/// Other partitions, and records of this one whose schema is known, are not held up by
/// the wait itself (the reading thread only asks the registry when a retry is due).
struct RegistryWait {
    topic: String,
    partition: i32,
    offset: i64,
    retry_at: Instant,
    backoff: Duration,
    /// Sought back and resumed: the next record of the partition to take is `offset`.
    resumed: bool,
}

/// The first pause before the registry is asked again; it doubles up to
/// [`RETRY_BACKOFF_MAX`].
const REGISTRY_RETRY_FIRST: Duration = Duration::from_millis(250);

/// The reading thread's view of an engine's lateness test, to keep a record's bytes only
/// when it may become a dead letter (copying every record's cost the reading thread, and
/// the processing thread that freed them, ~5% of their time).
///
/// The clock is the largest event time the reading thread has seen on the partition,
/// starting from the engine's restored clock. The engine sees the same records in the same
/// order (or fewer, skipping ones it already processed), so its clock is never ahead of
/// this one, and every event it finds late (`time < clock - delay`) is found late here too.
struct LateCheck {
    clock: Option<i64>,
    delay: i64,
}

impl LateCheck {
    fn may_be_late(&mut self, time: i64) -> bool {
        let clock = self.clock.map_or(time, |c| c.max(time));
        self.clock = Some(clock);
        time < clock - self.delay
    }
}

/// A source topic as the reading thread sees it.
struct TopicInput {
    topic: String,
    decoder: EventDecoder,
    /// By partition: the index of its engine.
    engine_of: Vec<Option<usize>>,
}

/// Records per hand-over from the reading thread (fewer when no more are waiting).
const READ_BATCH: usize = 2048;

/// About the payload bytes per hand-over at most: a batch of large records ends before
/// [`READ_BATCH`] (see [`BatchBytes`]).
const READ_BATCH_BYTES: usize = 1 << 20;

/// Hand-overs the reading thread may be ahead of the processing thread by: up to 32,768
/// decoded records (~10 MB for this project's ~100-byte events), and about 16 MB of
/// payloads however large the records. The two threads share two cores with librdkafka,
/// the checkpoint, the broker and Redis, and the reading thread waits for a core a third
/// of the time. With 2 batches ahead the processing thread then ran out of records: it
/// waited for input 12-14% of a catch-up while the cores were ~10% idle. With 16 it waits
/// 2-6%, and the catch-up ratio to the bare consumer rose from a median of 0.49 to 0.54
/// (nine rounds each, alternating). 64 did no better.
const HANDOVER_DEPTH: usize = 16;

impl Reader {
    /// Reads until `done` is set or the processing thread stops taking records; fails when
    /// the input cannot be read on from the checkpoint.
    fn run(mut self, (out, used): Handover, done: Arc<AtomicBool>) -> anyhow::Result<()> {
        // Inside the runtime's context for good, so a decode that starts I/O (a writer
        // schema fetched from the registry) finds its reactor; entering and leaving it
        // for each record cost the thread ~7% of its time.
        let runtime = self.runtime.clone();
        let _context = runtime.enter();
        let mut batch = Vec::with_capacity(READ_BATCH);
        let mut bytes = BatchBytes::default();
        let take_batch = |batch: &mut Vec<ReadRecord>, bytes: &mut BatchBytes| {
            bytes.handed_over(batch.len());
            next_batch(batch, &used)
        };
        while !done.load(Ordering::Relaxed) {
            self.retry_registry_waits();
            let mut gone = false;
            self.input.serve_events(|e| match e {
                KafkaError::MessageConsumption(code) if is_gone(code) => gone = true,
                e => tracing::warn!(error = %e, "consumer error"),
            })?;
            if gone {
                bail!("{}", self.out_of_range);
            }
            let wait = if batch.is_empty() {
                POLL_WAIT
            } else {
                Duration::ZERO
            };
            if self.input.read(wait, bytes.room(batch.len())) == 0 {
                if !batch.is_empty() && out.send(take_batch(&mut batch, &mut bytes)).is_err() {
                    return Ok(());
                }
                continue;
            }
            for record in self.input.records() {
                match record.error() {
                    None => {}
                    Some(code) if is_gone(code) => bail!("{}", self.out_of_range),
                    Some(RDKafkaErrorCode::PartitionEOF) => continue,
                    Some(code) => {
                        tracing::warn!(
                            error = %KafkaError::MessageConsumption(code),
                            partition = record.partition(),
                            "consumer error"
                        );
                        continue;
                    }
                }
                let topic = record.topic();
                let Some(input) = self.inputs.iter_mut().find(|i| i.topic == topic) else {
                    continue;
                };
                let Some(engine) = usize::try_from(record.partition())
                    .ok()
                    .and_then(|p| input.engine_of.get(p).copied().flatten())
                else {
                    continue;
                };
                if let Some(wait) = &self.registry_waits[engine] {
                    if !wait.resumed || record.offset() != wait.offset {
                        // Fetched before the pause: it comes again after the record that
                        // waits.
                        continue;
                    }
                }
                let event =
                    ready_or_block_on(&self.runtime, input.decoder.decode(record.payload()));
                match &event {
                    Err(e) if e.is_transient() => {
                        let (topic, partition, offset) =
                            (input.topic.clone(), record.partition(), record.offset());
                        Self::wait_for_registry(
                            &self.input,
                            &mut self.registry_waits[engine],
                            &self.registry_unavailable,
                            (topic, partition, offset),
                            e,
                        );
                        continue;
                    }
                    _ => {
                        if let Some(wait) = self.registry_waits[engine].take() {
                            self.registry_unavailable.dec();
                            tracing::info!(
                                topic = wait.topic.as_str(),
                                partition = wait.partition,
                                offset = wait.offset,
                                "the schema registry answered; the partition goes on"
                            );
                        }
                    }
                }
                let span = self
                    .trace_records
                    .then(|| trace_record(&self.tracer, record.headers()?))
                    .flatten();
                let may_be_late = self.keep_late
                    && event
                        .as_ref()
                        .is_ok_and(|e| self.late_checks[engine].may_be_late(e.time));
                let raw = (event.is_err() || may_be_late).then(|| RawRecord {
                    key: record.key().map(<[u8]>::to_vec),
                    payload: record.payload().map(<[u8]>::to_vec),
                });
                bytes.add(record.payload().map_or(0, <[u8]>::len));
                batch.push(ReadRecord {
                    engine,
                    offset: record.offset(),
                    event,
                    span,
                    raw,
                });
            }
            if bytes.is_full(batch.len()) && out.send(take_batch(&mut batch, &mut bytes)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Reader {
    /// Pauses a partition whose record could not be decoded because the registry could not
    /// be asked, to read it again later (see [`RegistryWait`]).
    fn wait_for_registry(
        input: &InputQueue<InputContext>,
        slot: &mut Option<RegistryWait>,
        gauge: &prometheus::IntGauge,
        (topic, partition, offset): (String, i32, i64),
        error: &DecodeError,
    ) {
        let backoff = match slot.take() {
            Some(earlier) => (earlier.backoff * 2).min(RETRY_BACKOFF_MAX),
            None => {
                gauge.inc();
                REGISTRY_RETRY_FIRST
            }
        };
        tracing::warn!(
            topic = topic.as_str(),
            partition,
            offset,
            retry_in_ms = backoff.as_millis() as u64,
            %error,
            "the schema registry is unavailable; the partition waits and reads this record again"
        );
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        if let Err(e) = input.consumer().pause(&list) {
            tracing::warn!(topic = topic.as_str(), partition, error = %e, "cannot pause the partition; its records are dropped until the retry");
        }
        *slot = Some(RegistryWait {
            topic,
            partition,
            offset,
            retry_at: Instant::now() + backoff,
            backoff,
            resumed: false,
        });
    }

    /// Seeks each partition whose retry is due back to its waiting record and resumes it.
    fn retry_registry_waits(&mut self) {
        let now = Instant::now();
        for wait in self.registry_waits.iter_mut().flatten() {
            if wait.resumed || wait.retry_at > now {
                continue;
            }
            let consumer = self.input.consumer();
            let mut list = TopicPartitionList::new();
            list.add_partition(&wait.topic, wait.partition);
            let sought = consumer.seek(
                &wait.topic,
                wait.partition,
                Offset::Offset(wait.offset),
                Duration::from_secs(5),
            );
            match sought.and_then(|()| consumer.resume(&list)) {
                Ok(()) => wait.resumed = true,
                Err(e) => {
                    tracing::warn!(topic = wait.topic.as_str(), partition = wait.partition, error = %e, "cannot seek back to the waiting record; trying again");
                    wait.retry_at = now + wait.backoff;
                }
            }
        }
    }
}

/// The payload bytes of the batch being filled, which end it before [`READ_BATCH`]
/// records when they are large: the records ahead of the processing thread then stay
/// within [`HANDOVER_DEPTH`] batches of about [`READ_BATCH_BYTES`] (a record's decoded
/// fields take a few times its payload), not of 2,048 records of any size.
#[derive(Debug, Default)]
struct BatchBytes {
    /// Of the records in the batch being filled.
    bytes: usize,
    /// The mean payload of the last batch handed over; 0 before the first.
    mean: usize,
}

impl BatchBytes {
    fn add(&mut self, payload: usize) {
        self.bytes += payload;
    }

    /// How many records the next read may bring into a batch of `records`: what keeps it
    /// within [`READ_BATCH`] records and, at the last batch's mean size, about
    /// [`READ_BATCH_BYTES`]; at least one.
    fn room(&self, records: usize) -> usize {
        let by_count = READ_BATCH.saturating_sub(records);
        let by_bytes = match self.mean {
            0 => by_count,
            mean => READ_BATCH_BYTES.saturating_sub(self.bytes) / mean,
        };
        by_count.min(by_bytes).max(1)
    }

    fn is_full(&self, records: usize) -> bool {
        records >= READ_BATCH || self.bytes >= READ_BATCH_BYTES
    }

    /// The batch of `records` was handed over: the next one starts empty.
    fn handed_over(&mut self, records: usize) {
        if let Some(mean) = self.bytes.checked_div(records) {
            self.mean = mean.max(1);
        }
        self.bytes = 0;
    }
}

/// Whether a consumer error says the checkpoint's offset is not in the input.
fn is_gone(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
    )
}

/// The output of `future`: at once when it is ready on its first poll, as a record whose
/// writer schema is known is (no I/O); otherwise by blocking on it in `runtime`, as one
/// that needs the registry. Blocking on each record cost the reading thread a tenth of its
/// time in entering and leaving the runtime. Called inside the runtime's context, so a
/// first poll that starts I/O finds its reactor.
fn ready_or_block_on<F: std::future::Future>(
    runtime: &tokio::runtime::Handle,
    future: F,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => runtime.block_on(future),
    }
}

/// The reading thread's ends of its channels: batches of read records to the processing
/// thread, and the processed ones back.
type Handover = (
    std::sync::mpsc::SyncSender<Vec<ReadRecord>>,
    std::sync::mpsc::Receiver<Vec<ReadRecord>>,
);

/// Takes the batch read so far, leaving an empty one with room for a whole batch: a
/// processed batch back from the processing thread when there is one, else a new one.
///
/// Processed records are dropped here, on the thread that allocated them: freed on the
/// processing thread, each event's strings went through the allocator's cross-thread
/// path, and each new batch's memory came fresh from the kernel, zeroed page by page
/// (grown from nothing, a batch was also copied eleven times on its way to 2,048 records).
fn next_batch(
    batch: &mut Vec<ReadRecord>,
    used: &std::sync::mpsc::Receiver<Vec<ReadRecord>>,
) -> Vec<ReadRecord> {
    let empty = match used.try_recv() {
        Ok(mut processed) => {
            processed.clear();
            processed
        }
        Err(_) => Vec::with_capacity(READ_BATCH),
    };
    std::mem::replace(batch, empty)
}

/// The batch of read records the processing thread is working through, and the way back to
/// the reading thread for it once processed.
struct Pending {
    batch: Vec<ReadRecord>,
    next: usize,
    used: std::sync::mpsc::Sender<Vec<ReadRecord>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.next >= self.batch.len()
    }

    /// Starts on `batch`, handing the processed one back.
    fn refill(&mut self, batch: Vec<ReadRecord>) {
        let processed = std::mem::replace(&mut self.batch, batch);
        self.next = 0;
        // The reading thread may have stopped, and then drops nothing more.
        let _ = self.used.send(processed);
    }

    fn next(&mut self) -> Option<&mut ReadRecord> {
        let record = self.batch.get_mut(self.next)?;
        self.next += 1;
        Some(record)
    }
}

/// How long the reading and processing threads wait for a record.
const POLL_WAIT: Duration = Duration::from_millis(20);

impl Processing {
    /// Processes epochs from `epoch` on until `stop`, with `reader` polling and decoding
    /// on a thread of its own; returns the next epoch number.
    fn run(
        mut self,
        reader: Reader,
        mut epoch: u64,
        sender: tokio::sync::mpsc::Sender<Epoch>,
        in_flight: Arc<AtomicUsize>,
    ) -> anyhow::Result<u64> {
        let (read_out, read_in) = std::sync::mpsc::sync_channel::<Vec<ReadRecord>>(HANDOVER_DEPTH);
        let (used_out, used_in) = std::sync::mpsc::channel::<Vec<ReadRecord>>();
        let reader_done = Arc::new(AtomicBool::new(false));
        let reader_thread = {
            let done = reader_done.clone();
            std::thread::Builder::new()
                .name("freshet-reader".into())
                .spawn(move || reader.run((read_out, used_in), done))
                .context("cannot start the reading thread")?
        };
        let pending = Pending {
            batch: Vec::new(),
            next: 0,
            used: used_out,
        };
        let result = self.epochs((&read_in, pending), &mut epoch, &sender, &in_flight);
        reader_done.store(true, Ordering::Relaxed);
        drop(read_in);
        // The reading thread's error, if any, is why processing stopped.
        if let Ok(Err(e)) = reader_thread.join() {
            return Err(e);
        }
        result.map(|()| epoch)
    }

    /// The processing loop: epochs of read records until `stop`.
    fn epochs(
        &mut self,
        (records_in, mut pending): (&std::sync::mpsc::Receiver<Vec<ReadRecord>>, Pending),
        epoch: &mut u64,
        sender: &tokio::sync::mpsc::Sender<Epoch>,
        in_flight: &AtomicUsize,
    ) -> anyhow::Result<()> {
        let Processing {
            engines,
            input,
            metrics,
            config,
            stop,
        } = self;
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        let mut last_lag = Instant::now() - LAG_EVERY;
        // Where each partition resumed, to tell a topic recreated since the checkpoint.
        let resumed: Vec<i64> = engines.iter().map(|(_, _, e)| e.next_offset()).collect();
        // `pending`: records read but not yet processed (an epoch can end inside a batch).
        loop {
            let started = Instant::now();
            let mut records = 0usize;
            let mut per_engine = vec![0u64; engines.len()];
            let mut dead_letters = Vec::new();
            let mut traced: HashMap<String, SpanContext> = HashMap::new();
            while records < config.epoch_max_records
                // While records are at hand the clock is read once per 64 of them (per
                // record it cost the processing thread 3% of its time); always before
                // waiting for more.
                && ((records % 64 != 0 && !pending.is_empty())
                    || started.elapsed() < config.epoch_duration)
            {
                if pending.is_empty() {
                    // Group commit: once earlier epochs are delivered, this one ends with the
                    // records already read.
                    let deliverer_idle = records > 0 && in_flight.load(Ordering::Acquire) == 0;
                    let waiting = Instant::now();
                    let batch = if deliverer_idle {
                        match records_in.try_recv() {
                            Ok(batch) => Some(batch),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Disconnected) => bail!("the reading thread stopped"),
                        }
                    } else {
                        match records_in.recv_timeout(POLL_WAIT) {
                            Ok(batch) => Some(batch),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => {
                                bail!("the reading thread stopped")
                            }
                        }
                    };
                    metrics
                        .processing_wait
                        .with_label_values(&["input"])
                        .inc_by(waiting.elapsed().as_secs_f64());
                    match batch {
                        Some(batch) => pending.refill(batch),
                        None => {
                            if deliverer_idle || stop.load(Ordering::Relaxed) {
                                break;
                            }
                            continue;
                        }
                    }
                }
                let record = pending.next().expect("not empty");
                let (topic, partition, engine) = &mut engines[record.engine];
                if record.offset < engine.next_offset() {
                    continue;
                }
                records += 1;
                per_engine[record.engine] += 1;
                let dead_letter = |raw: Option<RawRecord>, reason| {
                    let RawRecord { key, payload } = raw.unwrap_or_default();
                    DeadLetter {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: record.offset,
                        key,
                        payload,
                        reason,
                    }
                };
                match &mut record.event {
                    Ok(event) => {
                        if let Some(span) = record.span.take() {
                            traced.insert(event.entity.to_string(), span);
                        }
                        if engine.process(record.offset, Some(event)) == Outcome::Late {
                            metrics
                                .late_events
                                .with_label_values(&[topic.as_str()])
                                .inc();
                            if config.late_events == LatePolicy::DeadLetter {
                                let reason = format!(
                                    "late event: event time {} is behind the watermark {}",
                                    event.time,
                                    engine.watermark().unwrap_or(i64::MIN)
                                );
                                dead_letters.push(dead_letter(record.raw.take(), reason));
                                metrics.dead_letters.with_label_values(&["late"]).inc();
                            }
                        }
                    }
                    Err(reason) => {
                        engine.process(record.offset, None);
                        tracing::warn!(topic = topic.as_str(), partition = *partition, offset = record.offset, %reason, "dead-lettering an undecodable record");
                        dead_letters.push(dead_letter(record.raw.take(), reason.to_string()));
                        metrics
                            .dead_letters
                            .with_label_values(&["undecodable"])
                            .inc();
                    }
                }
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                record_lag(input, engines, metrics);
                if let Some((i, high)) = resumed_beyond_input(input, engines, &resumed) {
                    let (topic, partition, engine) = &engines[i];
                    bail!(
                        "{}",
                        input_gone(
                            &config.state_dir,
                            &format!(
                                "{topic}/{partition} at {}, where the topic ends at {high}",
                                engine.next_offset()
                            )
                        )
                    );
                }
            }
            if records == 0 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }

            let updates: Vec<OutboxUpdate> = engines
                .iter_mut()
                .flat_map(|(_, _, e)| e.drain_view_updates())
                .map(|u| OutboxUpdate {
                    view: u.update.view,
                    entity: u.update.entity,
                    version: u.update.version,
                    event_time_ms: u.update.event_time_ms,
                    values: u.update.values,
                    windows: u.windows,
                })
                .collect();
            let outbox = Outbox {
                epoch: *epoch,
                updates,
                dead_letters,
                offsets: engines
                    .iter()
                    .map(|(t, p, e)| (t.clone(), *p, e.next_offset()))
                    .collect(),
            };
            let changes: Vec<PartitionChanges> = engines
                .iter_mut()
                .map(|(topic, partition, engine)| PartitionChanges::take(topic, *partition, engine))
                .collect();
            metrics.entities.set(
                engines
                    .iter()
                    .map(|(_, _, e)| e.entity_count() as i64)
                    .sum(),
            );
            let mut events: Vec<(String, u64)> = Vec::new();
            for (i, n) in per_engine.iter().enumerate().filter(|(_, n)| **n > 0) {
                let topic = &engines[i].0;
                match events.iter_mut().find(|(t, _)| t == topic) {
                    Some((_, total)) => *total += n,
                    None => events.push((topic.clone(), *n)),
                }
            }
            in_flight.fetch_add(1, Ordering::AcqRel);
            let processed = Epoch {
                outbox: Arc::new(outbox),
                changes,
                events,
                traced,
            };
            let waiting = Instant::now();
            let handed_over = sender.blocking_send(processed);
            metrics
                .processing_wait
                .with_label_values(&["delivery"])
                .inc_by(waiting.elapsed().as_secs_f64());
            if handed_over.is_err() {
                // The delivery task ended with an error, which `run` reports; this epoch's
                // records are processed again on the next start.
                bail!("stopping: the delivery of epochs stopped");
            }
            *epoch += 1;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(())
    }
}

/// The delivery task: publishes checkpointed epochs in order, then applies them to Redis.
struct Delivery {
    kafka: KafkaSink,
    redis: RedisSink,
    group: ConsumerGroupMetadata,
    transactional_id: String,
    checkpoint: Arc<Checkpoint>,
    view_names: Vec<String>,
    metrics: ProcessorMetrics,
    config: ProcessorConfig,
    stop: Arc<AtomicBool>,
    tracer: opentelemetry::global::BoxedTracer,
}

impl Delivery {
    async fn run(
        mut self,
        mut epochs: tokio::sync::mpsc::Receiver<Epoch>,
        in_flight: Arc<AtomicUsize>,
    ) -> anyhow::Result<()> {
        while let Some(epoch) = epochs.recv().await {
            let started = Instant::now();
            let delivered = self.checkpoint_and_deliver(&epoch).await;
            self.metrics
                .epoch_duration
                .observe(started.elapsed().as_secs_f64());
            in_flight.fetch_sub(1, Ordering::AcqRel);
            delivered?;
        }
        Ok(())
    }

    /// Checkpoints the epoch while its transaction's records are on their way to the
    /// broker; the transaction commits only once the checkpoint is durable. A crash before
    /// that leaves an open transaction, which the next start aborts (`init_transactions`),
    /// and no checkpoint, so the epoch is processed again. Redis is written as soon as the
    /// checkpoint is durable, beside the commit: its values are in the outbox by then, so
    /// whatever happens to the transaction they are the values the epoch delivers.
    async fn checkpoint_and_deliver(&mut self, epoch: &Epoch) -> anyhow::Result<()> {
        let Ok(payloads) = self.kafka.encode(&epoch.outbox).await else {
            // The registry did not answer: checkpoint, then publish with retries.
            checkpoint_epoch(&self.checkpoint, &self.view_names, &self.metrics, epoch)?;
            return self.deliver(epoch, false, "normal").await;
        };
        let started = Instant::now();
        let (durable, is_durable) = tokio::sync::oneshot::channel::<()>();
        let redis = {
            let write = self.redis_write(epoch);
            tokio::spawn(async move {
                is_durable.await.ok()?;
                Some(write.await)
            })
        };
        let mut durable = Some(durable);
        let mut mark_durable = || {
            if let Some(durable) = durable.take() {
                let _ = durable.send(());
            }
        };
        let (checkpointed, published) = std::thread::scope(|scope| {
            let mut writing = Some(scope.spawn(|| {
                checkpoint_epoch(&self.checkpoint, &self.view_names, &self.metrics, epoch)
            }));
            let mut join = || {
                writing
                    .take()
                    .map(|w| w.join().expect("the checkpoint thread does not panic"))
            };
            let mut checkpointed = None;
            let published =
                self.kafka
                    .publish_encoded(&epoch.outbox, &self.group, &payloads, || {
                        checkpointed = join();
                        let ok = checkpointed.as_ref().is_some_and(Result::is_ok);
                        if ok {
                            mark_durable();
                        }
                        ok
                    });
            let checkpointed = checkpointed
                .or_else(join)
                .expect("the checkpoint was joined");
            (checkpointed, published)
        });
        // A failed checkpoint drops `durable`: the Redis task ends without writing.
        checkpointed?;
        mark_durable();
        match published {
            Ok(()) => {
                self.metrics
                    .delivery_step
                    .with_label_values(&["kafka"])
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(DeliveryError::Fenced(e)) => bail!("stopping: {e}"),
            Err(e) => {
                tracing::warn!(error = %e, epoch = epoch.outbox.epoch, "publishing the epoch failed; retrying");
                self.publish(epoch).await?;
            }
        }
        let redis_started = redis
            .await
            .context("the Redis write task failed")?
            .expect("the checkpoint is durable");
        self.finish(epoch, redis_started, "normal")
    }

    /// Publishes the epoch (unless its transaction is known to have committed), applies it
    /// to Redis and removes its outbox.
    async fn deliver(
        &mut self,
        epoch: &Epoch,
        published: bool,
        kind: &'static str,
    ) -> anyhow::Result<()> {
        if !published {
            self.publish(epoch).await?;
        }
        let redis_started = self.redis_write(epoch).await;
        self.finish(epoch, redis_started, kind)
    }

    /// Publishes the epoch in a transaction, retrying until it commits.
    async fn publish(&mut self, epoch: &Epoch) -> anyhow::Result<()> {
        let started = Instant::now();
        publish(
            &mut self.kafka,
            &self.config,
            &self.transactional_id,
            &epoch.outbox,
            &self.group,
            &self.stop,
        )
        .await?;
        self.metrics
            .delivery_step
            .with_label_values(&["kafka"])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Applies the epoch to Redis (retrying while Redis is away); returns when it started.
    fn redis_write(
        &self,
        epoch: &Epoch,
    ) -> impl std::future::Future<Output = std::time::SystemTime> + Send + 'static {
        let mut redis = self.redis.clone();
        let outbox = epoch.outbox.clone();
        let metrics = self.metrics.clone();
        let stop = self.stop.clone();
        async move {
            let started = Instant::now();
            let started_at = std::time::SystemTime::now();
            write_redis(&mut redis, &outbox, &metrics, &stop).await;
            metrics
                .delivery_step
                .with_label_values(&["redis"])
                .observe(started.elapsed().as_secs_f64());
            started_at
        }
    }

    /// The epoch is in Kafka and Redis: its traces end, its outbox goes, it is counted.
    fn finish(
        &self,
        epoch: &Epoch,
        redis_started: std::time::SystemTime,
        kind: &'static str,
    ) -> anyhow::Result<()> {
        let outbox = &epoch.outbox;
        if !epoch.traced.is_empty() {
            trace_redis_writes(&self.tracer, outbox, &epoch.traced, redis_started);
        }
        self.checkpoint.clear_outbox(outbox.epoch)?;
        for (topic, n) in &epoch.events {
            self.metrics.events.with_label_values(&[topic]).inc_by(*n);
        }
        for u in &outbox.updates {
            self.metrics.updates.with_label_values(&[&u.view]).inc();
        }
        self.metrics.epochs.with_label_values(&[kind]).inc();
        Ok(())
    }
}

/// Writes the epoch's state changes, offsets and outbox in one synced batch. Epochs are
/// checkpointed in order, so the store always holds a prefix of the processed epochs.
fn checkpoint_epoch(
    checkpoint: &Checkpoint,
    view_names: &[String],
    metrics: &ProcessorMetrics,
    epoch: &Epoch,
) -> Result<(), crate::checkpoint::CheckpointError> {
    let started = Instant::now();
    checkpoint.commit_epoch(&epoch.changes, view_names, &epoch.outbox)?;
    metrics
        .delivery_step
        .with_label_values(&["checkpoint"])
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// A span for one record, continuing the trace in its `traceparent` header; its context,
/// or `None` when the record carries none.
fn trace_record(
    tracer: &opentelemetry::global::BoxedTracer,
    headers: InputHeaders<'_>,
) -> Option<SpanContext> {
    let parent = freshet_telemetry::kafka_headers::extract(&headers);
    if !parent.span().span_context().is_valid() {
        return None;
    }
    let mut span = tracer.build_with_context(
        tracer
            .span_builder("process user_event")
            .with_kind(SpanKind::Consumer),
        &parent,
    );
    let context = span.span_context().clone();
    span.end();
    Some(context)
}

/// One span per update written to Redis whose entity had a traced record this epoch, as
/// a child of that record's span, covering the epoch's Redis write.
fn trace_redis_writes(
    tracer: &opentelemetry::global::BoxedTracer,
    outbox: &Outbox,
    traced: &HashMap<String, SpanContext>,
    started: std::time::SystemTime,
) {
    let ended = std::time::SystemTime::now();
    for update in &outbox.updates {
        let Some(record) = traced.get(&update.entity) else {
            continue;
        };
        let parent = opentelemetry::Context::new().with_remote_span_context(record.clone());
        let mut span = tracer.build_with_context(
            tracer
                .span_builder("write features to redis")
                .with_kind(SpanKind::Client)
                .with_start_time(started)
                .with_attributes([
                    opentelemetry::KeyValue::new("view", update.view.clone()),
                    opentelemetry::KeyValue::new("entity", update.entity.clone()),
                    opentelemetry::KeyValue::new("version", update.version as i64),
                ]),
            &parent,
        );
        span.end_with_timestamp(ended);
    }
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

/// Publishes the outbox, retrying until it commits. A fenced producer (another processor
/// took over the same group) ends the run.
async fn publish(
    kafka: &mut KafkaSink,
    config: &ProcessorConfig,
    transactional_id: &str,
    outbox: &Outbox,
    group: &ConsumerGroupMetadata,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match kafka.publish(outbox, group).await {
            Ok(()) => return Ok(()),
            Err(DeliveryError::Fenced(e)) => bail!("stopping: {e}"),
            Err(e) => {
                tracing::warn!(error = %e, epoch = outbox.epoch, "publishing the epoch failed; retrying with a new producer");
                if stop.load(Ordering::Relaxed) && backoff >= RETRY_BACKOFF_MAX {
                    bail!("stopping with epoch {} not published: {e}", outbox.epoch);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                if let Ok(fresh) = kafka_sink(config, transactional_id) {
                    *kafka = fresh;
                }
            }
        }
    }
}

/// Applies the outbox to Redis, retrying while Redis is away: the outbox stays in the
/// checkpoint until this succeeds, so nothing is lost.
async fn write_redis(
    redis: &mut RedisSink,
    outbox: &Outbox,
    metrics: &ProcessorMetrics,
    stop: &AtomicBool,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match redis.apply(&outbox.updates, metrics).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, epoch = outbox.epoch, stopping = stop.load(Ordering::Relaxed), "writing to Redis failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_small_records_ends_at_its_count_and_one_of_large_records_at_its_bytes() {
        let mut small = BatchBytes::default();
        assert_eq!(small.room(0), READ_BATCH, "nothing known yet: by count");
        for _ in 0..READ_BATCH {
            small.add(100);
        }
        assert!(small.is_full(READ_BATCH));
        small.handed_over(READ_BATCH);
        assert_eq!(small.room(0), READ_BATCH, "~200 KB: the count ends it");
        assert_eq!(small.room(2_000), READ_BATCH - 2_000);

        let mut large = BatchBytes::default();
        for _ in 0..READ_BATCH {
            large.add(10_000);
        }
        large.handed_over(READ_BATCH);
        assert_eq!(
            large.room(0),
            READ_BATCH_BYTES / 10_000,
            "~1 MB of 10 KB records"
        );
        for _ in 0..100 {
            large.add(10_000);
        }
        assert!(!large.is_full(100));
        assert_eq!(large.room(100), 4, "what is left of the megabyte");
        for _ in 0..5 {
            large.add(10_000);
        }
        assert!(large.is_full(105), "over a megabyte, whatever the count");
        large.handed_over(105);
        assert_eq!(large.bytes, 0);

        let mut huge = BatchBytes::default();
        huge.add(3 << 20);
        huge.handed_over(1);
        assert_eq!(
            huge.room(0),
            1,
            "a record over the budget still reads, one at a time"
        );
    }
}
