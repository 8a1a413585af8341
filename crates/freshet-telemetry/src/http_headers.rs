//! W3C trace context (`traceparent`, `tracestate`) in HTTP request headers, so a caller's
//! trace continues into the service's request span.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

struct Lookup<'a>(&'a HeaderMap);

impl Extractor for Lookup<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context, or `None` when the request carries no `traceparent`
/// (or a malformed one).
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt;
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Lookup(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn a_traceparent_header_gives_the_callers_trace() {
        let mut headers = HeaderMap::new();
        assert!(extract(&headers).is_none());
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&headers).expect("a valid context");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert!(extract(&headers).is_none());
    }
}
