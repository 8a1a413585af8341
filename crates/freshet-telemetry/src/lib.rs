//! What every Freshet service does the same way, written once:
//!
//! - [`init`]: logs through `tracing` to stderr (filter with `RUST_LOG`, default `info`;
//!   colours only on a terminal) and, when
//!   an OTLP endpoint is configured, traces exported over OTLP/HTTP. The W3C trace-context
//!   propagator is installed either way, so trace ids flow even when nothing is exported.
//! - [`kafka_headers`]: trace context in and out of Kafka record headers (`traceparent`),
//!   so one event's journey from producer to processor is one trace.
//! - [`http_headers`]: trace context from HTTP request headers, so a caller's trace
//!   continues into a service's request span.
//! - [`metrics`]: the Prometheus text endpoint (`GET /metrics`) for a service's registry.

pub mod http_headers;
pub mod kafka_headers;
pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("logging is already set up in this process")]
    AlreadyInitialised,
}

/// Keeps the tracer provider alive; dropping it flushes spans still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
    service: &'static str,
}

impl Telemetry {
    /// A tracer for spans created directly through the OpenTelemetry API (used on hot
    /// paths where a `tracing` span per event would cost too much).
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer(self.service)
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

/// Builds the tracer provider: with a batch OTLP/HTTP exporter when `otlp_endpoint` is
/// given (e.g. `http://localhost:4318`), without one otherwise.
pub fn tracer_provider(
    service: &'static str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url)
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Sets up logging and tracing for a service; call once at start-up.
pub fn init(
    service: &'static str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = tracer_provider(service, otlp_endpoint)?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel_layer = otlp_endpoint
        .is_some()
        .then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider, service })
}
