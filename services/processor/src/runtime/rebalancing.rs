//! The group's rebalances: the input consumer's context, whose rebalance callback (on the
//! reading thread) takes assigned partitions at the group's committed offsets and gives
//! revoked ones up only once their epochs are delivered, and what it tells the reading
//! and processing threads.

use super::*;

/// The input consumer's context: keeps each partition's high watermark as librdkafka's
/// statistics report it, which come from fetch responses (asking the broker with
/// ListOffsets instead does not work on tansu, which answers 1 for any partition), and
/// handles the group's rebalances ([`Rebalancing`]).
#[derive(Default)]
pub struct InputContext {
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// The consumer's group metadata as of the last rebalance, for the transactions.
    group: Mutex<Option<Arc<ConsumerGroupMetadata>>>,
    rebalance: Option<Rebalancing>,
}

/// What the reading thread hands the processing thread, in order.
pub(super) enum Handed {
    Records(Vec<ReadRecord>),
    /// The group assigned these partitions (slot, the group's committed offset), under
    /// `generation`: the reading thread tags their records with it from now on.
    Assigned {
        partitions: Vec<(usize, Option<i64>)>,
        generation: u64,
    },
    /// The group takes these partitions away: the epoch in progress ends, and once every
    /// epoch is delivered their engines go and `done` is told.
    Revoked {
        slots: Vec<usize>,
        done: std::sync::mpsc::Sender<()>,
    },
    /// The partition of this slot, assigned under `generation`, is quiet (see
    /// [`super::reading::IdleWatch`]): its clock moves on to `clock`. In order with the
    /// records: every record read before it is processed before it.
    Advance {
        slot: usize,
        generation: u64,
        clock: i64,
    },
    /// An epoch is in Redis (sent by the delivery): the processing thread, waiting for
    /// records, may cut the next epoch now (group commit) instead of when more come.
    Written,
}

/// A change of the assignment for the reading thread to apply.
pub(super) enum SlotChange {
    /// Assigned under a generation.
    Assigned {
        slot: usize,
        generation: u64,
    },
    Revoked {
        slot: usize,
    },
    /// The processing thread restored the partition assigned under `generation`: its
    /// engine's clock and watermark delay, for the reading thread's lateness test.
    Restored {
        slot: usize,
        generation: u64,
        clock: Option<i64>,
        delay: i64,
    },
}

/// The group's rebalances, handled in librdkafka's rebalance callback (on the reading
/// thread, inside its poll): an assignment is forwarded to the input queue at the group's
/// committed offsets and announced to the processing thread, which restores the
/// partitions' state before it takes their records; a revocation waits until the
/// processing thread has delivered every epoch that holds the partitions' records, so two
/// instances never both write a partition's epoch.
pub struct Rebalancing {
    pub(super) slot_of: HashMap<(String, i32), usize>,
    pub(super) handover: std::sync::mpsc::SyncSender<Handed>,
    pub(super) forwarder: std::sync::OnceLock<freshet_kafka::input_queue::PartitionForwarder>,
    /// The generation of the last assignment (records are tagged with theirs).
    pub(super) last_generation: AtomicU64,
    /// For the reading thread, applied after each poll.
    pub(super) changes: Mutex<Vec<SlotChange>>,
    /// Why the consumer cannot go on (the group's offsets could not be read).
    pub(super) fatal: Mutex<Option<String>>,
    pub(super) metrics: ProcessorMetrics,
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

impl ConsumerContext for InputContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let Some(rebalancing) = &self.rebalance else {
            return;
        };
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = rebalancing.assign(consumer, partitions);
                let done = if cooperative {
                    consumer.incremental_assign(&assigned)
                } else {
                    consumer.assign(&assigned)
                };
                done.map_err(|e| format!("cannot take the assigned partitions: {e}"))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.note_group(consumer);
                rebalancing.revoke(partitions);
                let done = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                done.map_err(|e| format!("cannot give the revoked partitions up: {e}"))
            }
            other => {
                tracing::warn!(error = ?other, "the group's rebalance failed");
                let _ = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                Ok(())
            }
        };
        self.note_group(consumer);
        if let Err(e) = result {
            rebalancing.fail(e);
        }
    }
}

