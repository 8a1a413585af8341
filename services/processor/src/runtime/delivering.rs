//! The delivery: writes each epoch to Redis, then checkpoints it, then publishes it in one
//! Kafka transaction with the input offsets, each of the three stages taking one epoch
//! after another (the sinks themselves are in `crate::delivery`).

use super::*;

/// The delivery's three stages, each taking epochs in order, each on its own task: this
/// one writes an epoch to Redis and hands it to the checkpointing task, which hands it,
/// once durable, to the publishing task ([`Publisher`]), which commits its transaction.
/// A served value waits for its own epoch's Redis write only: not for a checkpoint (the
/// synced RocksDB write has the longer tail) nor for a transaction.
pub(super) struct Delivery {
    pub(super) kafka: KafkaSink,
    pub(super) redis: RedisSink,
    /// The input consumer's context, for its group metadata at each transaction.
    pub(super) input: Arc<InputContext>,
    pub(super) transactional_id: String,
    pub(super) changelog: Option<ChangelogTopic>,
    pub(super) checkpoint: Arc<Checkpoint>,
    pub(super) view_names: Vec<String>,
    pub(super) metrics: ProcessorMetrics,
    pub(super) config: ProcessorConfig,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) tracer: opentelemetry::global::BoxedTracer,
    /// Wakes the processing thread when an epoch is in Redis: waiting for the next epoch
    /// to be cut (group commit), it need not wait for more records to notice.
    pub(super) wake: std::sync::mpsc::SyncSender<Handed>,
}

/// Epochs handed to the delivery and not yet done with: `in_flight` until published (a
/// revocation waits for none), `unwritten` until in Redis (an epoch is cut early, group
/// commit, when none is).
#[derive(Clone, Default)]
pub(super) struct EpochsInFlight {
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) unwritten: Arc<AtomicUsize>,
}

/// The most epochs waiting for their transaction, published together in one; also how
/// many written epochs may wait for their checkpoint.
const PUBLISH_AT_ONCE: usize = 8;

/// An epoch in Redis, on its way to its checkpoint and transaction.
struct Written {
    epoch: Epoch,
    started: Instant,
    redis_started: std::time::SystemTime,
}

/// The publishing stage: each epoch's transaction, in order.
struct Publisher {
    kafka: KafkaSink,
    input: Arc<InputContext>,
    transactional_id: String,
    changelog: Option<ChangelogTopic>,
    metrics: ProcessorMetrics,
    config: ProcessorConfig,
    stop: Arc<AtomicBool>,
    tracer: opentelemetry::global::BoxedTracer,
}

