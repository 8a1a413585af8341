//! The input records, read from librdkafka a batch at a time.
//!
//! `BaseConsumer::poll` returns one record per call, and each call pops the consumer's
//! queue under its lock, wraps the record in an event behind a fresh `Arc` and reads the
//! clock: about a tenth of the processor's CPU in a catch-up, more than its engine's
//! busiest function. Here the assigned partitions forward their records to one queue of
//! the processor's own, read with `rd_kafka_consume_batch_queue`, which hands out what is
//! waiting (up to a limit) in one call.
//!
//! The consumer's own queue keeps everything else (statistics, client errors); it is
//! served by polling the consumer between reads ([`InputQueue::serve_events`]).
//!
//! Partitions are forwarded *before* they are assigned. librdkafka keeps a forwarding the
//! application set when it starts fetching a partition (the queue is flagged
//! `RD_KAFKA_Q_F_FWD_APP`), so no record of an input partition ever reaches the
//! consumer's queue, and each partition's records arrive in offset order, as with `poll`.

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers};
use rdkafka::TopicPartitionList;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum InputQueueError {
    #[error("librdkafka has no queue for {topic}/{partition}")]
    NoPartition { topic: String, partition: i32 },
    #[error("a record of {topic}/{partition} reached the consumer's own queue, which would reorder its partition")]
    RecordOnConsumerQueue { topic: String, partition: i32 },
}

/// A consumer whose assigned partitions are read in batches.
pub struct InputQueue<C: ConsumerContext + 'static> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The records of the last read, owned until the next read (or drop) releases them.
    held: Vec<*mut rdsys::rd_kafka_message_t>,
    /// Dropped after `queue` and `held` are released (see `Drop`).
    consumer: BaseConsumer<C>,
}

// The queue and the records are librdkafka objects owned by this value alone; librdkafka
// allows using them from any thread, one at a time, which `&mut self` ensures.
unsafe impl<C: ConsumerContext + 'static> Send for InputQueue<C> {}

impl<C: ConsumerContext + 'static> InputQueue<C> {
    /// A queue of its own for `consumer`'s partitions, which are forwarded to it as they
    /// are assigned ([`PartitionForwarder::forward`], from the group's rebalance callback).
    pub fn new(consumer: BaseConsumer<C>) -> Self {
        let client = consumer.client().native_ptr();
        // SAFETY: `client` is the live consumer's handle; the new queue is destroyed in
        // `drop`, before the consumer.
        let queue = NonNull::new(unsafe { rdsys::rd_kafka_queue_new(client) })
            .expect("librdkafka allocates a queue");
        Self {
            queue,
            held: Vec::new(),
            consumer,
        }
    }

    /// What forwards newly assigned partitions to this queue. It must not be used after the
    /// queue is dropped: the consumer's rebalance callback (which holds it) runs while the
    /// consumer lives, and the queue is dropped first only when the consumer closes, when
    /// partitions are revoked, never assigned.
    pub fn forwarder(&self) -> PartitionForwarder {
        PartitionForwarder { queue: self.queue }
    }

    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// Serves the consumer's own queue: statistics reach the context; client errors go
    /// to `on_error`.
    pub fn serve_events(
        &self,
        mut on_error: impl FnMut(rdkafka::error::KafkaError),
    ) -> Result<(), InputQueueError> {
        while let Some(event) = self.consumer.poll(Duration::ZERO) {
            match event {
                Ok(record) => {
                    use rdkafka::Message as _;
                    return Err(InputQueueError::RecordOnConsumerQueue {
                        topic: record.topic().to_string(),
                        partition: record.partition(),
                    });
                }
                Err(e) => on_error(e),
            }
        }
        Ok(())
    }

    /// Releases the records of the last read and reads up to `max` more: those waiting,
    /// or when none is, the first to arrive within `wait`. Returns how many it read.
    pub fn read(&mut self, wait: Duration, max: usize) -> usize {
        self.release();
        let mut read = self.read_waiting(0, max);
        if read == 0 && !wait.is_zero() {
            // A batch call waits until it has `max` records or the time is up; asking for
            // one hands over the first record as soon as it comes, as `poll` does.
            let wait_ms = wait.as_millis().try_into().unwrap_or(i32::MAX);
            read = self.read_waiting(wait_ms, 1);
        }
        read
    }

    fn read_waiting(&mut self, wait_ms: i32, max: usize) -> usize {
        self.held.reserve(max);
        // SAFETY: librdkafka writes at most `max` message pointers into the reserved
        // space and returns how many (or -1); they are owned until `release`.
        unsafe {
            let read = rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                wait_ms,
                self.held.as_mut_ptr(),
                max,
            );
            let read = usize::try_from(read).unwrap_or(0);
            self.held.set_len(read);
            read
        }
    }

    /// The records of the last read, in the order they were read.
    pub fn records(&self) -> impl Iterator<Item = InputRecord<'_>> {
        self.held.iter().map(|&message| {
            // SAFETY: held messages stay valid until `release`, which needs `&mut self`.
            InputRecord(unsafe { &*message })
        })
    }

    fn release(&mut self) {
        for message in self.held.drain(..) {
            // SAFETY: each held message is released once; none is referenced after.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
    }
}

