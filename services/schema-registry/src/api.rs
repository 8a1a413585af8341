//! The Confluent Schema Registry REST API over the [`Store`](crate::store::Store).

use crate::compat::{self, CompatibilityLevel};
use crate::error::ApiError;
use crate::store::{Change, State, Store, Subject};
use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State as AxumState};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};

/// The content type of every response, as Confluent's registry sends it.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = Arc<Mutex<Store>>;
type ApiResult = Result<Response, ApiError>;

pub fn reply<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let mut response = (
        status,
        serde_json::to_vec(body).expect("responses serialise"),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok<T: Serialize + ?Sized>(body: &T) -> ApiResult {
    Ok(reply(StatusCode::OK, body))
}

/// The router with every endpoint; `max_body_bytes` bounds request bodies.
pub fn router(store: Store, max_body_bytes: usize) -> Router {
    let shared: Shared = Arc::new(Mutex::new(store));
    Router::new()
        .route(
            "/",
            get(|| async { reply(StatusCode::OK, &serde_json::json!({})) }),
        )
        .route(
            "/health",
            get(|| async { reply(StatusCode::OK, &serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, &["AVRO"]) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/mode", get(get_mode).put(put_mode))
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(get_subject_mode),
        )
        .route("/contexts", get(contexts))
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .fallback(|| async { ApiError::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(confluent_error_shape))
        .with_state((shared, max_body_bytes))
}

/// Any rejection not made by [`ApiError`] (axum's own, for a path it cannot decode, a
/// body over the limit before it is read, a timeout) gets Confluent's error shape and
/// content type too, with the HTTP status as its `error_code`, so clients report a
/// meaningful error rather than an unreadable one.
async fn confluent_error_shape(response: Response) -> Response {
    let status = response.status();
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t == CONTENT_TYPE);
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text.trim().to_string()
    };
    reply(
        status,
        &serde_json::json!({"error_code": status.as_u16(), "message": message}),
    )
}

type AppState = AxumState<(Shared, usize)>;

fn lock(shared: &Shared) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave the state half-changed (changes are
    // applied only after the journal write), so a poisoned lock is safe to reuse.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// The query parameters Confluent's registry documents, read as it reads them: a
/// boolean is true when it says `true` in any case (Python clients send `True`) and false
/// otherwise, as Java's `Boolean.parseBoolean`; `offset` and `limit` must be integers;
/// parameters it does not know (or that change nothing here: `normalize`, `format`,
/// `subject`, `force`) are ignored.
#[derive(Debug, Default)]
struct Flags {
    deleted: bool,
    deleted_only: bool,
    permanent: bool,
    verbose: bool,
    default_to_global: bool,
    fetch_max_id: bool,
    subject_prefix: Option<String>,
    offset: usize,
    /// `None` (or `-1`) for no limit.
    limit: Option<usize>,
}

impl Flags {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::MalformedQuery(e.to_string()))?;
        let mut flags = Flags::default();
        let truth = |v: &str| v.trim().eq_ignore_ascii_case("true");
        for (name, value) in pairs {
            match name.as_str() {
                "deleted" | "lookupDeletedSchema" => flags.deleted |= truth(&value),
                // Confluent's Python client spells it `deleted_only`.
                "deletedOnly" | "deleted_only" => flags.deleted_only = truth(&value),
                "permanent" => flags.permanent = truth(&value),
                "verbose" => flags.verbose = truth(&value),
                "defaultToGlobal" => flags.default_to_global = truth(&value),
                "fetchMaxId" => flags.fetch_max_id = truth(&value),
                "subjectPrefix" => flags.subject_prefix = Some(value),
                "offset" => {
                    flags.offset = value.trim().parse().map_err(|_| {
                        ApiError::MalformedQuery(format!(
                            "offset must be a non-negative integer, not '{value}'"
                        ))
                    })?
                }
                "limit" => {
                    let limit: i64 = value.trim().parse().map_err(|_| {
                        ApiError::MalformedQuery(format!(
                            "limit must be an integer (-1 for no limit), not '{value}'"
                        ))
                    })?;
                    flags.limit = usize::try_from(limit).ok();
                }
                _ => {}
            }
        }
        Ok(flags)
    }

    /// The page `offset`/`limit` select of a list.
    fn page<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flags {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Flags::parse(parts.uri.query().unwrap_or(""))
    }
}

fn body_json<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(limit)
        } else {
            ApiError::MalformedBody(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

/// A schema from a request, parsed and normalised (compact JSON), so that the same schema
/// written with other whitespace or key order gets the same id.
struct ParsedSchema {
    avro: Schema,
    normalized: String,
}

fn parse_schema(request: SchemaRequest) -> Result<ParsedSchema, ApiError> {
    if let Some(t) = request.schema_type.as_deref() {
        if !t.eq_ignore_ascii_case("AVRO") {
            return Err(ApiError::InvalidSchema(format!(
                "schema type {t} is not supported; this registry holds AVRO schemas only"
            )));
        }
    }
    if !request.references.is_empty() {
        return Err(ApiError::InvalidSchema(
            "schema references are not supported; inline the referenced types".into(),
        ));
    }
    let text = request
        .schema
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::InvalidSchema("the request has no \"schema\"".into()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::InvalidSchema(format!("the schema is not JSON: {e}")))?;
    let avro = Schema::parse(&json).map_err(|e| ApiError::InvalidSchema(e.to_string()))?;
    Ok(ParsedSchema {
        avro,
        normalized: serde_json::to_string(&json).expect("JSON re-serialises"),
    })
}

fn parse_stored(text: &str) -> Schema {
    Schema::parse_str(text).expect("stored schemas were validated when registered")
}

enum VersionRef {
    Latest,
    Number(u32),
}

fn parse_version(text: &str) -> Result<VersionRef, ApiError> {
    if text == "latest" || text == "-1" {
        return Ok(VersionRef::Latest);
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
        _ => Err(ApiError::InvalidVersion(text.to_string())),
    }
}

fn subject<'s>(
    state: &'s State,
    name: &str,
    include_deleted: bool,
) -> Result<&'s Subject, ApiError> {
    state
        .subjects
        .get(name)
        .filter(|s| {
            if include_deleted {
                !s.versions.is_empty()
            } else {
                s.is_live()
            }
        })
        .ok_or_else(|| ApiError::SubjectNotFound(name.to_string()))
}

