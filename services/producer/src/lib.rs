//! The event producer: user behaviour, simulated or replayed, produced to Kafka as Avro.
//!
//! - [`event`]: the `UserEvent` record and the two schema versions it is written with.
//! - [`simulate`]: a seeded simulation of users (skewed activity, sessions, an action mix,
//!   purchase amounts, late and out-of-order event times). The same seed and start time
//!   give the same events, so a run can be repeated exactly.
//! - [`replay`]: events from a JSON Lines file instead.
//! - [`produce`]: encoding in the Confluent wire format through the registry, keyed by
//!   user, with a `traceparent` header, pacing, progress and a flush that loses nothing.
//! - [`metrics`]: the producer's Prometheus metrics.

pub mod event;
pub mod metrics;
pub mod produce;
pub mod replay;
pub mod simulate;
