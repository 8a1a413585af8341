//! Reading history from the source topics: each partition from the offset of the start
//! time to its end as the backfill began, in batches, decoded on a reading thread while
//! the calling thread puts the events through the engines.

use super::*;

/// The views' source topics at a broker.
pub(super) struct KafkaInput<'a> {
    pub(super) brokers: &'a str,
    pub(super) registry: &'a freshet_avro::Registry,
}

impl KafkaInput<'_> {
    pub(super) async fn read(
        &self,
        defs: &Definitions,
        views: &Arc<Vec<CompiledView>>,
        mut feeder: Feeder,
        observer: &mut dyn LaneObserver,
        progress: &mut dyn FnMut(Progress),
        stop: &AtomicBool,
    ) -> Result<(Vec<Lane>, InputStats), BackfillError> {
        let (brokers, registry) = (self.brokers, self.registry);
        let mut topics: Vec<&CompiledView> = views.iter().collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        topics.dedup_by(|a, b| a.topic == b.topic);
        let mut lanes = Vec::new();
        let mut reading = Reading {
            position: 0,
            total: 0,
            last_progress: Instant::now(),
        };
        for view in topics {
            let source = source_of_topic(defs, &view.topic);
            let mut topic = TopicInput {
                brokers,
                topic: &view.topic,
                decoder: EventDecoder::new(
                    WireDecoder::new(registry, source.schema.avro.clone()),
                    &view.entity_key_field,
                    &view.event_time_field,
                ),
                delay_ms: view.watermark_delay_ms,
            };
            let topic_lanes = topic
                .read(views, &mut feeder, observer, &mut reading, progress, stop)
                .await?;
            lanes.extend(topic_lanes);
        }
        progress(Progress {
            events: feeder.stats.used,
            position: reading.position,
            total: reading.total.max(reading.position),
        });
        Ok((lanes, feeder.stats))
    }
}

/// Progress over all topics.
struct Reading {
    position: u64,
    total: u64,
    last_progress: Instant,
}

/// One source topic to read.
struct TopicInput<'a> {
    brokers: &'a str,
    topic: &'a str,
    decoder: EventDecoder,
    delay_ms: i64,
}

impl TopicInput<'_> {
    fn kafka_error(&self, context: String) -> impl FnOnce(KafkaError) -> BackfillError {
        let brokers = self.brokers.to_string();
        move |source: KafkaError| BackfillError::Kafka {
            brokers,
            context,
            reason: source.to_string(),
        }
    }

    fn consumer(&self, isolation: &str) -> Result<BaseConsumer<QuietEof>, BackfillError> {
        let mut config = freshet_kafka::client_config();
        config
            .set("bootstrap.servers", self.brokers)
            .set("group.id", "freshet-backfill")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            // The end of a partition is where its fetches report no more records:
            // tansu's ListOffsets cannot tell a partition's end (it answers 1).
            .set("enable.partition.eof", "true");
        freshet_kafka::keep_fetching(&mut config)
            .create_with_context(QuietEof)
            .map_err(self.kafka_error("cannot create a consumer".into()))
    }

    /// Reads every partition from its start offset until it reports its end, feeding
    /// each record to its partition's engine.
    async fn read(
        &mut self,
        views: &Arc<Vec<CompiledView>>,
        feeder: &mut Feeder,
        observer: &mut dyn LaneObserver,
        reading: &mut Reading,
        progress: &mut dyn FnMut(Progress),
        stop: &AtomicBool,
    ) -> Result<Vec<Lane>, BackfillError> {
        let topic = self.topic;
        // Offsets for times and partition ends (a hint for progress only) from a
        // read_uncommitted client; records from a read_committed one, as live.
        let offsets = self.consumer("read_uncommitted")?;
        let consumer = self.consumer("read_committed")?;
        let partitions = partition_count(&offsets, self.brokers, topic)?;
        let starts = start_offsets(&offsets, topic, partitions, feeder.from_ms)?;
        let mut assignment = TopicPartitionList::new();
        let mut lanes = Vec::new();
        for (partition, start) in (0..partitions).zip(starts) {
            // A hint for progress only: brokers like tansu cannot tell a partition's end.
            if let Ok((low, high)) =
                offsets.fetch_watermarks(topic, partition, Duration::from_secs(10))
            {
                let from = match start {
                    Offset::Offset(o) => o,
                    Offset::End => high,
                    _ => low,
                };
                reading.total += (high - from).max(0) as u64;
            }
            assignment
                .add_partition_offset(topic, partition, start)
                .map_err(self.kafka_error("cannot assign partitions".into()))?;
            lanes.push(Lane {
                topic: topic.to_string(),
                partition,
                // The engine's offset is set by the first record it processes.
                engine: PartitionEngine::without_checkpoint(views.clone(), topic),
                max_time: None,
                done: false,
            });
        }
        tracing::info!(topic, partitions, "backfill reads the topic");
        let input = InputQueue::new(consumer);
        input
            .forwarder()
            .forward(input.consumer(), &assignment)
            .map_err(|e| BackfillError::Kafka {
                brokers: self.brokers.to_string(),
                context: "cannot read the partitions in batches".into(),
                reason: e.to_string(),
            })?;
        input
            .consumer()
            .assign(&assignment)
            .map_err(self.kafka_error("cannot assign partitions".into()))?;

        // A thread of its own reads and decodes while this one puts the events through
        // the engines: on two cores that doubled a recomputation's rate (reading and
        // decoding take about as long as aggregating).
        let done: Vec<AtomicBool> = lanes.iter().map(|_| AtomicBool::new(false)).collect();
        let quit = AtomicBool::new(false);
        let (out, read) = std::sync::mpsc::sync_channel(HANDOVER_DEPTH);
        let (used_out, used) = std::sync::mpsc::channel();
        let reader = PartitionReader {
            input,
            decoder: &mut self.decoder,
            topic,
            total: reading.total,
            done: &done,
            quit: &quit,
            stop,
        };
        std::thread::scope(|scope| {
            scope.spawn(move || reader.run(out, used));
            let fed = (|| {
                while lanes.iter().any(|l| !l.done) {
                    if stop.load(Ordering::Relaxed) {
                        return Err(BackfillError::Interrupted);
                    }
                    if reading.last_progress.elapsed() >= PROGRESS_EVERY {
                        reading.last_progress = Instant::now();
                        progress(Progress {
                            events: feeder.stats.used,
                            position: reading.position,
                            total: reading.total,
                        });
                    }
                    let mut batch = match read.recv_timeout(Duration::from_millis(100)) {
                        Ok(batch) => batch?,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => {
                            return Err(BackfillError::Stalled {
                                remaining: reading.total.saturating_sub(reading.position),
                                open: open_lanes(&lanes),
                            })
                        }
                    };
                    for record in batch.drain(..) {
                        let (partition, offset, event) = match record {
                            Fetched::Record {
                                partition,
                                offset,
                                event,
                            } => (partition, offset, event),
                            Fetched::End { partition } => {
                                if let Some(lane) = lanes.get_mut(partition as usize) {
                                    lane.done = true;
                                }
                                continue;
                            }
                        };
                        let Some(lane) = lanes.get_mut(partition as usize) else {
                            continue;
                        };
                        if lane.done {
                            continue;
                        }
                        reading.position += 1;
                        feeder.feed(lane, offset, event.as_ref(), self.delay_ms, observer);
                        if lane.done {
                            // Past `--to`: the reader stops fetching what would only be
                            // skipped.
                            done[partition as usize].store(true, Ordering::Relaxed);
                        }
                    }
                    // Back to the reader, which frees the events on the thread that made
                    // them and fills the batch again.
                    let _ = used_out.send(batch);
                }
                Ok(())
            })();
            quit.store(true, Ordering::Relaxed);
            fed
        })?;
        Ok(lanes)
    }
}

