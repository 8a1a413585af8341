//! A local OTLP/HTTP receiver: accepts `POST /v1/traces` and keeps every body, so a test
//! can check what services exported, decoded into [`ReceivedSpan`]s. It stands in for a
//! collector such as Jaeger.

use crate::background::BackgroundServer;
use std::sync::{Arc, Mutex};

/// One exported span; ids in lowercase hex (the parent's empty for a root span).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Attribute values as text.
    pub attributes: std::collections::BTreeMap<String, String>,
}

pub struct OtlpReceiver {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    _server: BackgroundServer,
}

impl OtlpReceiver {
    /// Serves on a free loopback port, on a thread with its own runtime (so it can be
    /// started and dropped from sync and async tests alike).
    pub fn start() -> Self {
        use axum::routing::post;
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let kept = bodies.clone();
        let server = BackgroundServer::start(move || {
            axum::Router::new().route(
                "/v1/traces",
                post(move |body: axum::body::Bytes| {
                    let kept = kept.clone();
                    async move {
                        kept.lock().expect("bodies").push(body.to_vec());
                        axum::http::StatusCode::OK
                    }
                }),
            )
        });
        Self {
            port: server.port,
            bodies,
            _server: server,
        }
    }

    /// The endpoint to give an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every export request's body as received (protobuf), for searching its bytes.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().expect("bodies").clone()
    }

    /// Every span exported so far, decoded.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use prost::Message;
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut spans = Vec::new();
        for body in self.bodies.lock().expect("bodies").iter() {
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("an OTLP/HTTP protobuf trace export");
            for resource_spans in request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(Value::IntValue(i)) => i.to_string(),
                                Some(Value::BoolValue(b)) => b.to_string(),
                                Some(Value::DoubleValue(d)) => d.to_string(),
                                _ => String::new(),
                            };
                            (a.key.clone(), value)
                        })
                        .collect();
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes,
                    });
                }
            }
        }
        spans
    }
}
