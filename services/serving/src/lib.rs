//! Freshet's serving API: feature values for models, read from Redis.
//!
//! - [`api`]: the routes (`GET /features/{entity_id}`, `POST /features/batch`, `/health`,
//!   `/ready`, `/metrics`, `/docs` and `/openapi.json`) and their request and response
//!   shapes.
//! - [`lookup`]: which views and features a request selects, and how stored hashes become
//!   served values (defaults, TTL, ages). Pure.
//! - [`store`]: the one shared Redis connection: lazy, with timeouts, remade after a
//!   failure, so an outage gives fast 503s and the service recovers by itself.
//! - [`near_cache`]: entity hashes kept in memory, invalidated by Redis itself (RESP3
//!   client tracking), never staler than a confirmed bound.
//! - [`read`]: a lookup's entities from the near cache or Redis, within its budget.
//! - [`openapi`]: the OpenAPI document, completed with this deployment's names and limits.
//! - [`feast_api`]: `POST /get-online-features`, Feast's feature-server protocol over the
//!   same lookup, so Feast's SDK reads Freshet's features.
//! - [`copilot_api`]: the LLM copilot's endpoints (`/api/llm/...`), 503 without a key.
//! - [`error`]: every error response, in one JSON shape.
//! - [`lazy_timeout`]: the lookups' request timeout, with a timer only for requests that
//!   wait.
//! - [`metrics`]: the service's Prometheus metrics.
//!
//! Invariant: serving never writes to Redis. The layout it reads is
//! `freshet_core::store_layout`, through `freshet-store`, the same code the processor
//! writes with.

pub mod api;
pub mod auth;
pub mod copilot_api;
pub mod error;
pub mod feast_api;
pub mod lazy_timeout;
pub mod lookup;
pub mod metrics;
pub mod near_cache;
pub mod openapi;
pub mod read;
pub mod store;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::Router;
use freshet_core::Definitions;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Default largest batch.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1_000;
/// Default time Redis may take to connect or answer before a request gets 503.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Default time a request may take before it is answered with 408.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of entities the near cache holds.
pub const DEFAULT_NEAR_CACHE_ENTRIES: usize = 100_000;
/// Default staleness bound of the near cache.
pub const DEFAULT_NEAR_CACHE_STALENESS: Duration = Duration::from_millis(100);
/// Default time a copilot request may take before it is answered with 408.
pub const DEFAULT_LLM_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot set up the copilot: {0}")]
    Copilot(#[from] freshet_copilot::CopilotError),
    #[error("cannot register the copilot's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("API keys: {0}")]
    Keys(#[from] auth::KeyError),
}

#[derive(Debug, Clone)]
pub struct ServingConfig {
    pub redis_url: String,
    pub max_batch_size: usize,
    pub redis_timeout: Duration,
    pub request_timeout: Duration,
    /// Give every request a span (continuing the caller's `traceparent`). Worth its cost
    /// only when spans are exported; off, handlers' span fields are no-ops.
    pub trace_requests: bool,
    /// The copilot behind `/api/llm/...` (without a key those answer 503).
    pub copilot: freshet_copilot::CopilotConfig,
    /// Time a copilot request may take (model calls, retries and repairs included).
    pub llm_request_timeout: Duration,
    /// Entities the near cache holds; 0 turns it off.
    pub near_cache_entries: usize,
    /// The near cache serves only while Redis's invalidations are confirmed within this.
    pub near_cache_staleness: Duration,
    /// Who may call what: API keys, `/metrics`, the copilot and its rate limit.
    pub access: auth::AccessConfig,
}

impl ServingConfig {
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            trace_requests: false,
            copilot: freshet_copilot::CopilotConfig::default(),
            llm_request_timeout: DEFAULT_LLM_REQUEST_TIMEOUT,
            near_cache_entries: DEFAULT_NEAR_CACHE_ENTRIES,
            near_cache_staleness: DEFAULT_NEAR_CACHE_STALENESS,
            access: auth::AccessConfig::open(),
        }
    }
}

/// The whole service as a router: routes, metrics, body limit, timeout, and request spans
/// when `trace_requests` is set.
/// Connects to Redis only when first needed, so it starts while Redis is down.
pub fn app(
    definitions: &Definitions,
    config: &ServingConfig,
    metrics: metrics::ServingMetrics,
) -> Result<Router, StartError> {
    let copilot = freshet_copilot::Copilot::new(
        config.copilot.clone(),
        freshet_copilot::CopilotMetrics::new(&metrics.registry)?,
    )?;
    let llm = copilot_api::router(Arc::new(copilot_api::LlmState {
        copilot,
        definitions: Arc::new(definitions.clone()),
    }))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        config.llm_request_timeout,
    ));
    let store = store::FeatureStore::new(&config.redis_url, config.redis_timeout)?;
    let cache = (config.near_cache_entries > 0).then(|| {
        let cache = Arc::new(near_cache::NearCache::new(
            config.near_cache_entries,
            config.near_cache_staleness,
            metrics.cache.clone(),
        ));
        tokio::spawn(near_cache::track(cache.clone(), store.tracked()));
        cache
    });
    let state = Arc::new(api::AppState::new(
        lookup::Catalog::new(definitions, &metrics),
        store,
        cache,
        metrics,
        config.max_batch_size,
        config.request_timeout,
    ));
    // Room for the largest batch of the longest ids, with JSON punctuation, each character
    // written as a JSON escape (`\uXXXX`, twice for characters beyond the BMP).
    let body_limit = 64 * 1024 + config.max_batch_size * (12 * api::MAX_ENTITY_ID_CHARS + 4);
    let document = openapi::document(definitions, config.max_batch_size, &config.access);
    let access = Arc::new(auth::Access::new(config.access.clone())?);
    let router = api::router(state, llm, document, access, body_limit);
    Ok(if config.trace_requests {
        router.layer(TraceLayer::new_for_http().make_span_with(request_span))
    } else {
        router
    })
}

/// The span of one request, continuing the caller's trace when it sent a `traceparent`.
/// Handlers fill in `entity_count` and `views`.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let span = tracing::info_span!(
        "serving.request",
        http.method = %request.method(),
        http.route = route,
        entity_count = tracing::field::Empty,
        views = tracing::field::Empty,
    );
    if let Some(cx) = freshet_telemetry::http_headers::extract(request.headers()) {
        let _ = span.set_parent(cx);
    }
    span
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    definitions: &Definitions,
    config: &ServingConfig,
    metrics: metrics::ServingMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = app(definitions, config, metrics)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
