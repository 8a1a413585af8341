//! The routes: lookups, health, metrics and the OpenAPI docs (the copilot's are in
//! [`crate::copilot_api`]). Handlers are plain async
//! functions over one shared [`AppState`]; every error goes through [`ApiError`].

use crate::error::{ApiError, ErrorBody};
use crate::lookup::{
    AnswerJson, Catalog, EntityFeatures, FeatureValue, Selection, ValueSource, ViewStatus,
    ViewValues,
};
use crate::metrics::ServingMetrics;
use crate::near_cache::NearCache;
use crate::read::read_entities;
use crate::store::FeatureStore;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Longest entity id accepted, in characters.
pub const MAX_ENTITY_ID_CHARS: usize = 512;

pub struct AppState {
    /// Made once per service and kept for the life of the process, so that
    /// `full_selection`, which borrows it, is made once too.
    pub catalog: &'static Catalog,
    /// The selection of every view and feature: what a lookup without `view` or
    /// `features` reads, and its answer's JSON fragments.
    pub full_selection: Selection<'static>,
    pub full_json: AnswerJson,
    pub store: FeatureStore,
    /// The near cache, when on.
    pub cache: Option<Arc<NearCache>>,
    pub metrics: ServingMetrics,
    pub max_batch_size: usize,
    /// Time a lookup may take before it is answered with 408.
    pub request_timeout: Duration,
}

impl AppState {
    /// The state of a service over `catalog` (leaked: one per service, for the
    /// process's life).
    pub fn new(
        catalog: Catalog,
        store: FeatureStore,
        cache: Option<Arc<NearCache>>,
        metrics: ServingMetrics,
        max_batch_size: usize,
        request_timeout: Duration,
    ) -> Self {
        let catalog: &'static Catalog = Box::leak(Box::new(catalog));
        let full_selection = catalog
            .select(None::<[&str; 0]>, None::<[&str; 0]>)
            .expect("every view and feature is a valid selection");
        Self {
            catalog,
            full_json: full_selection.answer_json(),
            full_selection,
            store,
            cache,
            metrics,
            max_batch_size,
            request_timeout,
        }
    }
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
/// included. Lookups time out after the state's `request_timeout` (with a timer only if
/// not answered at once: [`crate::lazy_timeout`]); `extra` (the copilot's routes) brings
/// its own timeout. Requests with a body (lookups' and `extra`'s) may be up to
/// `body_limit` bytes. Tracing is added by [`crate::app`].
pub fn router(
    state: SharedState,
    extra: Router,
    document: utoipa::openapi::OpenApi,
    access: Arc<crate::auth::Access>,
    body_limit: usize,
) -> Router {
    let body_limit = axum::extract::DefaultBodyLimit::max(body_limit);
    let with_bodies = Router::new()
        .route("/features/batch", post(batch_features))
        .route(
            "/get-online-features",
            post(crate::feast_api::get_online_features),
        )
        .layer(body_limit);
    let front_door = Arc::new(FrontDoor::new(access, &state.metrics));
    Router::new()
        .route("/features/{entity_id}", get(get_features))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(with_bodies)
        // The timeout covers reading a body too.
        .layer(crate::lazy_timeout::LazyTimeoutLayer::new(
            state.request_timeout,
        ))
        .with_state(state.clone())
        .merge(extra.layer(body_limit))
        .merge(freshet_telemetry::metrics::router(
            state.metrics.registry.clone(),
        ))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            front_door,
            FrontDoor::pass,
        ))
}

/// Which views and features to return (all when not given).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SelectionQuery {
    /// Feature view name(s), comma-separated.
    view: Option<String>,
    /// Feature names, comma-separated.
    features: Option<String>,
    /// Latency budget in milliseconds (1 to 60000): views not read within it come back
    /// with status `timeout` and their defaults. The `x-freshet-budget-ms` header does
    /// the same.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 60000)]
    budget_ms: Option<String>,
}

