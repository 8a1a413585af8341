//! The Prometheus text endpoint.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};

/// A router serving `GET /metrics` from `registry`, to merge into a service's router or
/// to serve on its own.
pub fn router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = Vec::new();
                let encoder = TextEncoder::new();
                // Encoding only fails for malformed metric families, which the registry
                // never holds.
                let _ = encoder.encode(&registry.gather(), &mut body);
                (
                    [(header::CONTENT_TYPE, encoder.format_type().to_string())],
                    body,
                )
                    .into_response()
            }
        }),
    )
}

/// Serves `GET /metrics` on `listener` in the background.
pub fn spawn_server(
    listener: tokio::net::TcpListener,
    registry: Registry,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(registry)).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    })
}