/// Batches of records the reader hands over before it waits for the engines: enough
/// to keep reading while they work through a burst.
const HANDOVER_DEPTH: usize = 16;
/// Records read (and handed over) at a time.
const READ_BATCH: usize = 2048;

/// What the reading thread hands over, in each partition's order.
enum Fetched {
    /// A record and its event (`None`: the record is not a readable event).
    Record {
        partition: i32,
        offset: i64,
        event: Option<Event>,
    },
    /// The partition's end: its fetches report no more records.
    End { partition: i32 },
}

/// The reading thread of one topic: reads its partitions a batch at a time and decodes
/// each record.
struct PartitionReader<'a> {
    input: InputQueue<QuietEof>,
    decoder: &'a mut EventDecoder,
    topic: &'a str,
    /// Records expected (a hint), for the error of a stalled read.
    total: u64,
    /// Partitions the engines need no more of (set by the feeding thread).
    done: &'a [AtomicBool],
    /// Set when the feeding thread stops taking batches.
    quit: &'a AtomicBool,
    stop: &'a AtomicBool,
}

impl PartitionReader<'_> {
    fn run(
        mut self,
        out: std::sync::mpsc::SyncSender<Result<Vec<Fetched>, BackfillError>>,
        used: std::sync::mpsc::Receiver<Vec<Fetched>>,
    ) {
        if let Err(e) = self.read(&out, &used) {
            let _ = out.send(Err(e));
        }
    }

    fn read(
        &mut self,
        out: &std::sync::mpsc::SyncSender<Result<Vec<Fetched>, BackfillError>>,
        used: &std::sync::mpsc::Receiver<Vec<Fetched>>,
    ) -> Result<(), BackfillError> {
        let topic = self.topic;
        // Decodes that need the registry run on a runtime of this thread's own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackfillError::Kafka {
                brokers: String::new(),
                context: "cannot start the reading thread's runtime".into(),
                reason: e.to_string(),
            })?;
        let _context = runtime.enter();
        let partitions = self.done.len();
        let mut ended = vec![false; partitions];
        let mut paused = vec![false; partitions];
        let (mut position, mut last_record) = (0u64, Instant::now());
        loop {
            let quitting =
                || self.quit.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed);
            if quitting() {
                return Ok(());
            }
            for (p, done) in self.done.iter().enumerate() {
                if done.load(Ordering::Relaxed) && !paused[p] {
                    paused[p] = true;
                    let mut partition = TopicPartitionList::new();
                    partition.add_partition(topic, p as i32);
                    let _ = self.input.consumer().pause(&partition);
                }
            }
            if (0..partitions).all(|p| ended[p] || paused[p]) {
                return Ok(());
            }
            let _ = self
                .input
                .serve_events(|e| tracing::warn!(topic, error = %e, "consumer error"));
            if self.input.read(Duration::from_millis(100), READ_BATCH) == 0 {
                if last_record.elapsed() > STALL_TIMEOUT {
                    let open = (0..partitions)
                        .filter(|&p| !ended[p] && !paused[p])
                        .map(|p| format!("{topic}/{p}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(BackfillError::Stalled {
                        remaining: self.total.saturating_sub(position),
                        open,
                    });
                }
                continue;
            }
            last_record = Instant::now();
            let mut batch = used
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(READ_BATCH));
            for record in self.input.records() {
                let partition = record.partition();
                let Some(p) = usize::try_from(partition).ok().filter(|&p| p < partitions) else {
                    continue;
                };
                match record.error() {
                    None => {}
                    Some(RDKafkaErrorCode::PartitionEOF) => {
                        ended[p] = true;
                        batch.push(Fetched::End { partition });
                        continue;
                    }
                    Some(code) => {
                        tracing::warn!(topic, partition, error = %KafkaError::MessageConsumption(code), "consumer error");
                        continue;
                    }
                }
                if paused[p] {
                    continue;
                }
                position += 1;
                let mut backoff = REGISTRY_RETRY_FIRST;
                let event = loop {
                    match self
                        .decoder
                        .decode_now(record.payload(), |decode| runtime.block_on(decode))
                    {
                        Ok(event) => break Some(event),
                        // The registry could not be asked: the record may be sound, so
                        // wait for it rather than leave its event out.
                        Err(e) if e.is_transient() => {
                            if quitting() {
                                return Ok(());
                            }
                            tracing::warn!(
                                topic,
                                partition,
                                offset = record.offset(),
                                retry_in_ms = backoff.as_millis() as u64,
                                error = %e,
                                "the schema registry is unavailable; waiting to read this record"
                            );
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(REGISTRY_RETRY_MAX);
                            last_record = Instant::now();
                        }
                        Err(_) => break None,
                    }
                };
                batch.push(Fetched::Record {
                    partition,
                    offset: record.offset(),
                    event,
                });
            }
            if out.send(Ok(batch)).is_err() {
                return Ok(());
            }
        }
    }
}