#[derive(Serialize)]
struct VersionBody<'a> {
    subject: &'a str,
    version: u32,
    id: u32,
    schema: &'a str,
}

/// The stored text of schema `id` (given as the path segment).
fn schema_text(shared: &Shared, id: &str) -> Result<(u32, String), ApiError> {
    let id = id.parse::<u32>().map_err(|_| ApiError::SchemaNotFound)?;
    let store = lock(shared);
    let schema = store
        .state
        .schemas
        .get(&id)
        .ok_or(ApiError::SchemaIdNotFound(id))?;
    Ok((id, schema.clone()))
}

async fn schema_by_id(
    AxumState((shared, _)): AppState,
    Path(id): Path<String>,
    flags: Flags,
) -> ApiResult {
    let (_, schema) = schema_text(&shared, &id)?;
    if flags.fetch_max_id {
        let max_id = lock(&shared).state.schemas.keys().max().copied();
        return ok(&serde_json::json!({ "schema": schema, "maxId": max_id }));
    }
    ok(&serde_json::json!({ "schema": schema }))
}

async fn raw_schema_by_id(AxumState((shared, _)): AppState, Path(id): Path<String>) -> ApiResult {
    let (_, schema) = schema_text(&shared, &id)?;
    let json: serde_json::Value = serde_json::from_str(&schema).expect("stored schemas are JSON");
    ok(&json)
}

async fn versions_of_id(
    AxumState((shared, _)): AppState,
    Path(id): Path<String>,
    flags: Flags,
) -> ApiResult {
    let store = lock(&shared);
    let id = known_id(&store.state, &id)?;
    let uses: Vec<serde_json::Value> = uses_of(&store.state, id, flags.deleted)
        .into_iter()
        .map(|(subject, version)| serde_json::json!({"subject": subject, "version": version}))
        .collect();
    ok(&flags.page(uses))
}

async fn list_subjects(AxumState((shared, _)): AppState, flags: Flags) -> ApiResult {
    let store = lock(&shared);
    let prefix = flags.subject_prefix.as_deref().unwrap_or("");
    let names: Vec<&String> = store
        .state
        .subjects
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter(|(_, s)| {
            let soft_deleted = !s.is_live() && !s.versions.is_empty();
            if flags.deleted_only {
                soft_deleted
            } else {
                s.is_live() || (flags.deleted && soft_deleted)
            }
        })
        .map(|(n, _)| n)
        .collect();
    ok(&flags.page(names))
}

