//! The processing thread: applies the read records to the partitions' engines, cuts
//! epochs, and hands each epoch (outbox and state changes) to the delivery task.

use super::*;

/// A processed epoch on its way to the checkpoint and delivery.
pub(super) struct Epoch {
    /// Shared with the task that writes it to Redis.
    pub(super) outbox: Arc<Outbox>,
    /// The state changes to checkpoint with the outbox (none for a recovered epoch, whose
    /// checkpoint is already written).
    pub(super) changes: Vec<PartitionChanges>,
    /// Records processed per source topic, counted once delivered.
    pub(super) events: Vec<(String, u64)>,
    /// With tracing on: each entity's latest record span this epoch, the parent of the
    /// span of its Redis write, so an event's trace ends where its values land.
    pub(super) traced: HashMap<String, SpanContext>,
}

/// The processing thread: read records in, processed epochs out.
pub(super) struct Processing {
    pub(super) engines: Vec<(String, i32, PartitionEngine)>,
    /// The input consumer's context, for the lag of each partition.
    pub(super) input: Arc<InputContext>,
    pub(super) metrics: ProcessorMetrics,
    pub(super) config: ProcessorConfig,
    pub(super) stop: Arc<AtomicBool>,
}

/// The batch of read records the processing thread is working through, and the way back to
/// the reading thread for it once processed.
pub(super) struct Pending {
    pub(super) batch: Vec<ReadRecord>,
    pub(super) next: usize,
    pub(super) used: std::sync::mpsc::Sender<Vec<ReadRecord>>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.next >= self.batch.len()
    }

    /// Starts on `batch`, handing the processed one back.
    pub(super) fn refill(&mut self, batch: Vec<ReadRecord>) {
        let processed = std::mem::replace(&mut self.batch, batch);
        self.next = 0;
        // The reading thread may have stopped, and then drops nothing more.
        let _ = self.used.send(processed);
    }

    pub(super) fn next(&mut self) -> Option<&mut ReadRecord> {
        let record = self.batch.get_mut(self.next)?;
        self.next += 1;
        Some(record)
    }
}

/// How long the reading and processing threads wait for a record.
pub(super) const POLL_WAIT: Duration = Duration::from_millis(20);

impl Processing {
    /// Processes epochs from `epoch` on until `stop`, with `reader` polling and decoding
    /// on a thread of its own; returns the next epoch number.
    pub(super) fn run(
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
    pub(super) fn epochs(
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

/// Writes the epoch's state changes, offsets and outbox in one synced batch. Epochs are
/// checkpointed in order, so the store always holds a prefix of the processed epochs.
pub(super) fn checkpoint_epoch(
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
