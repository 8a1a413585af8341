//! W3C trace context (`traceparent`, `tracestate`) in Kafka record headers.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Header, Headers, OwnedHeaders};

struct Collect<'a>(&'a mut Vec<(String, String)>);

impl Injector for Collect<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The trace-context headers for `cx` (empty when `cx` holds no valid span).
pub fn trace_headers(cx: &Context) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(1);
    TraceContextPropagator::new().inject_context(cx, &mut Collect(&mut headers));
    headers
}

/// Adds the trace-context headers for `cx` to `headers`.
pub fn inject(cx: &Context, mut headers: OwnedHeaders) -> OwnedHeaders {
    for (key, value) in trace_headers(cx) {
        headers = headers.insert(Header {
            key: &key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

struct Lookup<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for Lookup<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// The remote trace context carried in a record's headers (an empty context when there is
/// none or it is malformed).
pub fn extract(headers: &impl Headers) -> Context {
    TraceContextPropagator::new().extract(&Lookup(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn trace_context_round_trips_through_record_headers() {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(span.clone());
        let headers = inject(&cx, OwnedHeaders::new());
        assert_eq!(
            headers.get(0).value,
            Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
        );
        let back = extract(&headers);
        assert_eq!(back.span().span_context().trace_id(), span.trace_id());
        assert_eq!(back.span().span_context().span_id(), span.span_id());
        assert!(back.span().span_context().is_remote());
    }

    #[test]
    fn missing_or_malformed_headers_give_an_empty_context() {
        let none = extract(&OwnedHeaders::new());
        assert!(!none.span().span_context().is_valid());
        let bad = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(&b"garbage"[..]),
        });
        assert!(!extract(&bad).span().span_context().is_valid());
    }
}