fn partition_count(
    consumer: &BaseConsumer<impl ConsumerContext>,
    brokers: &str,
    topic: &str,
) -> Result<i32, BackfillError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| BackfillError::Kafka {
            brokers: brokers.into(),
            context: format!("cannot read the partitions of {topic}"),
            reason: source.to_string(),
        })?;
    let partitions = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len() as i32);
    if partitions == 0 {
        return Err(BackfillError::NoTopic {
            topic: topic.into(),
            brokers: brokers.into(),
        });
    }
    Ok(partitions)
}

/// How many partitions `topic` has at `brokers` (a file backfill splits events the same
/// way).
pub fn topic_partitions(brokers: &str, topic: &str) -> Result<i32, BackfillError> {
    let consumer: BaseConsumer = freshet_kafka::client_config()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .create()
        .map_err(|source| BackfillError::Kafka {
            brokers: brokers.into(),
            context: "cannot create a client".into(),
            reason: source.to_string(),
        })?;
    partition_count(&consumer, brokers, topic)
}

/// Where to start reading each partition: the first offset whose record timestamp is at
/// or after `from_ms` (the end when there is none). Producers stamp records no earlier
/// than their events happen, so no event at or after `from_ms` comes before it. Without a
/// start time, or when the broker cannot answer, every partition is read from its
/// beginning (events before the start are skipped by their event time either way).
fn start_offsets(
    consumer: &BaseConsumer<impl ConsumerContext>,
    topic: &str,
    partitions: i32,
    from_ms: i64,
) -> Result<Vec<Offset>, BackfillError> {
    let beginning = vec![Offset::Beginning; partitions as usize];
    if from_ms == i64::MIN {
        return Ok(beginning);
    }
    let mut query = TopicPartitionList::new();
    for p in 0..partitions {
        query
            .add_partition_offset(topic, p, Offset::Offset(from_ms))
            .expect("a valid offset");
    }
    match consumer.offsets_for_times(query, Duration::from_secs(10)) {
        Ok(found) => Ok((0..partitions)
            .map(
                |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                    // End: no record stamped at or after the start, nothing to read.
                    Some(offset @ (Offset::Offset(_) | Offset::End)) => offset,
                    _ => Offset::Beginning,
                },
            )
            .collect()),
        Err(e) => {
            tracing::warn!(topic, error = %e, "the broker cannot look up offsets by time; reading from the beginning");
            Ok(beginning)
        }
    }
}
