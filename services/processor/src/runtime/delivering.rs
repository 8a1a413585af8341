//! The delivery: checkpoints each epoch and writes it to Redis, then publishes it in one
//! Kafka transaction with the input offsets, one epoch after another in each of the two
//! stages (the sinks themselves are in `crate::delivery`).

use super::*;

/// The delivery's two stages, each taking epochs in order: this task checkpoints an epoch
/// and writes it to Redis, then hands it to the publishing task ([`Publisher`]), which
/// commits its transaction while the next epoch is checkpointed and written. A served
/// value waits for its own epoch's checkpoint and Redis write, not for the transaction of
/// the epoch before (the largest step of a live epoch's delivery).
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
}

/// Epochs handed to the delivery and not yet done with: `in_flight` until published (a
/// revocation waits for none), `unwritten` until in Redis (an epoch is cut early, group
/// commit, when none is).
#[derive(Clone, Default)]
pub(super) struct EpochsInFlight {
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) unwritten: Arc<AtomicUsize>,
}

/// The most epochs waiting for their transaction, published together in one.
const PUBLISH_AT_ONCE: usize = 8;

/// An epoch checkpointed and in Redis, on its way to its transaction.
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
    checkpoint: Arc<Checkpoint>,
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
            redis,
            input,
            transactional_id,
            changelog,
            checkpoint,
            view_names,
            metrics,
            config,
            stop,
            tracer,
        } = self;
        let publisher = Publisher {
            kafka,
            input,
            transactional_id,
            changelog,
            checkpoint: checkpoint.clone(),
            metrics: metrics.clone(),
            config,
            stop: stop.clone(),
            tracer,
        };
        // Epochs wait for their transaction while another commits, and go in the next
        // together: the checkpoint may be several epochs ahead of the group's offsets (a
        // restart restores from the changelog then, as for one).
        let (written_out, written_in) = tokio::sync::mpsc::channel::<Written>(PUBLISH_AT_ONCE);
        let publishing = tokio::spawn(publisher.run(written_in, counts.in_flight.clone()));
        let mut result = Ok(());
        while let Some(epoch) = epochs.recv().await {
            let started = Instant::now();
            // Redis is written beside the checkpoint: the values under a version are the
            // same in any run (the engine is deterministic), so a value written before a
            // crash is the value a replay writes again. The transaction commits only once
            // the checkpoint is durable (the publishing task starts after it).
            let redis_started = std::time::SystemTime::now();
            let writing = {
                let (mut redis, outbox, metrics, stop) = (
                    redis.clone(),
                    epoch.outbox.clone(),
                    metrics.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let writing = Instant::now();
                    write_redis(&mut redis, &outbox, &metrics, &stop).await;
                    metrics
                        .delivery_step
                        .with_label_values(&["redis"])
                        .observe(writing.elapsed().as_secs_f64());
                })
            };
            let checkpointed = tokio::task::block_in_place(|| {
                checkpoint_epoch(&checkpoint, &view_names, &metrics, &epoch)
            });
            // Written in order: an epoch's writes never overtake the one's before it.
            let written = writing.await.context("the Redis write task failed");
            if let Err(e) = checkpointed.map_err(anyhow::Error::from).and(written) {
                counts.unwritten.fetch_sub(1, Ordering::AcqRel);
                counts.in_flight.fetch_sub(1, Ordering::AcqRel);
                result = Err(e);
                break;
            }
            counts.unwritten.fetch_sub(1, Ordering::AcqRel);
            let written = Written {
                epoch,
                started,
                redis_started,
            };
            if let Err(unpublished) = written_out.send(written).await {
                // The publishing task stopped with an error, which it returns below.
                drop(unpublished);
                counts.in_flight.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        }
        drop(written_out);
        let published = publishing.await.context("the publishing task failed")?;
        // A publishing error is why this stage stopped taking epochs.
        published.and(result)
    }
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
            let mut batch = vec![first];
            while batch.len() < PUBLISH_AT_ONCE {
                match written.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let published = self.publish(&batch).await;
            let mut finished = published;
            for w in &batch {
                if finished.is_ok() {
                    finished = self.finish(&w.epoch, w.redis_started, "normal");
                }
                self.metrics
                    .epoch_duration
                    .observe(w.started.elapsed().as_secs_f64());
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            if finished.is_err() {
                // Epochs still waiting are not published: their records are processed again.
                while written.try_recv().is_ok() {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                return finished;
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

    /// The epoch is in Kafka and Redis: its traces end, its outbox goes, it is counted.
    pub(super) fn finish(
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

/// Applies the outbox to Redis, retrying while Redis is away: the outbox stays in the
/// checkpoint until this succeeds, so nothing is lost.
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