impl<C: ConsumerContext + 'static> Drop for InputQueue<C> {
    fn drop(&mut self) {
        self.release();
        // SAFETY: the consumer (dropped after this) still lives; nothing uses the queue.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Forwards partitions' records to an [`InputQueue`] (see [`InputQueue::forwarder`]).
#[derive(Clone, Copy)]
pub struct PartitionForwarder {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
}

// A queue handle may be used from any thread; see `InputQueue::forwarder` for its lifetime.
unsafe impl Send for PartitionForwarder {}
unsafe impl Sync for PartitionForwarder {}

impl PartitionForwarder {
    /// Forwards the records of `partitions` of `consumer` to the queue; call it before
    /// they are assigned.
    pub fn forward<C: ConsumerContext + 'static>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &TopicPartitionList,
    ) -> Result<(), InputQueueError> {
        let client = consumer.client().native_ptr();
        for element in partitions.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let no_partition = || InputQueueError::NoPartition {
                topic: topic.to_string(),
                partition,
            };
            let name = CString::new(topic).map_err(|_| no_partition())?;
            // SAFETY: the partition's queue handle is released right after forwarding,
            // which only drops this reference to it; the target queue lives (see
            // `InputQueue::forwarder`).
            unsafe {
                let from = rdsys::rd_kafka_queue_get_partition(client, name.as_ptr(), partition);
                if from.is_null() {
                    return Err(no_partition());
                }
                rdsys::rd_kafka_queue_forward(from, self.queue.as_ptr());
                rdsys::rd_kafka_queue_destroy(from);
            }
        }
        Ok(())
    }
}

/// One record of a read, or the error librdkafka reports in its place.
pub struct InputRecord<'a>(&'a rdsys::rd_kafka_message_t);

impl<'a> InputRecord<'a> {
    /// The consumer error this record stands for (an offset out of range, say).
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.0.err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| RDKafkaErrorCode::from(err))
    }

    pub fn topic(&self) -> &'a str {
        if self.0.rkt.is_null() {
            return "";
        }
        // SAFETY: librdkafka gives the topic's name as a C string that lives as long as
        // the record's topic handle.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.0.rkt)) }
            .to_str()
            .unwrap_or("")
    }

    pub fn partition(&self) -> i32 {
        self.0.partition
    }

    pub fn offset(&self) -> i64 {
        self.0.offset
    }

    pub fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.0.payload, self.0.len)
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        bytes(self.0.key, self.0.key_len)
    }

    pub fn headers(&self) -> Option<InputHeaders<'a>> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: librdkafka parses the headers into the message, which owns them.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.0, &mut headers) };
        (err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
            .then_some(InputHeaders(headers, std::marker::PhantomData))
    }
}

fn bytes<'a>(data: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: a record's key and payload are `len` bytes owned by the record.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data as *const u8, len) })
}

/// A record's headers.
pub struct InputHeaders<'a>(
    *mut rdsys::rd_kafka_headers_t,
    std::marker::PhantomData<&'a ()>,
);

impl Headers for InputHeaders<'_> {
    fn count(&self) -> usize {
        // SAFETY: the headers live as long as their record.
        unsafe { rdsys::rd_kafka_header_cnt(self.0) }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: as in `count`; librdkafka returns pointers into the record's headers.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(self.0, idx, &mut name, &mut value, &mut size)
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: a header's name is a C string and its value `size` bytes, both owned by
        // the headers.
        let key = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
        Some(Header { key, value })
    }
}