/// The latency budget of a batch lookup.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BudgetQuery {
    /// Latency budget in milliseconds (1 to 60000): entities not read within it come
    /// back with status `timeout` and their defaults. The `x-freshet-budget-ms` header
    /// does the same.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 60000)]
    budget_ms: Option<String>,
}

/// Longest latency budget a request may ask for, in milliseconds.
pub const MAX_BUDGET_MS: u64 = 60_000;
/// The header that carries a latency budget.
pub const BUDGET_HEADER: &str = "x-freshet-budget-ms";

/// The [`BUDGET_HEADER`] of a request, if it has one (taken without copying the other
/// headers).
pub struct BudgetHeader(Option<axum::http::HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for BudgetHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(BudgetHeader(parts.headers.get(BUDGET_HEADER).cloned()))
    }
}

/// A request's latency budget, from the query or the header (the query's wins when both
/// are given; either being malformed is an error).
pub(crate) fn budget(
    query: Option<&str>,
    header: &BudgetHeader,
) -> Result<Option<Duration>, ApiError> {
    let parse = |text: &str| match text.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_BUDGET_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(ApiError::BadBudget {
            given: text.to_string(),
            max: MAX_BUDGET_MS,
        }),
    };
    let header = match &header.0 {
        Some(value) => Some(parse(&String::from_utf8_lossy(value.as_bytes()))?),
        None => None,
    };
    Ok(match query {
        Some(text) => Some(parse(text)?),
        None => header,
    })
}

