//! The reading thread: reads the input partitions in batches, decodes each record into an
//! event (or why it cannot be one), and hands batches to the processing thread. A record
//! whose writer schema cannot be fetched because the registry is unavailable makes its
//! partition wait ([`RegistryWait`]).

use super::*;

/// A record as the reading thread hands it to the processing thread: decoded, with what a
/// dead letter would need.
pub(super) struct ReadRecord {
    /// Index of the partition's slot.
    pub(super) engine: usize,
    /// The assignment it was read under.
    pub(super) generation: u64,
    pub(super) offset: i64,
    pub(super) event: Result<Event, DecodeError>,
    /// The span continuing the record's trace (with tracing on).
    pub(super) span: Option<SpanContext>,
    /// Key and value, kept when the record may become a dead letter (undecodable, or late
    /// with late events dead-lettered).
    pub(super) raw: Option<RawRecord>,
}

/// A record's key and value as read.
#[derive(Default)]
pub(super) struct RawRecord {
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
}

/// The reading thread: reads the input in batches and decodes, beside the processing
/// thread.
pub(super) struct Reader {
    pub(super) input: InputQueue<InputContext>,
    /// Per source topic (a list: there are few, and a record's topic is found by comparing
    /// names rather than hashing them).
    pub(super) inputs: Vec<TopicInput>,
    pub(super) trace_records: bool,
    pub(super) keep_late: bool,
    /// The error when a partition's offset is out of range.
    pub(super) out_of_range: String,
    /// Per slot (with `keep_late`, or an `idle_timeout`): a clock at least the engine's, to
    /// keep the bytes of the records that may be late.
    pub(super) late_checks: Vec<LateCheck>,
    /// Per slot: the assignment its records are read under (0: not assigned).
    pub(super) generations: Vec<u64>,
    pub(super) tracer: opentelemetry::global::BoxedTracer,
    pub(super) runtime: tokio::runtime::Handle,
    /// Per engine: the partition stands still until the registry answers.
    pub(super) registry_waits: Vec<Option<RegistryWait>>,
    pub(super) registry_unavailable: prometheus::IntGauge,
    /// Per slot: whether its partition is quiet, for sources with an `idle_timeout`.
    pub(super) idle: Vec<IdleWatch>,
    /// When the quiet partitions were last looked at.
    pub(super) idle_checked: Instant,
}

/// How often quiet partitions are looked at, and so how often a quiet partition's clock
/// moves on: windows close at most this much later than their time has come.
pub(super) const IDLE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Whether a partition is quiet, for a source with an `idle_timeout`: read to its end
/// (librdkafka's end-of-partition event, which comes after every record before it and
/// counts no transaction markers), with no record for the timeout since the last one read
/// (or since the partition was taken over). A quiet partition's clock then follows
/// processing time from its last record: the clock it had then, plus the time since
/// ([`Handed::Advance`], every [`IDLE_CHECK_EVERY`]), so its windows close when the
/// records would have closed them had events gone on. The reading thread decides this,
/// not the processing thread, so the advance is in order with the records and the
/// lateness test ([`LateCheck`]) moves with it.
#[derive(Default)]
pub(super) struct IdleWatch {
    /// The source's `idle_timeout`; `None`: never advance.
    pub(super) timeout: Option<Duration>,
    /// Read to the partition's end with nothing after.
    pub(super) at_end: bool,
    /// The partition's clock after its last record read, and when that record was read (or
    /// the partition restored).
    pub(super) anchor: Option<(i64, Instant)>,
    /// Its clock has moved on since that record.
    pub(super) advancing: bool,
}

/// A partition whose record at `offset` could not be decoded because the schema registry
/// could not be asked (unreachable, timed out, failing). The record may be sound, so it is
/// neither dead-lettered nor skipped: the partition is paused and, at `retry_at`, sought
/// back to `offset` and resumed, so the record is read again; records of the partition
/// read meanwhile (fetched before the pause) are dropped, and they come again after it.
/// Other partitions, and records of this one whose schema is known, are not held up by
/// the wait itself (the reading thread only asks the registry when a retry is due).
pub(super) struct RegistryWait {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    /// Sought back and resumed: the next record of the partition to take is `offset`.
    pub(super) resumed: bool,
}

