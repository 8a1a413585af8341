//! The core of Freshet: everything the other crates must agree on, written once.
//!
//! - [`definitions`]: the feature-definition model (sources, feature views, features) and
//!   the loader that parses and validates `features/*.toml`, reporting every mistake with
//!   file, line and field.
//! - [`duration`]: the duration syntax used in definitions (`500ms`, `10s`, `5m`, `1h`, `1d`).
//! - [`schema`]: the fields of a source's Avro schema, as the validator and the compilers
//!   see them.
//! - [`filter`]: the feature filter language (`action_type == "click"`), parsed, checked
//!   against a schema and evaluated.
//! - [`value`]: the scalar values features produce and serve.
//! - [`window`]: window arithmetic for tumbling, sliding and session windows.
//! - [`store_layout`]: how feature values are laid out in Redis (keys, fields, the
//!   versioned-write script), shared by the processor that writes and the API that reads.
//! - [`update_record`]: the Avro schema of the `feature_updates` topic, shared by the
//!   processor that publishes it and the training sets that read it.
//!
//! Invariant: this crate does no network I/O and starts no threads. Its only I/O is
//! [`definitions::load_dir`] reading the definitions folder; everything else is pure
//! and can be tested without any server.

pub mod definitions;
pub mod duration;
pub mod filter;
pub mod schema;
pub mod store_layout;
pub mod update_record;
pub mod value;
pub mod window;

pub use definitions::{
    load_dir, Aggregation, Definitions, Diagnostic, Feature, FeatureView, LoadError, Source,
};
pub use duration::DurationMs;
pub use value::{Value, ValueType};
pub use window::{Window, WindowBounds};
