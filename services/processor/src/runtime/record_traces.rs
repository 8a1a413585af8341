//! Tracing of records: a span per record continuing its producer's trace, and the spans of
//! the Redis writes hung under the last record of each entity in an epoch.

use super::*;

/// A span for one record, continuing the trace in its `traceparent` header; its context,
/// or `None` when the record carries none.
pub(super) fn trace_record(
    tracer: &opentelemetry::global::BoxedTracer,
    headers: InputHeaders<'_>,
) -> Option<SpanContext> {
    let parent = freshet_telemetry::kafka_headers::extract(&headers);
    if !parent.span().span_context().is_valid() {
        return None;
    }
    let mut span = tracer.build_with_context(
        tracer
            .span_builder("process user_event")
            .with_kind(SpanKind::Consumer),
        &parent,
    );
    let context = span.span_context().clone();
    span.end();
    Some(context)
}

/// One span per update written to Redis whose entity had a traced record this epoch, as
/// a child of that record's span, covering the epoch's Redis write.
pub(super) fn trace_redis_writes(
    tracer: &opentelemetry::global::BoxedTracer,
    outbox: &Outbox,
    traced: &HashMap<String, SpanContext>,
    started: std::time::SystemTime,
) {
    let ended = std::time::SystemTime::now();
    for update in &outbox.updates {
        let Some(record) = traced.get(&update.entity) else {
            continue;
        };
        let parent = opentelemetry::Context::new().with_remote_span_context(record.clone());
        let mut span = tracer.build_with_context(
            tracer
                .span_builder("write features to redis")
                .with_kind(SpanKind::Client)
                .with_start_time(started)
                .with_attributes([
                    opentelemetry::KeyValue::new("view", update.view.clone()),
                    opentelemetry::KeyValue::new("entity", update.entity.clone()),
                    opentelemetry::KeyValue::new("version", update.version as i64),
                ]),
            &parent,
        );
        span.end_with_timestamp(ended);
    }
}
