//! The producer's metrics, defined once. Names follow Prometheus conventions with the
//! `freshet_producer_` prefix.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

#[derive(Clone)]
pub struct ProducerMetrics {
    pub registry: Registry,
    /// Events handed to the Kafka client.
    pub sent: IntCounter,
    /// Events acknowledged by the broker.
    pub delivered: IntCounter,
    /// Events the broker did not acknowledge.
    pub delivery_errors: IntCounter,
    /// Events that could not be encoded (schema or registry trouble).
    pub encode_errors: IntCounter,
    /// Input lines that were not valid events (replay only).
    pub invalid_input: IntCounter,
    /// Time from hand-off to acknowledgement.
    pub delivery_latency: Histogram,
}

impl ProducerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let metrics = Self {
            sent: counter(
                "freshet_producer_events_sent_total",
                "Events handed to the Kafka client.",
            ),
            delivered: counter(
                "freshet_producer_events_delivered_total",
                "Events acknowledged by the broker.",
            ),
            delivery_errors: counter(
                "freshet_producer_delivery_errors_total",
                "Events the broker did not acknowledge.",
            ),
            encode_errors: counter(
                "freshet_producer_encode_errors_total",
                "Events that could not be encoded.",
            ),
            invalid_input: counter(
                "freshet_producer_invalid_input_total",
                "Input lines that were not valid events.",
            ),
            delivery_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "freshet_producer_delivery_latency_seconds",
                    "Time from handing an event to the Kafka client to its acknowledgement.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .expect("valid metric"),
            registry: registry.clone(),
        };
        registry
            .register(Box::new(metrics.delivery_latency.clone()))
            .expect("unique metric");
        metrics
    }
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