/// Features of one entity.
#[utoipa::path(
    get,
    path = "/features/{entity_id}",
    params(("entity_id" = String, Path, description = "The entity's id, e.g. a user id"), SelectionQuery),
    responses(
        (status = 200, description = "The entity's features; defaults where nothing is stored", body = EntityFeatures),
        (status = 400, description = "A bad entity id, an empty name, a bad budget or an unknown query parameter", body = ErrorBody),
        (status = 404, description = "An unknown view or feature, or a feature not in the selected views", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
async fn get_features(
    State(state): State<SharedState>,
    Path(entity_id): Path<String>,
    header: BudgetHeader,
    query: Result<Query<SelectionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "{}; the query takes `view` and `features`, each a comma-separated list of names, and `budget_ms`",
            e.body_text()
        ),
    })?;
    let budget = budget(query.budget_ms.as_deref(), &header)?;
    check_entity_id(0, &entity_id)?;
    let everything = query.view.is_none() && query.features.is_none();
    let narrower;
    let selection = if everything {
        &state.full_selection
    } else {
        narrower = state.catalog.select(
            query.view.as_deref().map(|v| v.split(',')),
            query.features.as_deref().map(|f| f.split(',')),
        )?;
        &narrower
    };
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("entity_count", 1);
        span.record("views", selection.view_names().join(",").as_str());
    }
    // The answer's fixed JSON fragments: made once for the whole selection (the usual
    // lookup), per request for a narrower one.
    let narrower_json;
    let json = if everything {
        &state.full_json
    } else {
        narrower_json = selection.answer_json();
        &narrower_json
    };
    let mut body = Vec::with_capacity(ANSWER_BYTES_PER_VIEW * selection.view_count());
    let ids = [entity_id];
    read_entities(&state, selection, &ids, budget, |id, read, now, tally| {
        selection.write_entity(json, id, read, now, tally, &mut body);
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
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
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<EntityId, E> {
                integral_id(v)
                    .map(EntityId)
                    .ok_or_else(|| E::invalid_type(serde::de::Unexpected::Float(v), &self))
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
        (status = 400, description = "Malformed JSON, an empty batch, a bad id, both id lists, a bad budget", body = ErrorBody),
        (status = 404, description = "An unknown view or feature, or a feature not in the selected views", body = ErrorBody),
        (status = 413, description = "More entity ids than the server's maximum batch size", body = ErrorBody),
        (status = 422, description = "Well-formed JSON of the wrong shape or types", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
async fn batch_features(
    State(state): State<SharedState>,
    header: BudgetHeader,
    query: Result<Query<BudgetQuery>, QueryRejection>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        message: format!("{}; the query takes only `budget_ms`", e.body_text()),
    })?;
    let budget = budget(query.budget_ms.as_deref(), &header)?;
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
    if !span.is_disabled() {
        span.record("entity_count", entities.len());
        span.record("views", selection.view_names().join(",").as_str());
    }
    state.metrics.batch_size.observe(entities.len() as f64);
    let body = batch_body(&state, &selection, entities, budget, started).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A JSON number written with a fraction or exponent but no fractional part (`324.0`,
/// which JSON Schema counts as an integer) as the integer's decimal text. Only up to
/// 2^53, where every integer is exactly a float: beyond it (and for integers written
/// outside the 64-bit range, which the parser reads as floats) the float may not be the
/// number the client wrote, and `None` refuses it rather than serve another entity.
pub(crate) fn integral_id(v: f64) -> Option<String> {
    const EXACT: f64 = (1u64 << 53) as f64;
    if v.fract() != 0.0 || v.abs() > EXACT {
        return None;
    }
    Some((v as i64).to_string())
}

pub(crate) fn check_entity_id(position: usize, id: &str) -> Result<(), ApiError> {
    let problem = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_ENTITY_ID_CHARS && id.chars().count() > MAX_ENTITY_ID_CHARS {
        "longer than 512 characters"
    } else if id.chars().any(char::is_control) {
        "holding control characters"
    } else {
        return Ok(());
    };
    Err(ApiError::BadEntityId { position, problem })
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
    budget: Option<Duration>,
    started: Instant,
) -> Result<Vec<u8>, ApiError> {
    let mut body =
        Vec::with_capacity(64 + entities.len() * selection.view_count() * ANSWER_BYTES_PER_VIEW);
    body.extend_from_slice(b"{\"batch_size\":");
    write_json(&mut body, &entities.len());
    body.extend_from_slice(b",\"results\":[");
    let json = selection.answer_json();
    read_entities(
        state,
        selection,
        &entities,
        budget,
        |id, read, now, tally| {
            if body.last() != Some(&b'[') {
                body.push(b',');
            }
            selection.write_entity(&json, id, read, now, tally, &mut body);
        },
    )
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

/// What every request passes on its way in and out: the access check
/// ([`crate::auth::Access::check`]), then the request's latency by endpoint (method and
/// matched route) and status. One middleware for both, as each costs every request.
pub struct FrontDoor {
    access: Arc<crate::auth::Access>,
    requests: prometheus::HistogramVec,
    /// `requests` of the usual request, a single lookup answered 200, looked up once.
    single_lookup_ok: prometheus::Histogram,
}

impl FrontDoor {
    const SINGLE_LOOKUP: &str = "/features/{entity_id}";

    fn new(access: Arc<crate::auth::Access>, metrics: &ServingMetrics) -> Self {
        let single = format!("{} {}", Method::GET, Self::SINGLE_LOOKUP);
        Self {
            access,
            single_lookup_ok: metrics
                .requests
                .with_label_values(&[single.as_str(), "200"]),
            requests: metrics.requests.clone(),
        }
    }

    async fn pass(State(door): State<Arc<FrontDoor>>, request: Request, next: Next) -> Response {
        let started = Instant::now();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let response = match door.access.check(request.uri().path(), request.headers()) {
            Ok(()) => next.run(request).await,
            Err(error) => error.into_response(),
        };
        let seconds = started.elapsed().as_secs_f64();
        let status = response.status();
        match route {
            Some(route)
                if status == StatusCode::OK
                    && method == Method::GET
                    && route.as_str() == Self::SINGLE_LOOKUP =>
            {
                door.single_lookup_ok.observe(seconds)
            }
            Some(route) => door
                .requests
                .with_label_values(&[
                    format!("{method} {}", route.as_str()).as_str(),
                    status.as_str(),
                ])
                .observe(seconds),
            None => door
                .requests
                .with_label_values(&["unmatched", status.as_str()])
                .observe(seconds),
        }
        response
    }
}
