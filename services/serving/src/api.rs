//! The routes: lookups, health, metrics and the OpenAPI docs (the copilot's are in
//! [`crate::copilot_api`]). Handlers are plain async
//! functions over one shared [`AppState`]; every error goes through [`ApiError`].

use crate::error::{ApiError, ErrorBody};
use crate::lookup::{
    Catalog, EntityFeatures, FeatureValue, Selection, Tally, ValueSource, ViewStatus, ViewValues,
};
use crate::metrics::ServingMetrics;
use crate::store::FeatureStore;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use freshet_store::RawFields;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower_http::timeout::TimeoutLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Longest entity id accepted, in bytes.
pub const MAX_ENTITY_ID_BYTES: usize = 512;

pub struct AppState {
    pub catalog: Catalog,
    pub store: FeatureStore,
    pub metrics: ServingMetrics,
    pub max_batch_size: usize,
}

type SharedState = Arc<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Freshet serving API",
        description = "Feature values for machine-learning models, computed by Freshet's stream processor and read from Redis."
    ),
    paths(
        get_features,
        batch_features,
        crate::feast_api::get_online_features,
        health,
        ready,
        crate::copilot_api::llm_health,
        crate::copilot_api::llm_generate,
        crate::copilot_api::llm_recommend,
        crate::copilot_api::llm_chat
    ),
    components(schemas(
        crate::copilot_api::LlmHealth,
        crate::copilot_api::GenerateRequest,
        crate::copilot_api::GenerateResponse,
        crate::copilot_api::RecommendRequest,
        crate::copilot_api::RecommendResponse,
        crate::copilot_api::IdeaBody,
        crate::copilot_api::DroppedIdea,
        crate::copilot_api::ChatRequest,
        crate::copilot_api::ChatResponse,
        EntityFeatures,
        ViewValues,
        FeatureValue,
        ViewStatus,
        ValueSource,
        BatchRequest,
        BatchResponse,
        crate::feast_api::GetOnlineFeaturesRequest,
        crate::feast_api::GetOnlineFeaturesResponse,
        crate::feast_api::FeastMetadata,
        crate::feast_api::FeastColumn,
        ErrorBody,
        StatusBody
    ))
)]
pub struct ApiDoc;

/// The service's routes with their state; `/metrics`, `/docs` and `/openapi.json`
/// included. Lookups time out after `request_timeout`; `extra` (the copilot's routes)
/// brings its own timeout. Tracing is added by [`crate::app`].
pub fn router(state: SharedState, request_timeout: Duration, extra: Router) -> Router {
    Router::new()
        .route("/features/{entity_id}", get(get_features))
        .route("/features/batch", post(batch_features))
        .route(
            "/get-online-features",
            post(crate::feast_api::get_online_features),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state.clone())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .merge(extra)
        .merge(freshet_telemetry::metrics::router(
            state.metrics.registry.clone(),
        ))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state, record_request))
}

/// Which views and features to return (all when not given).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SelectionQuery {
    /// Feature view name(s), comma-separated.
    view: Option<String>,
    /// Feature names, comma-separated.
    features: Option<String>,
}

/// Features of one entity.
#[utoipa::path(
    get,
    path = "/features/{entity_id}",
    params(("entity_id" = String, Path, description = "The entity's id, e.g. a user id"), SelectionQuery),
    responses(
        (status = 200, description = "The entity's features; defaults where nothing is stored", body = EntityFeatures),
        (status = 400, description = "Unknown view or feature, or a bad query", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
async fn get_features(
    State(state): State<SharedState>,
    Path(entity_id): Path<String>,
    query: Result<Query<SelectionQuery>, QueryRejection>,
) -> Result<Json<EntityFeatures>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "{}; the query takes `view` and `features`, each a comma-separated list of names",
            e.body_text()
        ),
    })?;
    check_entity_id(0, &entity_id)?;
    let selection = state.catalog.select(
        query.view.as_deref().map(|v| v.split(',')),
        query.features.as_deref().map(|f| f.split(',')),
    )?;
    let span = tracing::Span::current();
    span.record("entity_count", 1);
    span.record("views", selection.view_names().join(",").as_str());
    Ok(Json(lookup_one(&state, &selection, entity_id).await?))
}

/// A batch lookup. `user_ids` is accepted as an older spelling of `entity_ids`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Entity ids (strings or integers), answered in the same order.
    #[schema(value_type = Option<Vec<String>>)]
    entity_ids: Option<Vec<EntityId>>,
    /// Older spelling of `entity_ids`.
    #[schema(value_type = Option<Vec<String>>)]
    user_ids: Option<Vec<EntityId>>,
    /// Feature views to return (all when not given).
    views: Option<Vec<String>>,
    /// Features to return (all of the selected views' when not given).
    features: Option<Vec<String>>,
}

