//! The stream processor: turns the event stream into the features declared in
//! `features/`, keeps its state in RocksDB and delivers results exactly once.
//!
//! The engine itself (windowed aggregation, the event decoder) is the `freshet-engine`
//! library; backfill is `freshet-backfill`. This crate is the service around the engine:
//!
//! - [`changelog`]: each epoch's state changes in a Kafka topic, and a partition's state
//!   restored from it when this instance takes the partition over.
//! - [`checkpoint`]: RocksDB: offsets, clocks, entity states and the outbox, written per
//!   epoch in one synced batch.
//! - [`delivery`]: an epoch's outbox to Kafka (one transaction with the input offsets) and
//!   to Redis (versioned writes).
//! - [`runtime`]: the group's rebalances, restore and the epoch loop.
//! - [`metrics`]: the processor's Prometheus metrics.

pub mod changelog;
pub mod checkpoint;
pub mod delivery;
pub mod metrics;
pub mod runtime;
