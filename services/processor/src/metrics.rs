//! The processor's metrics, defined once; emitted per record batch or epoch.

use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The `reason` label values of `freshet_processor_dead_letters_total`.
pub const DEAD_LETTER_REASONS: [&str; 2] = ["late", "undecodable"];

#[derive(Clone)]
pub struct ProcessorMetrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub late_events: IntCounterVec,
    /// Times a quiet partition's clock moved on by processing time (its source's
    /// `idle_timeout`), per source topic.
    pub idle_advances: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub updates: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub epoch_duration: Histogram,
    /// Time of each step of an epoch's delivery: `checkpoint`, `kafka`, `redis`.
    pub delivery_step: HistogramVec,
    pub epochs: IntCounterVec,
    pub redis_write: Histogram,
    pub freshness: Histogram,
    pub entities: IntGauge,
    /// Input partitions standing still until the schema registry answers.
    pub registry_unavailable: IntGauge,
    /// Time the processing thread waited: `input` (for records from the reading thread),
    /// `delivery` (to hand an epoch over while two wait for delivery).
    pub processing_wait: CounterVec,
    /// Input partitions this instance owns, in total and one series per partition (1 when
    /// owned, 0 when not).
    pub assigned_partitions: IntGauge,
    pub partition_assigned: IntGaugeVec,
    /// Group rebalances that assigned or revoked partitions of this instance.
    pub rebalances: IntCounterVec,
    /// Changelog records read and seconds spent restoring partitions from it.
    pub restore_records: prometheus::IntCounter,
    pub restore_seconds: prometheus::Counter,
    /// Partitions restored, by where their state came from: `local` (the checkpoint held
    /// them at the group's offset), `changelog`, `empty` (no state yet, or recomputed).
    pub restores: IntCounterVec,
    /// Bytes (keys and values) written to the changelog.
    pub changelog_bytes: prometheus::IntCounter,
}

impl ProcessorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "freshet_processor_consumer_lag",
                "Records in the partition not yet processed.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let entities = IntGauge::new(
            "freshet_processor_state_entities",
            "Entity states held, over all views.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(entities.clone()))
            .expect("unique metric");
        let registry_unavailable = IntGauge::new(
            "freshet_processor_registry_unavailable",
            "Input partitions waiting for the schema registry: a record's writer schema could \
             not be fetched (registry unreachable, timed out or failing), so the partition \
             stands still and retries; nothing is dead-lettered for it.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(registry_unavailable.clone()))
            .expect("unique metric");
        let delivery_step = HistogramVec::new(
            HistogramOpts::new(
                "freshet_processor_delivery_step_seconds",
                "Time of one step of an epoch's delivery: checkpoint (synced RocksDB write), \
                 kafka (the transaction), redis (versioned writes).",
            )
            .buckets(latency.clone()),
            &["step"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_step.clone()))
            .expect("unique metric");
        let dead_letters = counter(
            "freshet_processor_dead_letters_total",
            "Records routed to the dead-letter topic, by reason.",
            &["reason"],
        );
        // Every reason is a series from the start, so rates read 0 rather than nothing.
        for reason in DEAD_LETTER_REASONS {
            dead_letters.with_label_values(&[reason]);
        }
        let processing_wait = CounterVec::new(
            Opts::new(
                "freshet_processor_processing_wait_seconds_total",
                "Time the processing thread spent waiting: for input records (input) or to \
                 hand a processed epoch to delivery (delivery).",
            ),
            &["on"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(processing_wait.clone()))
            .expect("unique metric");
        for on in ["input", "delivery"] {
            processing_wait.with_label_values(&[on]);
        }
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let assigned_partitions = IntGauge::new(
            "freshet_processor_assigned_partitions",
            "Input partitions assigned to this instance by the consumer group.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(assigned_partitions.clone()))
            .expect("unique metric");
        let partition_assigned = gauge_vec(
            "freshet_processor_partition_assigned",
            "1 for each input partition this instance owns, 0 for one it owned before.",
            &["topic", "partition"],
        );
        let rebalances = counter(
            "freshet_processor_rebalances_total",
            "Group rebalances that changed this instance's partitions, by what they did.",
            &["change"],
        );
        for change in ["assigned", "revoked"] {
            rebalances.with_label_values(&[change]);
        }
        let restores = counter(
            "freshet_processor_restores_total",
            "Partitions taken over, by where their state came from: local (the checkpoint \
             held them at the group's offset), changelog, empty (no state yet).",
            &["from"],
        );
        for from in ["local", "changelog", "empty"] {
            restores.with_label_values(&[from]);
        }
        let plain_counter = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let restore_records = plain_counter(
            "freshet_processor_restore_records_total",
            "Changelog records read to restore partitions.",
        );
        let changelog_bytes = plain_counter(
            "freshet_processor_changelog_bytes_total",
            "Bytes of keys and values written to the changelog.",
        );
        let restore_seconds = prometheus::Counter::new(
            "freshet_processor_restore_seconds_total",
            "Time spent restoring partitions from the changelog.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(restore_seconds.clone()))
            .expect("unique metric");
        Self {
            assigned_partitions,
            partition_assigned,
            rebalances,
            restore_records,
            restore_seconds,
            restores,
            changelog_bytes,
            events: counter(
                "freshet_processor_events_total",
                "Input records processed.",
                &["topic"],
            ),
            late_events: counter(
                "freshet_processor_late_events_total",
                "Events behind the watermark, not aggregated.",
                &["topic"],
            ),
            idle_advances: counter(
                "freshet_processor_idle_advances_total",
                "Times a quiet partition's clock moved on by processing time (the source's \
                 idle_timeout: no new record for that long and none waiting), every 100 ms \
                 while it stays quiet.",
                &["topic"],
            ),
            dead_letters,
            updates: counter(
                "freshet_processor_updates_total",
                "Feature updates delivered, per view.",
                &["view"],
            ),
            epochs: counter(
                "freshet_processor_epochs_total",
                "Epochs completed, by how they were delivered.",
                &["delivery"],
            ),
            epoch_duration: histogram(
                "freshet_processor_epoch_duration_seconds",
                "Time to checkpoint and deliver one epoch (not counting its wait for earlier \
                 epochs).",
                latency.clone(),
            ),
            delivery_step,
            redis_write: histogram(
                "freshet_processor_redis_write_seconds",
                "Time to apply one epoch's updates to Redis.",
                latency.clone(),
            ),
            freshness: histogram(
                "freshet_processor_freshness_seconds",
                "End-to-end freshness: Redis write time minus the update's event time.",
                // Fine below 100 ms, where the processor's own share is read (the bench
                // interpolates quantiles inside a bucket).
                vec![
                    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05, 0.06, 0.07,
                    0.08, 0.09, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            ),
            consumer_lag,
            entities,
            registry_unavailable,
            processing_wait,
            registry,
        }
    }
}

impl Default for ProcessorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