/// The first pause before the registry is asked again; it doubles up to
/// [`RETRY_BACKOFF_MAX`].
pub(super) const REGISTRY_RETRY_FIRST: Duration = Duration::from_millis(250);

/// The reading thread's view of an engine's lateness test, to keep a record's bytes only
/// when it may become a dead letter (copying every record's cost the reading thread, and
/// the processing thread that freed them, ~5% of their time).
///
/// The clock is the largest event time the reading thread has seen on the partition,
/// starting from the engine's restored clock. The engine sees the same records in the same
/// order (or fewer, skipping ones it already processed), so its clock is never ahead of
/// this one, and every event it finds late (`time < clock - delay`) is found late here too.
/// Between an assignment and the restore of the partition's engine, the engine's clock is
/// not known yet: every record may be late.
pub(super) struct LateCheck {
    pub(super) clock: Option<i64>,
    pub(super) delay: i64,
    /// Whether `clock` starts from the engine's restored clock.
    pub(super) known: bool,
}

impl LateCheck {
    pub(super) fn may_be_late(&mut self, time: i64) -> bool {
        let clock = self.clock.map_or(time, |c| c.max(time));
        self.clock = Some(clock);
        !self.known || time < clock - self.delay
    }
}

/// A source topic as the reading thread sees it.
pub(super) struct TopicInput {
    pub(super) topic: String,
    pub(super) decoder: EventDecoder,
    /// By partition: the index of its engine.
    pub(super) engine_of: Vec<Option<usize>>,
}

impl TopicInput {
    /// The index of the partition's engine.
    pub(super) fn engine_of(&self, partition: i32) -> Option<usize> {
        let at = usize::try_from(partition).ok()?;
        self.engine_of.get(at).copied().flatten()
    }
}

/// Records per hand-over from the reading thread (fewer when no more are waiting).
pub(super) const READ_BATCH: usize = 2048;

/// About the payload bytes per hand-over at most: a batch of large records ends before
/// [`READ_BATCH`] (see [`BatchBytes`]).
pub(super) const READ_BATCH_BYTES: usize = 1 << 20;

/// Hand-overs the reading thread may be ahead of the processing thread by: up to 32,768
/// decoded records (~10 MB for this project's ~100-byte events), and about 16 MB of
/// payloads however large the records. The two threads share two cores with librdkafka,
/// the checkpoint, the broker and Redis, and the reading thread waits for a core a third
/// of the time. With 2 batches ahead the processing thread then ran out of records: it
/// waited for input 12-14% of a catch-up while the cores were ~10% idle. With 16 it waits
/// 2-6%, and the catch-up ratio to the bare consumer rose from a median of 0.49 to 0.54
/// (nine rounds each, alternating). 64 did no better.
pub(super) const HANDOVER_DEPTH: usize = 16;