async fn list_versions(
    AxumState((shared, _)): AppState,
    Path(name): Path<String>,
    flags: Flags,
) -> ApiResult {
    let store = lock(&shared);
    let s = subject(&store.state, &name, flags.deleted || flags.deleted_only)?;
    let versions: Vec<u32> = s
        .versions
        .iter()
        .filter(|v| {
            if flags.deleted_only {
                v.deleted
            } else {
                flags.deleted || !v.deleted
            }
        })
        .map(|v| v.version)
        .collect();
    ok(&flags.page(versions))
}

/// Every (subject, version) using schema `id`, soft-deleted ones too with `deleted`.
fn uses_of(state: &State, id: u32, deleted: bool) -> Vec<(&str, u32)> {
    state
        .subjects
        .iter()
        .flat_map(|(name, s)| {
            s.versions
                .iter()
                .filter(move |v| v.id == id && (deleted || !v.deleted))
                .map(move |v| (name.as_str(), v.version))
        })
        .collect()
}

fn known_id(state: &State, id: &str) -> Result<u32, ApiError> {
    let id = id.parse::<u32>().map_err(|_| ApiError::SchemaNotFound)?;
    if !state.schemas.contains_key(&id) {
        return Err(ApiError::SchemaIdNotFound(id));
    }
    Ok(id)
}

async fn subjects_of_id(
    AxumState((shared, _)): AppState,
    Path(id): Path<String>,
    flags: Flags,
) -> ApiResult {
    let store = lock(&shared);
    let id = known_id(&store.state, &id)?;
    let mut subjects: Vec<&str> = uses_of(&store.state, id, flags.deleted)
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.dedup();
    ok(&flags.page(subjects))
}

/// No schema can refer to another here (references are refused on registration), so
/// the list is empty once the version is known.
async fn referenced_by(
    AxumState((shared, _)): AppState,
    Path((name, version)): Path<(String, String)>,
    flags: Flags,
) -> ApiResult {
    let version = parse_version(&version)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, flags.deleted)?;
    resolve(s, &version, flags.deleted)?;
    ok(&Vec::<u32>::new())
}

/// The one context there is: the default one, `.`.
async fn contexts(flags: Flags) -> ApiResult {
    ok(&flags.page(vec!["."]))
}

#[derive(Deserialize)]
struct ModeRequest {
    mode: Option<String>,
}

const READWRITE: &str = "READWRITE";

/// Every subject and the registry as a whole are READWRITE: this registry is never an
/// import target, and a subject may not be made read-only here.
async fn get_mode() -> ApiResult {
    ok(&serde_json::json!({ "mode": READWRITE }))
}

async fn put_mode(
    AxumState((_, limit)): AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: ModeRequest = body_json(body, limit)?;
    let mode = request.mode.unwrap_or_default();
    if !mode.eq_ignore_ascii_case(READWRITE) {
        return Err(ApiError::InvalidMode(mode));
    }
    get_mode().await
}

async fn get_subject_mode(Path(_): Path<String>) -> ApiResult {
    get_mode().await
}

async fn put_subject_mode(
    state: AppState,
    Path(_): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    put_mode(state, body).await
}

/// The (version, id) a version reference points at.
fn resolve(
    s: &Subject,
    version: &VersionRef,
    include_deleted: bool,
) -> Result<(u32, u32), ApiError> {
    let found = match version {
        VersionRef::Latest => s.live_versions().last(),
        VersionRef::Number(n) => s
            .versions
            .iter()
            .find(|v| v.version == *n && (include_deleted || !v.deleted)),
    };
    match (found, version) {
        (Some(v), _) => Ok((v.version, v.id)),
        (None, VersionRef::Number(n)) => Err(ApiError::VersionNotFound(*n)),
        (None, VersionRef::Latest) => Err(ApiError::VersionNotFound(0)),
    }
}

async fn get_version(
    AxumState((shared, _)): AppState,
    Path((name, version)): Path<(String, String)>,
    flags: Flags,
) -> ApiResult {
    let version = parse_version(&version)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, flags.deleted)?;
    let (version, id) = resolve(s, &version, flags.deleted)?;
    ok(&VersionBody {
        subject: &name,
        version,
        id,
        schema: &store.state.schemas[&id],
    })
}