impl Delivery {
    pub(super) async fn run(
        self,
        mut epochs: tokio::sync::mpsc::Receiver<Epoch>,
        counts: EpochsInFlight,
    ) -> anyhow::Result<()> {
        let Delivery {
            kafka,
            mut redis,
            input,
            transactional_id,
            changelog,
            checkpoint,
            view_names,
            metrics,
            config,
            stop,
            tracer,
            wake,
        } = self;
        let publisher = Publisher {
            kafka,
            input,
            transactional_id,
            changelog,
            metrics: metrics.clone(),
            config,
            stop: stop.clone(),
            tracer,
        };
        // Epochs wait for their transaction while another commits, and go in the next
        // together: the checkpoint may be several epochs ahead of the group's offsets (a
        // restart restores from the changelog then, as for one).
        let (published_out, published_in) = tokio::sync::mpsc::channel::<Written>(PUBLISH_AT_ONCE);
        let publishing = tokio::spawn(publisher.run(published_in, counts.in_flight.clone()));
        let (checkpoint_out, checkpoint_in) =
            tokio::sync::mpsc::channel::<Written>(PUBLISH_AT_ONCE);
        let checkpointing = tokio::spawn(checkpointing_stage(
            (checkpoint, view_names.into(), metrics.clone()),
            checkpoint_in,
            published_out,
            counts.in_flight.clone(),
        ));
        while let Some(epoch) = epochs.recv().await {
            let started = Instant::now();
            // Redis is written before the checkpoint: the values under a version are the
            // same in any run (the engine is deterministic), so a value written before a
            // crash is the value a replay writes again. The transaction commits only once
            // the checkpoint is durable (the publishing task takes the epoch after it).
            let redis_started = std::time::SystemTime::now();
            write_redis(&mut redis, &epoch.outbox, &metrics, &stop).await;
            metrics
                .delivery_step
                .with_label_values(&["redis"])
                .observe(started.elapsed().as_secs_f64());
            counts.unwritten.fetch_sub(1, Ordering::AcqRel);
            // Full: the processing thread has records to get through first.
            let _ = wake.try_send(Handed::Written);
            let written = Written {
                epoch,
                started,
                redis_started,
            };
            if let Err(unpublished) = checkpoint_out.send(written).await {
                // The checkpointing or publishing task stopped with an error, returned below.
                drop(unpublished);
                counts.in_flight.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        }
        drop(checkpoint_out);
        let checkpointed = checkpointing
            .await
            .context("the checkpointing task failed")?;
        let published = publishing.await.context("the publishing task failed")?;
        // A checkpoint or publishing error is why the earlier stages stopped taking epochs.
        published.and(checkpointed)
    }
}

/// The checkpointing stage: makes written epochs durable, in order, then hands them to the
/// publishing stage. Those that queued up while a batch synced go in the next together.
async fn checkpointing_stage(
    (checkpoint, view_names, metrics): (Arc<Checkpoint>, Arc<[String]>, ProcessorMetrics),
    mut written: tokio::sync::mpsc::Receiver<Written>,
    published: tokio::sync::mpsc::Sender<Written>,
    in_flight: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    'taking: while let Some(first) = written.recv().await {
        let batch = with_queued(first, &mut written);
        // On a thread for blocking work: the sync would hold one of the runtime's few
        // workers, which the Redis stage and the publishing task need meanwhile.
        let (checkpoint, view_names, metrics) =
            (checkpoint.clone(), view_names.clone(), metrics.clone());
        let (batch, checkpointed) = tokio::task::spawn_blocking(move || {
            let epochs: Vec<&Epoch> = batch.iter().map(|w| &w.epoch).collect();
            let checkpointed = checkpoint_epochs(&checkpoint, &view_names, &metrics, &epochs);
            (batch, checkpointed)
        })
        .await
        .context("the checkpoint's thread failed")?;
        if let Err(e) = checkpointed {
            in_flight.fetch_sub(batch.len(), Ordering::AcqRel);
            result = Err(e.into());
            break;
        }
        let mut batch = batch.into_iter();
        for w in batch.by_ref() {
            if published.send(w).await.is_err() {
                // The publishing task stopped with an error, which it returns.
                in_flight.fetch_sub(1 + batch.len(), Ordering::AcqRel);
                break 'taking;
            }
        }
    }
    // Epochs still waiting are not published: their records are processed again.
    written.close();
    while written.recv().await.is_some() {
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    result
}

/// Writes the epochs' state changes and offsets in one synced batch. Epochs are
/// checkpointed in order, so the store always holds a prefix of the processed epochs.
fn checkpoint_epochs(
    checkpoint: &Checkpoint,
    view_names: &[String],
    metrics: &ProcessorMetrics,
    epochs: &[&Epoch],
) -> Result<(), crate::checkpoint::CheckpointError> {
    let started = Instant::now();
    let changes: Vec<&[PartitionChanges]> = epochs.iter().map(|e| e.changes.as_slice()).collect();
    checkpoint.commit_epochs(&changes, view_names)?;
    metrics
        .delivery_step
        .with_label_values(&["checkpoint"])
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// `first` and the epochs queued behind it, up to [`PUBLISH_AT_ONCE`]: what a stage takes
/// at once.
fn with_queued(first: Written, queue: &mut tokio::sync::mpsc::Receiver<Written>) -> Vec<Written> {
    let mut batch = vec![first];
    while batch.len() < PUBLISH_AT_ONCE {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

impl Publisher {
    /// Publishes written epochs in order until the writing stage stops handing them over:
    /// those that queued up while a transaction committed go together in the next.
    async fn run(
        mut self,
        mut written: tokio::sync::mpsc::Receiver<Written>,
        in_flight: Arc<AtomicUsize>,
    ) -> anyhow::Result<()> {
        while let Some(first) = written.recv().await {
            let batch = with_queued(first, &mut written);
            let published = self.publish(&batch).await;
            for w in &batch {
                if published.is_ok() {
                    self.finish(&w.epoch, w.redis_started);
                }
                self.metrics
                    .epoch_duration
                    .observe(w.started.elapsed().as_secs_f64());
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            if published.is_err() {
                // Epochs still waiting are not published: their records are processed again.
                while written.try_recv().is_ok() {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                return published;
            }
        }
        Ok(())
    }

    /// The consumer's group metadata for a transaction's offsets.
    fn group(&self) -> anyhow::Result<Arc<ConsumerGroupMetadata>> {
        self.input
            .group_metadata()
            .context("the consumer has no group metadata (it has not joined the group)")
    }

    /// Publishes the epochs in one transaction, retrying until it commits.
    async fn publish(&mut self, epochs: &[Written]) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let parts: Vec<(&Outbox, &[PartitionChanges])> = epochs
            .iter()
            .map(|w| (&*w.epoch.outbox, w.epoch.changes.as_slice()))
            .collect();
        let last = epochs.last().map_or(0, |w| w.epoch.outbox.epoch);
        loop {
            // The group's generation may have moved on since the last try.
            let group = self.group()?;
            match self.kafka.publish_epochs(&parts, &group).await {
                Ok(()) => break,
                Err(DeliveryError::Fenced(e)) => bail!("stopping: {e}"),
                Err(e) => {
                    tracing::warn!(error = %e, epoch = last, "publishing the epoch failed; retrying with a new producer");
                    if self.stop.load(Ordering::Relaxed) && backoff >= RETRY_BACKOFF_MAX {
                        bail!("stopping with epoch {last} not published: {e}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    let changelog = self
                        .changelog
                        .clone()
                        .map(|c| (c, self.metrics.changelog_bytes.clone()));
                    if let Ok(fresh) = kafka_sink(&self.config, &self.transactional_id, changelog) {
                        self.kafka = fresh;
                    }
                }
            }
        }
        self.metrics
            .delivery_step
            .with_label_values(&["kafka"])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The epoch is in Redis and Kafka: its traces end, it is counted.
    fn finish(&self, epoch: &Epoch, redis_started: std::time::SystemTime) {
        let outbox = &epoch.outbox;
        if !epoch.traced.is_empty() {
            trace_redis_writes(&self.tracer, outbox, &epoch.traced, redis_started);
        }
        for (topic, n) in &epoch.events {
            self.metrics.events.with_label_values(&[topic]).inc_by(*n);
        }
        for u in &outbox.updates {
            self.metrics.updates.with_label_values(&[&u.view]).inc();
        }
        self.metrics.epochs.with_label_values(&["normal"]).inc();
    }
}

/// Applies the outbox to Redis, retrying while Redis is away: the epoch is checkpointed
/// only after this succeeds, so nothing is lost.
pub(super) async fn write_redis(
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