/// An entity id: a JSON string, or an integer taken as its decimal text.
#[derive(Debug)]
struct EntityId(String);

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EntityId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entity id (a string or an integer)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EntityId, E> {
                Ok(EntityId(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<EntityId, E> {
                Ok(EntityId(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EntityId, E> {
                Ok(EntityId(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EntityId, E> {
                Ok(EntityId(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The batch answer's shape, for the OpenAPI document; [`batch_body`] writes it.
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct BatchResponse {
    /// Number of entities in the batch.
    batch_size: usize,
    /// Time the server spent on the batch, in milliseconds.
    server_latency_ms: f64,
    /// One entry per requested entity id, in request order.
    results: Vec<EntityFeatures>,
}

/// Features of many entities, read from Redis in one round trip.
#[utoipa::path(
    post,
    path = "/features/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Every entity's features, in request order", body = BatchResponse),
        (status = 400, description = "Malformed JSON, an empty batch, a bad id, an unknown view or feature", body = ErrorBody),
        (status = 413, description = "More entity ids than the server's maximum batch size", body = ErrorBody),
        (status = 422, description = "Well-formed JSON of the wrong shape or types", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
async fn batch_features(
    State(state): State<SharedState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Json(request) = body.map_err(|e| ApiError::BadRequest {
        status: e.status(),
        message: e.body_text(),
    })?;
    let ids = match (request.entity_ids, request.user_ids) {
        (Some(_), Some(_)) => return Err(ApiError::BothIdLists),
        (Some(ids), None) | (None, Some(ids)) => ids,
        (None, None) => return Err(ApiError::NoIdList),
    };
    if ids.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    if ids.len() > state.max_batch_size {
        return Err(ApiError::BatchTooLarge {
            size: ids.len(),
            max: state.max_batch_size,
        });
    }
    let entities: Vec<String> = ids.into_iter().map(|id| id.0).collect();
    for (position, id) in entities.iter().enumerate() {
        check_entity_id(position, id)?;
    }
    let selection = state.catalog.select(
        request.views.as_ref().map(|v| v.iter().map(String::as_str)),
        request
            .features
            .as_ref()
            .map(|f| f.iter().map(String::as_str)),
    )?;
    let span = tracing::Span::current();
    span.record("entity_count", entities.len());
    span.record("views", selection.view_names().join(",").as_str());
    state.metrics.batch_size.observe(entities.len() as f64);
    let body = batch_body(&state, &selection, entities, started).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(crate) fn check_entity_id(position: usize, id: &str) -> Result<(), ApiError> {
    let problem = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_ENTITY_ID_BYTES {
        "longer than 512 bytes"
    } else if id.chars().any(char::is_control) {
        "holding control characters"
    } else {
        return Ok(());
    };
    Err(ApiError::BadEntityId { position, problem })
}

/// One entity's features.
async fn lookup_one(
    state: &AppState,
    selection: &Selection<'_>,
    entity_id: String,
) -> Result<EntityFeatures, ApiError> {
    let mut answer = None;
    let ids = [entity_id];
    read_entities(state, selection, &ids, |id, read, now, tally| {
        answer = Some(selection.entity(id.to_string(), read, now, tally));
    })
    .await?;
    Ok(answer.expect("one entity read"))
}

/// Reads the selected views of every entity in one pipelined round trip and hands each
/// entity's reads to `each` as soon as they have arrived, in request order, with the
/// lookup's time and tally (recorded in the per-view metrics at the end). If the read
/// fails, what `each` was given must be discarded.
pub(crate) async fn read_entities(
    state: &AppState,
    selection: &Selection<'_>,
    entities: &[String],
    mut each: impl FnMut(&str, &[RawFields], i64, &mut Tally),
) -> Result<(), ApiError> {
    let reads = selection.reads(entities);
    let per_entity = selection.reads_per_entity();
    let mut tally = selection.tally();
    let mut pending = Vec::with_capacity(per_entity);
    let mut ids = entities.iter();
    let now = now_ms();
    let started = Instant::now();
    state
        .store
        .read_each(&reads, |fields| {
            pending.push(fields);
            if pending.len() < per_entity {
                return;
            }
            let id = ids.next().expect("one entity per `per_entity` reads");
            each(id, &pending, now, &mut tally);
            pending.clear();
        })
        .await
        .inspect_err(|_| state.metrics.store_errors.inc())?;
    selection.record(&tally, started.elapsed().as_secs_f64());
    Ok(())
}

/// Room reserved in a batch answer per entity and view (a view of the shipped
/// definitions takes about 390 bytes of JSON per entity).
const ANSWER_BYTES_PER_VIEW: usize = 512;

/// A batch answer's JSON (the shape of [`BatchResponse`]), written entity by entity as
/// Redis's replies arrive, so that most of it is built while Redis is still answering
/// (and written straight as JSON: see [`Selection::write_entity`]).
/// `server_latency_ms` comes last: it is known only at the end.
async fn batch_body(
    state: &AppState,
    selection: &Selection<'_>,
    entities: Vec<String>,
    started: Instant,
) -> Result<Vec<u8>, ApiError> {
    let per_entity = selection.reads_per_entity();
    let mut body = Vec::with_capacity(64 + entities.len() * per_entity * ANSWER_BYTES_PER_VIEW);
    body.extend_from_slice(b"{\"batch_size\":");
    write_json(&mut body, &entities.len());
    body.extend_from_slice(b",\"results\":[");
    let json = selection.answer_json();
    read_entities(state, selection, &entities, |id, read, now, tally| {
        if body.last() != Some(&b'[') {
            body.push(b',');
        }
        selection.write_entity(&json, id, read, now, tally, &mut body);
    })
    .await?;
    body.extend_from_slice(b"],\"server_latency_ms\":");
    write_json(&mut body, &(started.elapsed().as_secs_f64() * 1_000.0));
    body.push(b'}');
    Ok(body)
}

fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("our answers serialise to JSON");
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// `ok`, `ready` or `not_ready`.
    status: &'static str,
    /// Why the service is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/health", responses((status = 200, body = StatusBody)))]
async fn health() -> Json<StatusBody> {
    Json(StatusBody {
        status: "ok",
        reason: None,
    })
}

/// Redis answers: lookups can be served.
#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, description = "Redis answers", body = StatusBody),
        (status = 503, description = "Redis does not answer", body = StatusBody),
    )
)]
async fn ready(State(state): State<SharedState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(StatusBody {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(StatusBody {
                status: "not_ready",
                reason: Some(e.to_string()),
            }),
        )
            .into_response(),
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Records every request's latency by endpoint (method and matched route) and status.
async fn record_request(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let endpoint = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_string(),
    };
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .with_label_values(&[endpoint.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