async fn raw_version(
    AxumState((shared, _)): AppState,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let version = parse_version(&version)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, false)?;
    let (_, id) = resolve(s, &version, false)?;
    let json: serde_json::Value =
        serde_json::from_str(&store.state.schemas[&id]).expect("stored schemas are JSON");
    ok(&json)
}

fn level_of(state: &State, name: &str) -> CompatibilityLevel {
    state
        .subjects
        .get(name)
        .and_then(|s| s.compatibility)
        .unwrap_or(state.global_compatibility)
}

fn live_schemas(state: &State, s: &Subject) -> Vec<(u32, Schema)> {
    s.live_versions()
        .map(|v| (v.version, parse_stored(&state.schemas[&v.id])))
        .collect()
}

async fn register(
    AxumState((shared, limit)): AppState,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let parsed = parse_schema(body_json(body, limit)?)?;
    let mut store = lock(&shared);
    let state = &store.state;
    let existing = state.subjects.get(&name);
    if let Some(s) = existing {
        if let Some(v) = s
            .live_versions()
            .find(|v| state.schemas[&v.id] == parsed.normalized)
        {
            return ok(&serde_json::json!({ "id": v.id }));
        }
        let problems = compat::check(
            level_of(state, &name),
            &parsed.avro,
            &live_schemas(state, s),
        );
        if !problems.is_empty() {
            return Err(ApiError::Incompatible {
                subject: name,
                details: problems,
            });
        }
    }
    let id = state
        .ids
        .get(&parsed.normalized)
        .copied()
        .unwrap_or_else(|| state.next_id());
    let version = existing.map_or(0, |s| s.last_version) + 1;
    store.commit(Change::Register {
        subject: name.clone(),
        version,
        id,
        schema: parsed.normalized,
    })?;
    tracing::info!(subject = %name, version, id, "schema registered");
    ok(&serde_json::json!({ "id": id }))
}

async fn lookup(
    AxumState((shared, limit)): AppState,
    Path(name): Path<String>,
    flags: Flags,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let parsed = parse_schema(body_json(body, limit)?)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, flags.deleted)?;
    let v = s
        .versions
        .iter()
        .filter(|v| flags.deleted || !v.deleted)
        .find(|v| store.state.schemas[&v.id] == parsed.normalized)
        .ok_or(ApiError::SchemaNotFound)?;
    ok(&VersionBody {
        subject: &name,
        version: v.version,
        id: v.id,
        schema: &store.state.schemas[&v.id],
    })
}

async fn delete_subject(
    AxumState((shared, _)): AppState,
    Path(name): Path<String>,
    flags: Flags,
) -> ApiResult {
    let mut store = lock(&shared);
    let s = subject(&store.state, &name, true)?;
    let live: Vec<u32> = s.live_versions().map(|v| v.version).collect();
    let all: Vec<u32> = s.versions.iter().map(|v| v.version).collect();
    let targets = match (flags.permanent, live.is_empty()) {
        (false, true) => return Err(ApiError::SubjectSoftDeleted(name)),
        (false, false) => live,
        (true, false) => return Err(ApiError::SubjectNotSoftDeleted(name)),
        (true, true) => all,
    };
    for &version in &targets {
        store.commit(Change::DeleteVersion {
            subject: name.clone(),
            version,
            permanent: flags.permanent,
        })?;
    }
    tracing::info!(subject = %name, permanent = flags.permanent, "subject deleted");
    ok(&targets)
}

