//! The stream processor: turns the event stream into the features declared in
//! `features/`, keeps its state in RocksDB and delivers results exactly once.
//!
//! - [`engine`]: the windowed aggregation, pure and deterministic, per input partition.
//! - [`checkpoint`]: RocksDB: offsets, clocks, entity states and the outbox, written per
//!   epoch in one synced batch.
//! - [`delivery`]: an epoch's outbox to Kafka (one transaction with the input offsets) and
//!   to Redis (versioned writes).
//! - [`event_decoder`]: source records (Avro through the registry) to engine events.
//! - [`input_queue`]: the input partitions' records, read from librdkafka in batches.
//! - [`runtime`]: recovery and the epoch loop.
//! - [`metrics`]: the processor's Prometheus metrics.
//! - [`backfill`]: values for the past, from a topic's history or a file, through the same
//!   engine.

pub mod backfill;
pub mod checkpoint;
pub mod delivery;
pub mod engine;
pub mod event_decoder;
pub mod input_queue;
pub mod metrics;
pub mod runtime;