impl Reader {
    /// Reads until `done` is set or the processing thread stops taking records; fails when
    /// the input cannot be read on from the checkpoint.
    pub(super) fn run(
        mut self,
        (out, used): Handover,
        done: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
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
            self.serve()?;
            let wait = if batch.is_empty() {
                POLL_WAIT
            } else {
                Duration::ZERO
            };
            if self.idle_checked.elapsed() >= IDLE_CHECK_EVERY {
                let advances = self.idle_advances();
                if !advances.is_empty() {
                    // The records read so far go first.
                    if !batch.is_empty()
                        && !self.hand_over(&out, take_batch(&mut batch, &mut bytes))?
                    {
                        return Ok(());
                    }
                    for advance in advances {
                        if !self.send(&out, advance)? {
                            return Ok(());
                        }
                    }
                }
            }
            let read = self.input.read(wait, bytes.room(batch.len()));
            // When the records were read, for the quiet partitions' clocks: once per read.
            let read_at = Instant::now();
            if read == 0 {
                if !batch.is_empty() && !self.hand_over(&out, take_batch(&mut batch, &mut bytes))? {
                    return Ok(());
                }
                continue;
            }
            for record in self.input.records() {
                match record.error() {
                    None => {}
                    Some(code) if is_gone(code) => bail!("{}", self.out_of_range),
                    Some(RDKafkaErrorCode::PartitionEOF) => {
                        if let Some(slot) = self.slot_of(record.topic(), record.partition()) {
                            self.idle[slot].at_end = true;
                        }
                        continue;
                    }
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
                let Some(engine) = input.engine_of(record.partition()) else {
                    continue;
                };
                let generation = self.generations[engine];
                if generation == 0 {
                    continue;
                }
                if let Some(wait) = &self.registry_waits[engine] {
                    if !wait.resumed || record.offset() != wait.offset {
                        // Fetched before the pause: it comes again after the record that
                        // waits.
                        continue;
                    }
                }
                let runtime = &self.runtime;
                let event = input
                    .decoder
                    .decode_now(record.payload(), |decode| runtime.block_on(decode));
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
                let idle = &mut self.idle[engine];
                let may_be_late = if self.keep_late || idle.timeout.is_some() {
                    // The clock is kept for quiet partitions too.
                    let check = &mut self.late_checks[engine];
                    let late = event.as_ref().is_ok_and(|e| check.may_be_late(e.time));
                    if idle.timeout.is_some() {
                        idle.at_end = false;
                        idle.advancing = false;
                        idle.anchor = check.clock.map(|c| (c, read_at));
                    }
                    self.keep_late && late
                } else {
                    false
                };
                let raw = (event.is_err() || may_be_late).then(|| RawRecord {
                    key: record.key().map(<[u8]>::to_vec),
                    payload: record.payload().map(<[u8]>::to_vec),
                });
                bytes.add(record.payload().map_or(0, <[u8]>::len));
                batch.push(ReadRecord {
                    engine,
                    generation,
                    offset: record.offset(),
                    event,
                    span,
                    raw,
                });
            }
            if bytes.is_full(batch.len())
                && !self.hand_over(&out, take_batch(&mut batch, &mut bytes))?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Reader {
    /// Serves the consumer's events (statistics, errors, the group's rebalances) and
    /// applies the assignment changes; fails when the input cannot be read on.
    fn serve(&mut self) -> anyhow::Result<()> {
        let mut gone = false;
        self.input.serve_events(|e| match e {
            KafkaError::MessageConsumption(code) if is_gone(code) => gone = true,
            e => tracing::warn!(error = %e, "consumer error"),
        })?;
        if gone {
            bail!("{}", self.out_of_range);
        }
        self.apply_assignment_changes()
    }

    /// Hands a batch to the processing thread; returns false when it stopped taking
    /// them.
    fn hand_over(
        &mut self,
        out: &std::sync::mpsc::SyncSender<Handed>,
        batch: Vec<ReadRecord>,
    ) -> anyhow::Result<bool> {
        self.send(out, Handed::Records(batch))
    }

    /// The clocks quiet partitions move on to now (see [`IdleWatch`]), which the lateness
    /// test takes at once: every record read from here on is judged against them.
    fn idle_advances(&mut self) -> Vec<Handed> {
        let now = Instant::now();
        self.idle_checked = now;
        let mut advances = Vec::new();
        for (slot, idle) in self.idle.iter_mut().enumerate() {
            let (Some(timeout), true, Some((clock, since))) =
                (idle.timeout, idle.at_end, idle.anchor)
            else {
                continue;
            };
            let check = &mut self.late_checks[slot];
            let generation = self.generations[slot];
            let quiet = now.saturating_duration_since(since);
            if generation == 0
                || !check.known
                || self.registry_waits[slot].is_some()
                || quiet < timeout
            {
                continue;
            }
            let to = clock.saturating_add(i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX));
            if check.clock.is_some_and(|c| c >= to) {
                continue;
            }
            check.clock = Some(to);
            if !idle.advancing {
                idle.advancing = true;
                let (topic, partition) = self
                    .inputs
                    .iter()
                    .find_map(|i| {
                        let p = i.engine_of.iter().position(|&e| e == Some(slot))?;
                        Some((i.topic.as_str(), p))
                    })
                    .unwrap_or_default();
                tracing::info!(
                    topic,
                    partition,
                    quiet_ms = quiet.as_millis() as u64,
                    clock = to,
                    "the partition is quiet: its clock follows processing time until a record comes"
                );
            }
            advances.push(Handed::Advance {
                slot,
                generation,
                clock: to,
            });
        }
        advances
    }

    /// The slot of a partition of a source topic.
    fn slot_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.inputs
            .iter()
            .find(|i| i.topic == topic)?
            .engine_of(partition)
    }

    /// Hands records or an advance to the processing thread; returns false when it stopped
    /// taking them. While its queue is full (it may be restoring a partition taken over)
    /// the consumer is still served, so the group does not take this instance for dead.
    fn send(
        &mut self,
        out: &std::sync::mpsc::SyncSender<Handed>,
        mut handed: Handed,
    ) -> anyhow::Result<bool> {
        use std::sync::mpsc::TrySendError;
        loop {
            match out.try_send(handed) {
                Ok(()) => return Ok(true),
                Err(TrySendError::Disconnected(_)) => return Ok(false),
                Err(TrySendError::Full(back)) => {
                    handed = back;
                    self.serve()?;
                    // 16 batches ahead, the processing thread has tens of milliseconds of work.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Applies what the group's rebalances and the processing thread's restores changed
    /// (see [`SlotChange`]); fails when the consumer cannot go on.
    pub(super) fn apply_assignment_changes(&mut self) -> anyhow::Result<()> {
        let context = self.input.consumer().context().clone();
        if let Some(reason) = context.fatal() {
            bail!("{reason}");
        }
        for change in context.take_changes() {
            match change {
                SlotChange::Assigned { slot, generation } => {
                    self.generations[slot] = generation;
                    self.idle[slot].at_end = false;
                    self.idle[slot].anchor = None;
                    self.late_checks[slot] = LateCheck {
                        clock: None,
                        delay: 0,
                        known: false,
                    };
                }
                SlotChange::Revoked { slot } => {
                    self.generations[slot] = 0;
                    if self.registry_waits[slot].take().is_some() {
                        self.registry_unavailable.dec();
                    }
                }
                SlotChange::Restored {
                    slot,
                    generation,
                    clock,
                    delay,
                } => {
                    if self.generations[slot] == generation {
                        let check = &mut self.late_checks[slot];
                        check.clock = check.clock.max(clock);
                        check.delay = delay;
                        check.known = true;
                        // A partition taken over is quiet from now on, if no record comes.
                        self.idle[slot].anchor = check.clock.map(|c| (c, Instant::now()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses a partition whose record could not be decoded because the registry could not
    /// be asked, to read it again later (see [`RegistryWait`]).
    pub(super) fn wait_for_registry(
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
    pub(super) fn retry_registry_waits(&mut self) {
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
pub(super) struct BatchBytes {
    /// Of the records in the batch being filled.
    pub(super) bytes: usize,
    /// The mean payload of the last batch handed over; 0 before the first.
    pub(super) mean: usize,
}

impl BatchBytes {
    pub(super) fn add(&mut self, payload: usize) {
        self.bytes += payload;
    }

    /// How many records the next read may bring into a batch of `records`: what keeps it
    /// within [`READ_BATCH`] records and, at the last batch's mean size, about
    /// [`READ_BATCH_BYTES`]; at least one.
    pub(super) fn room(&self, records: usize) -> usize {
        let by_count = READ_BATCH.saturating_sub(records);
        let by_bytes = match self.mean {
            0 => by_count,
            mean => READ_BATCH_BYTES.saturating_sub(self.bytes) / mean,
        };
        by_count.min(by_bytes).max(1)
    }

    pub(super) fn is_full(&self, records: usize) -> bool {
        records >= READ_BATCH || self.bytes >= READ_BATCH_BYTES
    }

    /// The batch of `records` was handed over: the next one starts empty.
    pub(super) fn handed_over(&mut self, records: usize) {
        if let Some(mean) = self.bytes.checked_div(records) {
            self.mean = mean.max(1);
        }
        self.bytes = 0;
    }
}

/// Whether a consumer error says the checkpoint's offset is not in the input.
pub(super) fn is_gone(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
    )
}

/// The reading thread's ends of its channels: batches of read records to the processing
/// thread, and the processed ones back.
pub(super) type Handover = (
    std::sync::mpsc::SyncSender<Handed>,
    std::sync::mpsc::Receiver<Vec<ReadRecord>>,
);

/// Takes the batch read so far, leaving an empty one with room for a whole batch: a
/// processed batch back from the processing thread when there is one, else a new one.
///
/// Processed records are dropped here, on the thread that allocated them: freed on the
/// processing thread, each event's strings went through the allocator's cross-thread
/// path, and each new batch's memory came fresh from the kernel, zeroed page by page
/// (grown from nothing, a batch was also copied eleven times on its way to 2,048 records).
pub(super) fn next_batch(
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
