//! The copilot's Prometheus metrics, registered in the caller's registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct CopilotMetrics {
    /// Operations (generate, recommend, chat) by outcome (ok, invalid, error).
    pub operations: IntCounterVec,
    /// Model calls by HTTP status of each attempt (retries count separately).
    pub http_attempts: IntCounterVec,
    /// Tokens the server reported, by kind (prompt, completion).
    pub tokens: IntCounterVec,
    /// Time per model call, by operation, retries included.
    pub call_seconds: HistogramVec,
    /// Answers sent back with validation errors, by operation.
    pub repairs: IntCounterVec,
}

impl CopilotMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            operations: IntCounterVec::new(
                Opts::new(
                    "freshet_llm_operations_total",
                    "Copilot operations by kind and outcome.",
                ),
                &["operation", "outcome"],
            )?,
            http_attempts: IntCounterVec::new(
                Opts::new(
                    "freshet_llm_http_attempts_total",
                    "HTTP requests to the model server by status (0: no response).",
                ),
                &["status"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "freshet_llm_tokens_total",
                    "Tokens used as reported by the model server.",
                ),
                &["kind"],
            )?,
            call_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "freshet_llm_call_duration_seconds",
                    "Duration of one model call including retries.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["operation"],
            )?,
            repairs: IntCounterVec::new(
                Opts::new(
                    "freshet_llm_repairs_total",
                    "Answers that failed validation and were sent back to the model.",
                ),
                &["operation"],
            )?,
        };
        registry.register(Box::new(metrics.operations.clone()))?;
        registry.register(Box::new(metrics.http_attempts.clone()))?;
        registry.register(Box::new(metrics.tokens.clone()))?;
        registry.register(Box::new(metrics.call_seconds.clone()))?;
        registry.register(Box::new(metrics.repairs.clone()))?;
        for kind in ["prompt", "completion"] {
            metrics.tokens.with_label_values(&[kind]);
        }
        Ok(metrics)
    }
}