async fn delete_version(
    AxumState((shared, _)): AppState,
    Path((name, version)): Path<(String, String)>,
    flags: Flags,
) -> ApiResult {
    let version_ref = parse_version(&version)?;
    let mut store = lock(&shared);
    let s = subject(&store.state, &name, true)?;
    let (version, _) = resolve(s, &version_ref, true)?;
    let deleted = s.versions.iter().any(|v| v.version == version && v.deleted);
    match (flags.permanent, deleted) {
        (false, true) => return Err(ApiError::VersionSoftDeleted(name, version)),
        (true, false) => return Err(ApiError::VersionNotSoftDeleted(name, version)),
        _ => {}
    }
    store.commit(Change::DeleteVersion {
        subject: name,
        version,
        permanent: flags.permanent,
    })?;
    ok(&version)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRequest {
    compatibility: Option<String>,
    /// What `GET /config` answers with; clients that send back what they read use it.
    compatibility_level: Option<String>,
}

fn parse_level(body: ConfigRequest) -> Result<CompatibilityLevel, ApiError> {
    let text = body
        .compatibility
        .or(body.compatibility_level)
        .unwrap_or_default();
    text.parse()
        .map_err(|_| ApiError::InvalidCompatibilityLevel(text))
}

async fn get_global_config(AxumState((shared, _)): AppState) -> ApiResult {
    let store = lock(&shared);
    ok(&serde_json::json!({"compatibilityLevel": store.state.global_compatibility}))
}

async fn put_global_config(
    AxumState((shared, limit)): AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let level = parse_level(body_json(body, limit)?)?;
    lock(&shared).commit(Change::SetCompatibility {
        subject: None,
        level: Some(level),
    })?;
    ok(&serde_json::json!({ "compatibility": level }))
}

/// Back to the default level (BACKWARD); answers with the level it replaced.
async fn delete_global_config(AxumState((shared, _)): AppState) -> ApiResult {
    let mut store = lock(&shared);
    let previous = store.state.global_compatibility;
    store.commit(Change::SetCompatibility {
        subject: None,
        level: Some(CompatibilityLevel::default()),
    })?;
    ok(&serde_json::json!({ "compatibilityLevel": previous }))
}

async fn get_subject_config(
    AxumState((shared, _)): AppState,
    Path(name): Path<String>,
    flags: Flags,
) -> ApiResult {
    let store = lock(&shared);
    match store
        .state
        .subjects
        .get(&name)
        .and_then(|s| s.compatibility)
    {
        Some(level) => ok(&serde_json::json!({ "compatibilityLevel": level })),
        None if flags.default_to_global => {
            ok(&serde_json::json!({ "compatibilityLevel": store.state.global_compatibility }))
        }
        None => Err(ApiError::SubjectCompatibilityNotConfigured(name)),
    }
}

async fn put_subject_config(
    AxumState((shared, limit)): AppState,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let level = parse_level(body_json(body, limit)?)?;
    lock(&shared).commit(Change::SetCompatibility {
        subject: Some(name),
        level: Some(level),
    })?;
    ok(&serde_json::json!({ "compatibility": level }))
}

async fn delete_subject_config(
    AxumState((shared, _)): AppState,
    Path(name): Path<String>,
) -> ApiResult {
    let mut store = lock(&shared);
    let previous = store
        .state
        .subjects
        .get(&name)
        .and_then(|s| s.compatibility)
        .ok_or_else(|| ApiError::SubjectCompatibilityNotConfigured(name.clone()))?;
    store.commit(Change::SetCompatibility {
        subject: Some(name),
        level: None,
    })?;
    ok(&serde_json::json!({ "compatibilityLevel": previous }))
}

fn compatibility_reply(problems: Vec<String>, verbose: bool) -> ApiResult {
    if verbose {
        ok(&serde_json::json!({"is_compatible": problems.is_empty(), "messages": problems}))
    } else {
        ok(&serde_json::json!({"is_compatible": problems.is_empty()}))
    }
}

async fn check_version(
    AxumState((shared, limit)): AppState,
    Path((name, version)): Path<(String, String)>,
    flags: Flags,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let version_ref = parse_version(&version)?;
    let parsed = parse_schema(body_json(body, limit)?)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, false)?;
    let level = level_of(&store.state, &name);
    let history = live_schemas(&store.state, s);
    let against: Vec<(u32, Schema)> = match version_ref {
        // Against "latest", a transitive level means the whole history, as on registration.
        VersionRef::Latest => history,
        VersionRef::Number(_) => {
            let (v, id) = resolve(s, &version_ref, false)?;
            vec![(v, parse_stored(&store.state.schemas[&id]))]
        }
    };
    compatibility_reply(compat::check(level, &parsed.avro, &against), flags.verbose)
}

async fn check_all(
    AxumState((shared, limit)): AppState,
    Path(name): Path<String>,
    flags: Flags,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let parsed = parse_schema(body_json(body, limit)?)?;
    let store = lock(&shared);
    let s = subject(&store.state, &name, false)?;
    let level = level_of(&store.state, &name);
    let history = live_schemas(&store.state, s);
    compatibility_reply(compat::check(level, &parsed.avro, &history), flags.verbose)
}