impl Rebalancing {
    /// Announces newly assigned partitions to the processing thread and returns them at the
    /// group's committed offsets, forwarded to the input queue, ready to assign.
    fn assign(
        &self,
        consumer: &BaseConsumer<InputContext>,
        partitions: &TopicPartitionList,
    ) -> TopicPartitionList {
        let mut committed = None;
        for attempt in 1..=5 {
            match consumer.committed_offsets(partitions.clone(), Duration::from_secs(10)) {
                Ok(list) => {
                    committed = Some(list);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot read the group's committed offsets; retrying")
                }
            }
        }
        let Some(committed) = committed else {
            self.fail(
                "cannot read the group's committed offsets of the assigned partitions".into(),
            );
            return TopicPartitionList::new();
        };
        let generation = self.last_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut assigned = TopicPartitionList::new();
        let mut announced = Vec::new();
        let mut changes = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(&slot) = self.slot_of.get(&(topic.to_string(), partition)) else {
                tracing::warn!(topic, partition, "assigned a partition the processor did not find at start (added since?); it is not read until a restart");
                continue;
            };
            let offset = match element.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if assigned
                .add_partition_offset(topic, partition, Offset::Offset(offset.unwrap_or(0)))
                .is_err()
            {
                continue;
            }
            announced.push((slot, offset));
            changes.push(SlotChange::Assigned { slot, generation });
            self.metrics
                .partition_assigned
                .with_label_values(&[topic, &partition.to_string()])
                .set(1);
        }
        if announced.is_empty() {
            return assigned;
        }
        if let Some(forwarder) = self.forwarder.get() {
            if let Err(e) = forwarder.forward(consumer, &assigned) {
                self.fail(e.to_string());
                return TopicPartitionList::new();
            }
        }
        let described = describe(&assigned);
        tracing::info!(partitions = described.as_str(), "assigned by the group");
        self.metrics
            .rebalances
            .with_label_values(&["assigned"])
            .inc();
        self.metrics.assigned_partitions.add(announced.len() as i64);
        self.changes.lock().expect("changes").extend(changes);
        // The processing thread may have stopped; then nothing is read any more either.
        let _ = self.handover.send(Handed::Assigned {
            partitions: announced,
            generation,
        });
        assigned
    }

    /// Waits until the processing thread has delivered everything of the revoked
    /// partitions (see [`Handed::Revoked`]).
    fn revoke(&self, partitions: &TopicPartitionList) {
        let mut slots = Vec::new();
        for element in partitions.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            if let Some(&slot) = self.slot_of.get(&(topic.to_string(), partition)) {
                slots.push(slot);
                self.metrics
                    .partition_assigned
                    .with_label_values(&[topic, &partition.to_string()])
                    .set(0);
            }
        }
        if slots.is_empty() {
            return;
        }
        let described = describe(partitions);
        tracing::info!(
            partitions = described.as_str(),
            "revoked by the group; delivering what was processed of them"
        );
        let started = Instant::now();
        let (done, delivered) = std::sync::mpsc::channel();
        if self
            .handover
            .send(Handed::Revoked {
                slots: slots.clone(),
                done,
            })
            .is_ok()
        {
            // An error: the processing thread stopped (and with it, delivery).
            let _ = delivered.recv();
        }
        tracing::info!(
            partitions = described.as_str(),
            waited_ms = started.elapsed().as_millis() as u64,
            "gave the revoked partitions up"
        );
        self.metrics
            .rebalances
            .with_label_values(&["revoked"])
            .inc();
        self.metrics.assigned_partitions.sub(slots.len() as i64);
        self.changes
            .lock()
            .expect("changes")
            .extend(slots.into_iter().map(|slot| SlotChange::Revoked { slot }));
    }

    fn fail(&self, reason: String) {
        tracing::error!(reason = reason.as_str(), "the consumer cannot go on");
        self.fatal.lock().expect("fatal").get_or_insert(reason);
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{} at {o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl InputContext {
    /// Keeps the group's current metadata for the next transaction's offsets, unless the
    /// consumer is closing: then no transaction follows, and asking for it waits forever
    /// on the closing group handler (a processor hung on SIGTERM, its last revocation
    /// asking from inside the consumer's close).
    fn note_group(&self, consumer: &BaseConsumer<Self>) {
        if !consumer.closed() {
            *self.group.lock().expect("group") = consumer.group_metadata().map(Arc::new);
        }
    }

    /// A context that handles the group's rebalances with `rebalancing`.
    pub(super) fn with_rebalancing(rebalancing: Rebalancing) -> Self {
        Self {
            rebalance: Some(rebalancing),
            ..Self::default()
        }
    }

    /// Sets up how assigned partitions reach the input queue, once it exists.
    pub(super) fn forward_to(&self, forwarder: freshet_kafka::input_queue::PartitionForwarder) {
        if let Some(rebalancing) = &self.rebalance {
            let _ = rebalancing.forwarder.set(forwarder);
        }
    }

    pub(super) fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .lock()
            .expect("watermarks")
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// The group metadata for a transaction's offsets: the generation of the last
    /// rebalance, so a fenced (zombie) instance's commit fails (KIP-447).
    pub(super) fn group_metadata(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.group.lock().expect("group").clone()
    }

    /// The assignment changes since the last call, for the reading thread.
    pub(super) fn take_changes(&self) -> Vec<SlotChange> {
        self.rebalance
            .as_ref()
            .map(|r| std::mem::take(&mut *r.changes.lock().expect("changes")))
            .unwrap_or_default()
    }

    /// A change for the reading thread from the processing thread.
    pub(super) fn push_change(&self, change: SlotChange) {
        if let Some(r) = &self.rebalance {
            r.changes.lock().expect("changes").push(change);
        }
    }

    /// Why the consumer cannot go on, if it cannot.
    pub(super) fn fatal(&self) -> Option<String> {
        self.rebalance
            .as_ref()
            .and_then(|r| r.fatal.lock().expect("fatal").clone())
    }
}

pub type InputConsumer = BaseConsumer<InputContext>;
