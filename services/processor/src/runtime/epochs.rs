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
    /// Every input partition; those this instance owns have an engine.
    pub(super) slots: Vec<PartitionSlot>,
    /// The input consumer's context, for the lag of each partition and to tell the reading
    /// thread about restored partitions.
    pub(super) input: Arc<InputContext>,
    pub(super) restorer: Restorer,
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
        self.next = 0;
        let processed = std::mem::replace(&mut self.batch, batch);
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
        (read_out, read_in): (
            std::sync::mpsc::SyncSender<Handed>,
            std::sync::mpsc::Receiver<Handed>,
        ),
        mut epoch: u64,
        sender: tokio::sync::mpsc::Sender<Epoch>,
        in_flight: EpochsInFlight,
    ) -> anyhow::Result<u64> {
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
        (records_in, mut pending): (&std::sync::mpsc::Receiver<Handed>, Pending),
        epoch: &mut u64,
        sender: &tokio::sync::mpsc::Sender<Epoch>,
        in_flight: &EpochsInFlight,
    ) -> anyhow::Result<()> {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        let mut last_lag = Instant::now() - LAG_EVERY;
        // `pending`: records read but not yet processed (an epoch can end inside a batch).
        loop {
            let started = Instant::now();
            let mut records = 0usize;
            let mut per_slot = vec![0u64; self.slots.len()];
            // Per slot: an idle advance changed values or state this epoch.
            let mut advanced = vec![false; self.slots.len()];
            let mut dead_letters = Vec::new();
            let mut traced: HashMap<String, SpanContext> = HashMap::new();
            // With every change published: the changes drained before the clocks moved on.
            let mut earlier: Vec<OutboxUpdate> = Vec::new();
            // An assignment change ends the epoch; it is handled once the epoch is handed
            // over.
            let mut control = None;
            while records < self.config.epoch_max_records
                // While records are at hand the clock is read once per 64 of them (per
                // record it cost the processing thread 3% of its time); always before
                // waiting for more.
                && ((!records.is_multiple_of(64) && !pending.is_empty())
                    || started.elapsed() < self.config.epoch_duration)
            {
                if pending.is_empty() {
                    // Group commit: once earlier epochs are in Redis, this one ends with the
                    // records already read (their transactions may still be committing).
                    let deliverer_idle = (records > 0 || advanced.contains(&true))
                        && in_flight.unwritten.load(Ordering::Acquire) == 0;
                    let waiting = Instant::now();
                    let handed = if deliverer_idle {
                        match records_in.try_recv() {
                            Ok(handed) => Some(handed),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Disconnected) => bail!("the reading thread stopped"),
                        }
                    } else {
                        match records_in.recv_timeout(POLL_WAIT) {
                            Ok(handed) => Some(handed),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => {
                                bail!("the reading thread stopped")
                            }
                        }
                    };
                    self.metrics
                        .processing_wait
                        .with_label_values(&["input"])
                        .inc_by(waiting.elapsed().as_secs_f64());
                    match handed {
                        Some(Handed::Records(batch)) => pending.refill(batch),
                        Some(Handed::Advance {
                            slot,
                            generation,
                            clock,
                        }) => {
                            advanced[slot] |= self.advance(slot, generation, clock, &mut earlier);
                            continue;
                        }
                        // Whether the epoch ends now is decided again above.
                        Some(Handed::Written) => continue,
                        Some(change) => {
                            control = Some(change);
                            break;
                        }
                        None => {
                            if deliverer_idle || self.stop.load(Ordering::Relaxed) {
                                break;
                            }
                            continue;
                        }
                    }
                }
                let record = pending.next().expect("not empty");
                let slot = &mut self.slots[record.engine];
                let Some(engine) = slot.engine.as_mut() else {
                    continue;
                };
                if record.generation != slot.generation || record.offset < engine.next_offset() {
                    continue;
                }
                let (topic, partition) = (&slot.topic, slot.partition);
                records += 1;
                per_slot[record.engine] += 1;
                let dead_letter = |raw: Option<RawRecord>, reason| {
                    let RawRecord { key, payload } = raw.unwrap_or_default();
                    DeadLetter {
                        topic: topic.clone(),
                        partition,
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
                        if self.config.published_changes == PublishedChanges::All {
                            drain_before_clock_moves(engine, event.time, &mut earlier);
                        }
                        if engine.process(record.offset, Some(event)) == Outcome::Late {
                            self.metrics
                                .late_events
                                .with_label_values(&[topic.as_str()])
                                .inc();
                            if self.config.late_events == LatePolicy::DeadLetter {
                                let reason = format!(
                                    "late event: event time {} is behind the watermark {}",
                                    event.time,
                                    engine.watermark().unwrap_or(i64::MIN)
                                );
                                dead_letters.push(dead_letter(record.raw.take(), reason));
                                self.metrics.dead_letters.with_label_values(&["late"]).inc();
                            }
                        }
                    }
                    Err(reason) => {
                        engine.process(record.offset, None);
                        tracing::warn!(topic = topic.as_str(), partition, offset = record.offset, %reason, "dead-lettering an undecodable record");
                        dead_letters.push(dead_letter(record.raw.take(), reason.to_string()));
                        self.metrics
                            .dead_letters
                            .with_label_values(&["undecodable"])
                            .inc();
                    }
                }
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                record_lag(&self.input, &self.slots, &self.metrics);
                if let Some((i, high, at)) = resumed_beyond_input(&self.input, &mut self.slots) {
                    let slot = &self.slots[i];
                    bail!(
                        "{}",
                        input_gone(
                            &self.config.state_dir,
                            &format!(
                                "{}/{} at {at}, where the topic ends at {high}",
                                slot.topic, slot.partition
                            )
                        )
                    );
                }
            }
            if records > 0 || advanced.contains(&true) {
                self.hand_over(
                    epoch,
                    (per_slot, advanced, dead_letters, traced, earlier),
                    sender,
                    in_flight,
                )?;
            }
            if let Some(change) = control {
                self.change_assignment(change, sender, in_flight)?;
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(())
    }

    /// Moves a quiet partition's clock on (see `reading::IdleWatch`); returns whether that
    /// changed values or state, which the epoch then delivers.
    /// With every change published, the changes before the clock moves go to `earlier`.
    fn advance(
        &mut self,
        slot: usize,
        generation: u64,
        clock: i64,
        earlier: &mut Vec<OutboxUpdate>,
    ) -> bool {
        let slot = &mut self.slots[slot];
        let Some(engine) = slot.engine.as_mut() else {
            return false;
        };
        if slot.generation != generation {
            return false;
        }
        if self.config.published_changes == PublishedChanges::All {
            drain_before_clock_moves(engine, clock, earlier);
        }
        if !engine.advance_clock(clock) {
            return false;
        }
        self.metrics
            .idle_advances
            .with_label_values(&[slot.topic.as_str()])
            .inc();
        engine.has_changes()
    }

    /// Ends the epoch: drains the engines into its outbox and state changes and hands it
    /// to the delivery task. `advanced`: per slot, whether an idle advance changed it;
    /// `earlier`: the changes drained within the epoch (every change published).
    #[allow(clippy::type_complexity)]
    fn hand_over(
        &mut self,
        epoch: &mut u64,
        (per_slot, advanced, dead_letters, traced, earlier): (
            Vec<u64>,
            Vec<bool>,
            Vec<DeadLetter>,
            HashMap<String, SpanContext>,
            Vec<OutboxUpdate>,
        ),
        sender: &tokio::sync::mpsc::Sender<Epoch>,
        in_flight: &EpochsInFlight,
    ) -> anyhow::Result<()> {
        let owned = || self.slots.iter().filter(|s| s.engine.is_some());
        let offsets = owned()
            .map(|s| {
                let engine = s.engine.as_ref().expect("owned");
                (s.topic.clone(), s.partition, engine.next_offset())
            })
            .collect();
        let mut updates: Vec<OutboxUpdate> = Vec::new();
        let mut changes: Vec<PartitionChanges> = Vec::new();
        let mut entities = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(engine) = slot.engine.as_mut() else {
                continue;
            };
            drain_changes(engine, &mut updates);
            changes.push(PartitionChanges::take(
                &slot.topic,
                slot.partition,
                engine,
                per_slot[i] > 0 || advanced[i],
            ));
            entities += engine.entity_count() as i64;
        }
        self.metrics.entities.set(entities);
        let (updates, superseded) = latest_of_each(earlier, updates);
        let outbox = Outbox {
            epoch: *epoch,
            updates,
            superseded,
            dead_letters,
            offsets,
        };
        let mut events: Vec<(String, u64)> = Vec::new();
        for (i, n) in per_slot.iter().enumerate().filter(|(_, n)| **n > 0) {
            let topic = &self.slots[i].topic;
            match events.iter_mut().find(|(t, _)| t == topic) {
                Some((_, total)) => *total += n,
                None => events.push((topic.clone(), *n)),
            }
        }
        in_flight.in_flight.fetch_add(1, Ordering::AcqRel);
        in_flight.unwritten.fetch_add(1, Ordering::AcqRel);
        let processed = Epoch {
            outbox: Arc::new(outbox),
            changes,
            events,
            traced,
        };
        let waiting = Instant::now();
        let handed_over = sender.blocking_send(processed);
        self.metrics
            .processing_wait
            .with_label_values(&["delivery"])
            .inc_by(waiting.elapsed().as_secs_f64());
        if handed_over.is_err() {
            // The delivery task ended with an error, which `run` reports; this epoch's
            // records are processed again on the next start.
            bail!("stopping: the delivery of epochs stopped");
        }
        *epoch += 1;
        Ok(())
    }

    /// Applies an assignment change from the group (see [`Handed`]).
    fn change_assignment(
        &mut self,
        change: Handed,
        sender: &tokio::sync::mpsc::Sender<Epoch>,
        in_flight: &EpochsInFlight,
    ) -> anyhow::Result<()> {
        match change {
            Handed::Records(_) | Handed::Advance { .. } | Handed::Written => {
                unreachable!("records, advances and written epochs are not a change")
            }
            Handed::Revoked { slots, done } => {
                // Every epoch with records of these partitions is delivered before they go.
                while in_flight.in_flight.load(Ordering::Acquire) > 0 {
                    if sender.is_closed() {
                        bail!("stopping: the delivery of epochs stopped");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                for i in slots {
                    let slot = &mut self.slots[i];
                    // The checkpoint keeps its state: a warm copy if it comes back.
                    if slot.engine.take().is_some() {
                        self.metrics
                            .consumer_lag
                            .with_label_values(&[&slot.topic, &slot.partition.to_string()])
                            .set(0);
                    }
                }
                let _ = done.send(());
            }
            Handed::Assigned {
                partitions,
                generation,
            } => {
                for (i, committed) in partitions {
                    let slot = &self.slots[i];
                    let (engine, from, unconfirmed_local) = self.restorer.restore(
                        &self.config,
                        &self.metrics,
                        (&slot.topic, slot.partition),
                        committed,
                    )?;
                    self.metrics.restores.with_label_values(&[from]).inc();
                    tracing::info!(
                        partition = format!("{}/{}", slot.topic, slot.partition).as_str(),
                        from,
                        at = engine.next_offset(),
                        entities = engine.entity_count(),
                        "taking over the partition"
                    );
                    self.input.push_change(SlotChange::Restored {
                        slot: i,
                        generation,
                        clock: engine.clock(),
                        delay: engine.watermark_delay(),
                    });
                    let slot = &mut self.slots[i];
                    slot.resumed_at = engine.next_offset();
                    slot.unconfirmed_local = unconfirmed_local;
                    slot.generation = generation;
                    slot.engine = Some(engine);
                }
            }
        }
        Ok(())
    }
}

/// Drains what changed in `engine` since its last drain into `into`.
fn drain_changes(engine: &mut PartitionEngine, into: &mut Vec<OutboxUpdate>) {
    into.extend(
        engine
            .drain_view_updates()
            .into_iter()
            .map(|u| OutboxUpdate {
                view: u.update.view,
                entity: u.update.entity,
                version: u.update.version,
                event_time_ms: u.update.event_time_ms,
                values: u.update.values,
                windows: u.windows,
            }),
    );
}

/// With every change published: drains `engine` into `earlier` when its clock is about to
/// move on to `to`, so each change goes out with the event time it was made at.
fn drain_before_clock_moves(
    engine: &mut PartitionEngine,
    to: i64,
    earlier: &mut Vec<OutboxUpdate>,
) {
    if engine.clock().is_some_and(|clock| to > clock) {
        drain_changes(engine, earlier);
    }
}

/// Splits an epoch's changes, `earlier` (drained within it) then `last` (drained at its
/// end), into the latest of each (view, entity), which Redis receives, and the ones a later
/// change of the same pair supersedes; both keep their order.
fn latest_of_each(
    earlier: Vec<OutboxUpdate>,
    last: Vec<OutboxUpdate>,
) -> (Vec<OutboxUpdate>, Vec<OutboxUpdate>) {
    if earlier.is_empty() {
        return (last, Vec::new());
    }
    let mut seen: HashSet<(String, String)> = HashSet::with_capacity(last.len());
    let (mut latest, mut superseded) = (Vec::new(), Vec::new());
    for u in earlier.into_iter().chain(last).rev() {
        if seen.insert((u.view.clone(), u.entity.clone())) {
            latest.push(u);
        } else {
            superseded.push(u);
        }
    }
    latest.reverse();
    superseded.reverse();
    (latest, superseded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(entity: &str, version: u64) -> OutboxUpdate {
        OutboxUpdate {
            view: "v".into(),
            entity: entity.into(),
            version,
            event_time_ms: version as i64,
            values: Default::default(),
            windows: Vec::new(),
        }
    }

    fn versions(updates: &[OutboxUpdate]) -> Vec<(&str, u64)> {
        updates
            .iter()
            .map(|u| (u.entity.as_str(), u.version))
            .collect()
    }

    #[test]
    fn redis_gets_the_latest_change_of_each_pair_and_the_topic_every_change_in_order() {
        let earlier = vec![
            change("a", 1),
            change("b", 2),
            change("a", 3),
            change("c", 4),
        ];
        let last = vec![change("a", 5), change("d", 6)];
        let (latest, superseded) = latest_of_each(earlier, last);
        assert_eq!(versions(&latest), [("b", 2), ("c", 4), ("a", 5), ("d", 6)]);
        assert_eq!(versions(&superseded), [("a", 1), ("a", 3)]);
        // Publishing each epoch's values: nothing is superseded.
        let (latest, superseded) = latest_of_each(Vec::new(), vec![change("a", 5)]);
        assert_eq!(versions(&latest), [("a", 5)]);
        assert!(superseded.is_empty());
    }
}
