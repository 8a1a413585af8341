//! The sink's metrics, with the `freshet_flink_sink_` prefix.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct SinkMetrics {
    pub registry: Registry,
    /// Rows read, by outcome: `applied` (its group's newest), `not_newer`, `refused`
    /// (not a valid row: the log names why), `tombstone`.
    pub rows: IntCounterVec,
    /// (view, entity) values written to Redis, by result: `written`, or `kept_newer`
    /// when Redis held a version at least as new.
    pub writes: IntCounterVec,
    /// 1 once the whole topic as it was at start has been applied.
    pub caught_up: IntGauge,
}

impl SinkMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let rows = IntCounterVec::new(
            Opts::new(
                "freshet_flink_sink_rows_total",
                "Window rows read from the Flink job's topic, by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "freshet_flink_sink_writes_total",
                "Feature values written to Redis, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let caught_up = IntGauge::new(
            "freshet_flink_sink_caught_up",
            "1 once the topic as it was at start has been applied.",
        )
        .expect("valid metric");
        registry.register(Box::new(rows.clone())).expect("unique");
        registry.register(Box::new(writes.clone())).expect("unique");
        registry
            .register(Box::new(caught_up.clone()))
            .expect("unique");
        Self {
            registry,
            rows,
            writes,
            caught_up,
        }
    }
}

impl Default for SinkMetrics {
    fn default() -> Self {
        Self::new()
    }
}
