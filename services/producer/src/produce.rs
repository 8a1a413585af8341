//! Producing events: encode, key, trace, pace, hand to the Kafka client, and account for
//! every event until the broker acknowledges it.
//!
//! The Kafka producer is idempotent (`enable.idempotence=true`), so retries inside the
//! client never duplicate or reorder records of a partition. On a stop (end of input,
//! `--count`, `--duration` or a signal) no new event is taken, and [`run`] returns only
//! after every event handed over has been acknowledged or reported failed: a clean stop
//! loses nothing.

use crate::event::{SchemaVersion, UserEvent, UserEventV1};
use crate::metrics::ProducerMetrics;
use freshet_avro::WireEncoder;
use futures::stream::{FuturesUnordered, StreamExt};
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often progress is logged on long runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the final flush may take before undelivered events are reported failed.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on events handed over but not yet acknowledged.
const MAX_IN_FLIGHT: usize = 100_000;
/// After this many encoding failures in a row (e.g. the subject is not registered and
/// auto-registration is off) the run stops instead of failing every further event.
const MAX_CONSECUTIVE_ENCODE_ERRORS: u64 = 100;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub brokers: String,
    pub registry: freshet_avro::Registry,
    pub topic: String,
    pub schema_version: SchemaVersion,
    /// Register the schema on first use; otherwise use the subject's latest schema.
    pub auto_register: bool,
}

/// Where events are produced to.
pub struct EventProducer {
    producer: FutureProducer,
    encoder: WireEncoder,
    config: ProducerConfig,
    metrics: ProducerMetrics,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer for {brokers}: {cause}")]
    Client { brokers: String, cause: KafkaError },
}

impl EventProducer {
    /// `tracer` starts one span per event, whose context goes into the record's
    /// `traceparent` header (see `freshet_telemetry::tracer_provider`).
    pub fn new(
        config: ProducerConfig,
        metrics: ProducerMetrics,
        tracer: opentelemetry_sdk::trace::SdkTracer,
    ) -> Result<Self, ProduceError> {
        let producer: FutureProducer = freshet_kafka::client_config()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|cause| ProduceError::Client {
                brokers: config.brokers.clone(),
                cause,
            })?;
        let schema = config.auto_register.then(|| config.schema_version.schema());
        Ok(Self {
            encoder: WireEncoder::new(&config.registry, &config.topic, schema),
            producer,
            metrics,
            tracer,
            config,
        })
    }

    pub fn metrics(&self) -> &ProducerMetrics {
        &self.metrics
    }
}

/// How events are paced and when the run ends.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Events per second; 0 sends as fast as the broker takes them.
    pub rate: f64,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub encode_errors: u64,
    pub invalid_input: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

type Delivery = std::pin::Pin<Box<dyn Future<Output = (Instant, bool)> + Send>>;

/// Produces `events` until they end, a limit is reached or `stop` completes; then waits
/// until every event handed over is acknowledged or failed.
pub async fn run<E>(
    producer: &EventProducer,
    events: impl Iterator<Item = Result<UserEvent, E>>,
    options: &RunOptions,
    stop: impl Future<Output = ()>,
) -> Summary
where
    E: std::fmt::Display,
{
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut summary = Summary::default();
    let mut in_flight: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut next_progress = started + PROGRESS_EVERY;
    tokio::pin!(stop);
    let mut stopped = false;
    let mut consecutive_encode_errors = 0;

    for (index, item) in events.enumerate() {
        // --count limits the events taken from the input, whatever became of them.
        if options.count.is_some_and(|c| index as u64 >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(index as f64 / options.rate);
            let wait = tokio::time::sleep_until(due.into());
            tokio::select! {
                _ = wait => {}
                _ = &mut stop => { stopped = true; }
            }
        } else if futures::FutureExt::now_or_never(&mut stop).is_some() {
            stopped = true;
        }
        if stopped {
            tracing::info!("stop requested; flushing events already handed over");
            break;
        }
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "skipping invalid input");
                producer.metrics.invalid_input.inc();
                summary.invalid_input += 1;
                continue;
            }
        };
        match send(producer, &event).await {
            Ok(delivery) => {
                consecutive_encode_errors = 0;
                summary.sent += 1;
                producer.metrics.sent.inc();
                in_flight.push(delivery);
            }
            Err(reason) => {
                summary.encode_errors += 1;
                producer.metrics.encode_errors.inc();
                tracing::warn!(user_id = event.user_id, reason, "cannot encode event");
                consecutive_encode_errors += 1;
                if consecutive_encode_errors >= MAX_CONSECUTIVE_ENCODE_ERRORS {
                    tracing::error!(
                        failures = consecutive_encode_errors,
                        "stopping: every recent event failed to encode; fix the cause above"
                    );
                    break;
                }
            }
        }
        while let Some(Some(result)) = futures::FutureExt::now_or_never(in_flight.next()) {
            account(producer, &mut summary, result);
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(result) = in_flight.next().await {
                account(producer, &mut summary, result);
            }
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let elapsed = started.elapsed().as_secs_f64();
            tracing::info!(
                sent = summary.sent,
                delivered = summary.delivered,
                failed = summary.failed,
                encode_errors = summary.encode_errors,
                events_per_second = (summary.sent as f64 / elapsed).round(),
                "progress"
            );
        }
    }
    let _ = producer.producer.flush(FLUSH_TIMEOUT);
    while let Some(result) = in_flight.next().await {
        account(producer, &mut summary, result);
    }
    summary.elapsed = started.elapsed();
    summary
}

fn account(producer: &EventProducer, summary: &mut Summary, (sent_at, ok): (Instant, bool)) {
    if ok {
        summary.delivered += 1;
        producer.metrics.delivered.inc();
        producer
            .metrics
            .delivery_latency
            .observe(sent_at.elapsed().as_secs_f64());
    } else {
        summary.failed += 1;
        producer.metrics.delivery_errors.inc();
    }
}

/// Encodes one event and hands it to the client, waiting while the client's queue is full.
async fn send(producer: &EventProducer, event: &UserEvent) -> Result<Delivery, String> {
    let encoded = match producer.config.schema_version {
        SchemaVersion::V1 => producer.encoder.encode(&UserEventV1::from(event)).await,
        SchemaVersion::V2 => producer.encoder.encode(event).await,
    };
    let payload = encoded.map_err(|e| e.to_string())?;
    let key = event.user_id.to_string();
    let mut span = producer.tracer.build_with_context(
        producer
            .tracer
            .span_builder("produce user_event")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("user_id", event.user_id),
                KeyValue::new("action_type", event.action_type.clone()),
                KeyValue::new("messaging.destination.name", producer.config.topic.clone()),
            ]),
        &Context::new(),
    );
    let cx = Context::new().with_remote_span_context(span.span_context().clone());
    let headers = freshet_telemetry::kafka_headers::inject(&cx, OwnedHeaders::new());
    let mut record = FutureRecord::to(&producer.config.topic)
        .key(&key)
        .payload(&payload)
        .headers(headers);
    let sent_at = Instant::now();
    loop {
        match producer.producer.send_result(record) {
            Ok(delivery) => {
                span.end();
                let user = event.user_id;
                return Ok(Box::pin(async move {
                    let ok = match delivery.await {
                        Ok(Ok(_)) => true,
                        Ok(Err((e, _))) => {
                            tracing::warn!(user_id = user, error = %e, "event not delivered");
                            false
                        }
                        Err(_) => false,
                    };
                    (sent_at, ok)
                }));
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rejected)) => {
                record = rejected;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => {
                span.end();
                return Err(format!("the Kafka client refused the record: {e}"));
            }
        }
    }
}
