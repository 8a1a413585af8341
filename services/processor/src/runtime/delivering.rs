//! The delivery task: checkpoints each epoch, publishes it in one Kafka transaction with
//! the input offsets and writes it to Redis, one epoch after another (the sinks themselves
//! are in `crate::delivery`).

use super::*;

/// The delivery task: publishes checkpointed epochs in order, then applies them to Redis.
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

impl Delivery {
    pub(super) async fn run(
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
    pub(super) async fn checkpoint_and_deliver(&mut self, epoch: &Epoch) -> anyhow::Result<()> {
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
        let group = self.group()?;
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
            let published = self.kafka.publish_encoded(
                &epoch.outbox,
                &epoch.changes,
                &group,
                &payloads,
                || {
                    checkpointed = join();
                    let ok = checkpointed.as_ref().is_some_and(Result::is_ok);
                    if ok {
                        mark_durable();
                    }
                    ok
                },
            );
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
    pub(super) async fn deliver(
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

    /// The consumer's group metadata for a transaction's offsets.
    fn group(&self) -> anyhow::Result<Arc<ConsumerGroupMetadata>> {
        self.input
            .group_metadata()
            .context("the consumer has no group metadata (it has not joined the group)")
    }

    /// Publishes the epoch in a transaction, retrying until it commits.
    pub(super) async fn publish(&mut self, epoch: &Epoch) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            // The group's generation may have moved on since the last try.
            let group = self.group()?;
            match self
                .kafka
                .publish(&epoch.outbox, &epoch.changes, &group)
                .await
            {
                Ok(()) => break,
                Err(DeliveryError::Fenced(e)) => bail!("stopping: {e}"),
                Err(e) => {
                    tracing::warn!(error = %e, epoch = epoch.outbox.epoch, "publishing the epoch failed; retrying with a new producer");
                    if self.stop.load(Ordering::Relaxed) && backoff >= RETRY_BACKOFF_MAX {
                        bail!(
                            "stopping with epoch {} not published: {e}",
                            epoch.outbox.epoch
                        );
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

    /// Applies the epoch to Redis (retrying while Redis is away); returns when it started.
    pub(super) fn redis_write(
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
