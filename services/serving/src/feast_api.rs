//! Feast's feature-server protocol: `POST /get-online-features`, as Feast's feature server
//! answers it and Feast's `remote` online store asks it, so that Feast's SDK reads
//! Freshet's features unchanged ([feast.md](../../../docs/feast.md)). The lookup is the one
//! behind Freshet's own endpoints ([`crate::lookup`]): one read path, two answer formats.
//!
//! What maps to what:
//! - a Feast entity's join key is the view's source's entity key field (`user_id`);
//! - `view:feature` references select features (`view@latest:feature` too);
//! - per view and entity, Freshet's `found` serves `PRESENT` for stored values and
//!   `NOT_FOUND` for a feature the stored hash lacks; `missing` is `NOT_FOUND`, `expired`
//!   (older than the view's TTL) `OUTSIDE_MAX_AGE`, `unreadable` `INVALID`. Values are
//!   what Freshet serves: the feature's declared default where nothing is served (Feast
//!   would send null), so the status tells a default from a stored value;
//! - event timestamps are the stored values' event time (RFC 3339, UTC), and Feast's
//!   zero time `1970-01-01T00:00:00Z` where nothing is stored or served, as for the entity
//!   columns, which come first.
//!
//! Errors have Feast's shape, which its SDK turns back into the exception named: the body
//! is a JSON string holding `{"module": "feast.errors", "class": ..., "message": ...}`.
//! The status is a 4xx for every mistake in a request (Feast's own server answers some
//! of them with a 500).

use crate::api::{check_entity_id, AppState};
use crate::error::ApiError;
use crate::lookup::{EntityFeatures, RefError, ValueSource, ViewStatus, ViewValues};
use crate::read::read_entities;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::format::{Item, StrftimeItems};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::sync::{Arc, OnceLock};
use utoipa::ToSchema;

/// Feast's `GetOnlineFeaturesRequest`. Unknown fields are ignored, as Feast's server
/// ignores them.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GetOnlineFeaturesRequest {
    /// Entity values by join key, one column each: `{"user_id": [1, 2, "3"]}`. Ids are
    /// strings or integers.
    #[schema(value_type = Object)]
    entities: Option<serde_json::Map<String, Json>>,
    /// Feature references, `view:feature`.
    #[serde(default)]
    features: Vec<String>,
    /// Not served: Freshet has no feature services (answered with
    /// `FeatureServiceNotFoundException`).
    feature_service: Option<String>,
    /// Name the columns `view__feature` instead of `feature`.
    #[serde(default)]
    full_feature_names: bool,
    /// Add `metadata.feature_view_metadata` (each view's name, version 0: Freshet's views
    /// are not versioned).
    #[serde(default)]
    include_feature_view_version_metadata: bool,
}

/// Feast's `GetOnlineFeaturesResponse` in JSON, for the OpenAPI document (the handler
/// writes it directly).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct GetOnlineFeaturesResponse {
    metadata: FeastMetadata,
    /// One column per name in `metadata.feature_names`, entity columns first; each holds
    /// one entry per entity, in request order.
    results: Vec<FeastColumn>,
}

#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct FeastMetadata {
    /// The join key(s), then the features (`feature`, or `view__feature` with
    /// `full_feature_names`), grouped by view in the order first named.
    feature_names: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct FeastColumn {
    /// Values: numbers, strings, booleans or null.
    #[schema(value_type = Vec<serde_json::Value>)]
    values: Vec<Json>,
    /// `PRESENT`, `NOT_FOUND`, `OUTSIDE_MAX_AGE` or `INVALID`.
    statuses: Vec<String>,
    /// RFC 3339 (UTC) event time of the values; `1970-01-01T00:00:00Z` when none.
    event_timestamps: Vec<String>,
}

/// Feast's field statuses, as its JSON names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldStatus {
    Present,
    NotFound,
    OutsideMaxAge,
    Invalid,
}

impl FieldStatus {
    fn of(view: ViewStatus, source: ValueSource) -> Self {
        match (view, source) {
            (ViewStatus::Found, ValueSource::Store | ValueSource::Cache) => FieldStatus::Present,
            (ViewStatus::Found, ValueSource::Default) | (ViewStatus::Missing, _) => {
                FieldStatus::NotFound
            }
            (ViewStatus::Expired, _) => FieldStatus::OutsideMaxAge,
            // Feast has no status for a budget that ran out: no valid value was read.
            (ViewStatus::Unreadable | ViewStatus::Timeout, _) => FieldStatus::Invalid,
        }
    }

    fn json(self) -> &'static [u8] {
        match self {
            FieldStatus::Present => b"\"PRESENT\"",
            FieldStatus::NotFound => b"\"NOT_FOUND\"",
            FieldStatus::OutsideMaxAge => b"\"OUTSIDE_MAX_AGE\"",
            FieldStatus::Invalid => b"\"INVALID\"",
        }
    }
}

/// Feast's zero time: what its server sends where no value has a time.
const ZERO_TIME: &[u8] = b"\"1970-01-01T00:00:00Z\"";

/// An error in Feast's shape: the exception class its SDK raises, and the status.
#[derive(Debug)]
pub struct FeastError {
    status: StatusCode,
    /// A class of `feast.errors`.
    class: &'static str,
    message: String,
    retry_soon: bool,
}

impl FeastError {
    /// A request Freshet cannot answer as asked; `FeastError` itself (Feast's base class).
    fn request(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            class: "FeastError",
            message: message.into(),
            retry_soon: false,
        }
    }

    fn not_found(class: &'static str, message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            class,
            message,
            retry_soon: false,
        }
    }
}

impl From<ApiError> for FeastError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status(),
            class: "FeastError",
            retry_soon: matches!(e, ApiError::StoreUnavailable),
            message: e.to_string(),
        }
    }
}

impl FeastError {
    /// A reference [`crate::lookup::Catalog::select_pairs`] refused.
    fn of_ref(e: RefError, full_feature_names: bool) -> Self {
        match e {
            RefError::UnknownView { name, known } => FeastError::not_found(
                "FeatureViewNotFoundException",
                format!("Feature view {name} does not exist; Freshet serves: {known}"),
            ),
            RefError::UnknownFeature { view, name, known } => FeastError::not_found(
                "FeastObjectNotFoundException",
                format!("Feature {name} not found in feature view {view}; its features: {known}"),
            ),
            RefError::Repeated { view, feature } if full_feature_names => {
                collision(&[&format!("{view}__{feature}")], true)
            }
            RefError::Repeated { feature, .. } => collision(&[&feature], false),
        }
    }
}

impl IntoResponse for FeastError {
    fn into_response(self) -> Response {
        let detail = serde_json::json!({
            "module": "feast.errors",
            "class": self.class,
            "message": self.message,
        });
        let body = serde_json::to_vec(&detail.to_string()).expect("a string to JSON");
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if self.retry_soon {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A `view:feature` reference (`view@latest:feature` too) split in two.
fn parse_ref(reference: &str) -> Result<(&str, &str), FeastError> {
    let invalid = || {
        FeastError::request(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid feature reference '{reference}'. Expected format: '<feature_view>:<feature>'"
            ),
        )
    };
    let (view, feature) = reference.split_once(':').ok_or_else(invalid)?;
    if view.is_empty() || feature.is_empty() || feature.contains(':') {
        return Err(invalid());
    }
    let (name, version) = match view.split_once('@') {
        None => (view, None),
        Some((name, version)) => (name, Some(version)),
    };
    if name.is_empty() {
        return Err(invalid());
    }
    match version {
        None | Some("latest") => Ok((name, feature)),
        Some(_) => Err(FeastError {
            status: StatusCode::BAD_REQUEST,
            class: "VersionedOnlineReadNotSupported",
            message: format!(
                "'{reference}' asks for a version of a feature view; Freshet's views are not versioned: use '<feature_view>:<feature>'"
            ),
            retry_soon: false,
        }),
    }
}

/// Feature values in Feast's feature-server protocol.
#[utoipa::path(
    post,
    path = "/get-online-features",
    request_body = GetOnlineFeaturesRequest,
    responses(
        (status = 200, description = "Columns of values, statuses and event timestamps, entity columns first", body = GetOnlineFeaturesResponse),
        (status = 400, description = "A bad reference, entity key or entity value (a JSON string holding Feast's error detail)", body = String),
        (status = 404, description = "An unknown feature view, feature or feature service", body = String),
        (status = 413, description = "More entities than the server's maximum batch size, or a body too large", body = String),
        (status = 422, description = "A body that is not a GetOnlineFeaturesRequest", body = String),
        (status = 503, description = "Redis is unavailable", body = String),
    )
)]
pub async fn get_online_features(
    State(state): State<Arc<AppState>>,
    header: crate::api::BudgetHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FeastError> {
    let budget = crate::api::budget(None, &header)
        .map_err(|e| FeastError::request(StatusCode::BAD_REQUEST, e.to_string()))?;
    let body = body.map_err(|e| FeastError::request(e.status(), e.body_text()))?;
    let request: GetOnlineFeaturesRequest = serde_json::from_slice(&body).map_err(|e| {
        FeastError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body is not a Feast GetOnlineFeaturesRequest: {e}"),
        )
    })?;
    if let Some(service) = &request.feature_service {
        return Err(FeastError::not_found(
            "FeatureServiceNotFoundException",
            format!(
                "Feature service {service} does not exist; Freshet serves no feature services: list the features as '<feature_view>:<feature>'"
            ),
        ));
    }
    if request.features.is_empty() {
        return Err(FeastError::request(
            StatusCode::BAD_REQUEST,
            "No features specified for retrieval: list them in `features` as '<feature_view>:<feature>'",
        ));
    }
    let refs = request
        .features
        .iter()
        .map(|r| parse_ref(r))
        .collect::<Result<Vec<_>, _>>()?;
    let full_names = request.full_feature_names;
    let selection = state
        .catalog
        .select_pairs(refs.iter().copied())
        .map_err(|e| FeastError::of_ref(e, full_names))?;
    if !full_names {
        let shared = selection.shared_feature_names();
        if !shared.is_empty() {
            return Err(collision(&shared, false));
        }
    }
    let (join_key, column) = entity_column(&selection, request.entities, &state)?;
    let ids = column
        .iter()
        .enumerate()
        .map(|(position, value)| entity_id(&join_key, position, value))
        .collect::<Result<Vec<_>, _>>()?;

    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("entity_count", ids.len());
        span.record("views", selection.view_names().join(",").as_str());
    }
    state.metrics.batch_size.observe(ids.len() as f64);

    // Each entity's answer, and each (entity, view)'s timestamp as JSON in one buffer:
    // the columns are written from them at the end.
    let views = selection.view_count();
    let mut answers: Vec<EntityFeatures> = Vec::with_capacity(ids.len());
    let mut times = Times::with_capacity(ids.len() * views);
    read_entities(&state, &selection, &ids, budget, |id, read, now, tally| {
        let entity = selection.entity(id.to_string(), read, now, tally);
        for (_, view) in &entity.views.0 {
            times.push(view);
        }
        answers.push(entity);
    })
    .await?;

    let names: Vec<(&str, Vec<&str>)> = selection
        .features()
        .map(|(view, features)| (view, features.collect()))
        .collect();
    let body = answer(
        &join_key,
        &column,
        &names,
        &answers,
        &times,
        request.full_feature_names,
        request
            .include_feature_view_version_metadata
            .then(|| selection.view_names()),
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Feast's `FeatureNameCollisionError`: features answering under one name.
fn collision(names: &[&str], full_feature_names: bool) -> FeastError {
    let fix = if full_feature_names {
        "ensure that the feature views or their features have different names, and name each feature once"
    } else {
        "either use the full feature name by setting 'full_feature_names=True', or ensure that the features in question have different names"
    };
    FeastError {
        status: StatusCode::BAD_REQUEST,
        class: "FeatureNameCollisionError",
        message: format!(
            "Duplicate features named {} found.\nTo resolve this collision, {fix}.",
            names.join(", ")
        ),
        retry_soon: false,
    }
}

/// The request's one entity column: keyed by the selected views' join key, of 1 to the
/// server's maximum batch size values.
fn entity_column(
    selection: &crate::lookup::Selection<'_>,
    entities: Option<serde_json::Map<String, Json>>,
    state: &AppState,
) -> Result<(String, Vec<Json>), FeastError> {
    let mut join_keys: Vec<&str> = Vec::new();
    for (key, view) in selection.join_keys().zip(selection.view_names()) {
        if !join_keys.contains(&key) {
            if let Some(first) = join_keys.first() {
                return Err(FeastError::request(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the requested feature views have different join keys ({first} and {key}, of {view}); request the features of each entity separately"
                    ),
                ));
            }
            join_keys.push(key);
        }
    }
    let join_key = join_keys[0];
    let entities = entities.ok_or_else(|| {
        FeastError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the request has no `entities`: send {{\"entities\": {{\"{join_key}\": [1, 2]}}}}"
            ),
        )
    })?;
    if let Some(other) = entities.keys().find(|k| k.as_str() != join_key) {
        return Err(FeastError::request(
            StatusCode::BAD_REQUEST,
            format!(
                "`{other}` is not the join key of the requested feature views: they are keyed by `{join_key}` (request data for on-demand transformations is not served)"
            ),
        ));
    }
    let column = match entities.into_iter().next() {
        None => {
            return Err(FeastError::request(
                StatusCode::BAD_REQUEST,
                format!("`entities` is empty: give the values of `{join_key}`"),
            ))
        }
        Some((_, Json::Array(values))) => values,
        Some((_, other)) => {
            return Err(FeastError::request(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`entities.{join_key}` must be a list of values, not {other}"),
            ))
        }
    };
    if column.is_empty() {
        return Err(FeastError::request(
            StatusCode::BAD_REQUEST,
            format!("`entities.{join_key}` is empty: give at least one value"),
        ));
    }
    if column.len() > state.max_batch_size {
        return Err(FeastError::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} entities asked for, more than the maximum of {} (the server's --max-batch-size); split the request",
                column.len(),
                state.max_batch_size
            ),
        ));
    }
    Ok((join_key.to_string(), column))
}

/// An entity value as Freshet's entity id: a string, or an integer as its decimal text.
fn entity_id(join_key: &str, position: usize, value: &Json) -> Result<String, FeastError> {
    let integral = match value {
        Json::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Json::Number(n) => n.as_f64().and_then(crate::api::integral_id),
        _ => None,
    };
    let id = match (value, integral) {
        (Json::String(s), _) => s.clone(),
        (_, Some(id)) => id,
        (other, None) => {
            return Err(FeastError::request(
                StatusCode::BAD_REQUEST,
                format!(
                    "`entities.{join_key}[{position}]` is {other}: entity values are strings or integers"
                ),
            ))
        }
    };
    check_entity_id(position, &id).map_err(|e| {
        FeastError::request(
            StatusCode::BAD_REQUEST,
            format!("`entities.{join_key}[{position}]`: {e}"),
        )
    })?;
    Ok(id)
}

/// Each (entity, view)'s event timestamp as a JSON string, in answer order.
struct Times {
    json: Vec<u8>,
    /// Where each one ends in `json`.
    ends: Vec<usize>,
}

impl Times {
    fn with_capacity(count: usize) -> Self {
        Self {
            json: Vec::with_capacity(count * 26),
            ends: Vec::with_capacity(count),
        }
    }

    /// The time of a view's served values: their event time when found, else Feast's
    /// zero time.
    fn push(&mut self, view: &ViewValues) {
        match (view.status, view.event_time_ms) {
            (ViewStatus::Found, Some(ms)) => write_time(&mut self.json, ms),
            _ => self.json.extend_from_slice(ZERO_TIME),
        }
        self.ends.push(self.json.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.json[start..self.ends[i]]
    }
}

/// Epoch milliseconds as a JSON string in protobuf's RFC 3339 (UTC, `Z`; milliseconds
/// only when there are some), as Feast's server writes timestamps.
fn write_time(out: &mut Vec<u8>, ms: i64) {
    use std::io::Write;
    let Some(time) = DateTime::from_timestamp_millis(ms) else {
        out.extend_from_slice(ZERO_TIME);
        return;
    };
    // Parsed once: parsing the format was a fifth of a single lookup's own work.
    static FORMATS: OnceLock<[Vec<Item<'static>>; 2]> = OnceLock::new();
    let [whole, millis] = FORMATS.get_or_init(|| {
        ["\"%Y-%m-%dT%H:%M:%SZ\"", "\"%Y-%m-%dT%H:%M:%S%.3fZ\""]
            .map(|f| StrftimeItems::new(f).parse().expect("a valid time format"))
    });
    let items = if ms.rem_euclid(1_000) == 0 {
        whole
    } else {
        millis
    };
    write!(out, "{}", time.format_with_items(items.iter())).expect("a time to memory");
}

/// The answer's JSON: the entity column first, then each selected feature's (`names`:
/// per view, its features), from each entity's answer and timestamps.
#[allow(clippy::too_many_arguments)]
fn answer(
    join_key: &str,
    entity_values: &[Json],
    names: &[(&str, Vec<&str>)],
    answers: &[EntityFeatures],
    times: &Times,
    full_feature_names: bool,
    view_metadata: Option<Vec<&str>>,
) -> Vec<u8> {
    let features: usize = names.iter().map(|(_, f)| f.len()).sum();
    let mut out = Vec::with_capacity(256 + entity_values.len() * (40 + features * 48));
    out.extend_from_slice(b"{\"metadata\":{\"feature_names\":[");
    write_json(&mut out, join_key);
    for (view, features) in names {
        for feature in features {
            out.push(b',');
            if full_feature_names {
                write_json(&mut out, &format!("{view}__{feature}"));
            } else {
                write_json(&mut out, feature);
            }
        }
    }
    out.push(b']');
    if let Some(views) = view_metadata {
        out.extend_from_slice(b",\"feature_view_metadata\":[");
        for (i, view) in views.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            write_json(&mut out, view);
            out.extend_from_slice(b",\"version\":0}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"results\":[{\"values\":");
    write_json(&mut out, entity_values);
    out.extend_from_slice(b",\"statuses\":[");
    list(&mut out, entity_values.len(), |out, _| {
        out.extend_from_slice(FieldStatus::Present.json())
    });
    out.extend_from_slice(b"],\"event_timestamps\":[");
    list(&mut out, entity_values.len(), |out, _| {
        out.extend_from_slice(ZERO_TIME)
    });
    out.extend_from_slice(b"]}");
    let views = names.len();
    for (v, (_, features)) in names.iter().enumerate() {
        for j in 0..features.len() {
            let value = |e: usize| {
                let view = &answers[e].views.0[v].1;
                (view.status, &view.features.0[j].1)
            };
            out.extend_from_slice(b",{\"values\":[");
            list(&mut out, answers.len(), |out, e| {
                serde_json::to_writer(out, &value(e).1.value).expect("a value to memory")
            });
            out.extend_from_slice(b"],\"statuses\":[");
            list(&mut out, answers.len(), |out, e| {
                let (status, feature) = value(e);
                out.extend_from_slice(FieldStatus::of(status, feature.source).json())
            });
            out.extend_from_slice(b"],\"event_timestamps\":[");
            list(&mut out, answers.len(), |out, e| {
                out.extend_from_slice(times.get(e * views + v))
            });
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// `count` items written by `item`, comma-separated.
fn list(out: &mut Vec<u8>, count: usize, mut item: impl FnMut(&mut Vec<u8>, usize)) {
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        item(out, i);
    }
}

fn write_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("our answers serialise to JSON");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_as_feast_reads_them() {
        assert_eq!(parse_ref("v:f").unwrap(), ("v", "f"));
        assert_eq!(parse_ref("v@latest:f").unwrap(), ("v", "f"));
        for bad in ["v", ":f", "v:", "v:f:g", "@latest:f"] {
            let e = parse_ref(bad).unwrap_err();
            assert_eq!((e.status, e.class), (StatusCode::BAD_REQUEST, "FeastError"));
            assert!(e.message.contains(&format!("'{bad}'")), "{}", e.message);
        }
        let e = parse_ref("v@v2:f").unwrap_err();
        assert_eq!(e.class, "VersionedOnlineReadNotSupported");
    }

    #[test]
    fn colliding_names_are_feasts_collision_error() {
        let e = FeastError::of_ref(
            RefError::Repeated {
                view: "a".into(),
                feature: "x".into(),
            },
            false,
        );
        assert_eq!(e.class, "FeatureNameCollisionError");
        assert!(e.message.starts_with("Duplicate features named x found."));
        assert!(e.message.contains("full_feature_names=True"));
        let e = FeastError::of_ref(
            RefError::Repeated {
                view: "a".into(),
                feature: "x".into(),
            },
            true,
        );
        assert!(e
            .message
            .starts_with("Duplicate features named a__x found."));
    }

    #[test]
    fn errors_are_a_json_string_holding_feasts_detail() {
        let response =
            FeastError::not_found("FeatureViewNotFoundException", "gone".into()).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body =
            futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1024)).unwrap();
        let detail: String = serde_json::from_slice(&body).unwrap();
        let detail: Json = serde_json::from_str(&detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({"module": "feast.errors", "class": "FeatureViewNotFoundException", "message": "gone"})
        );
    }

    #[test]
    fn times_are_written_as_feasts_server_writes_them() {
        for (ms, text) in [
            (1_700_000_000_123, "\"2023-11-14T22:13:20.123Z\""),
            (1_700_000_000_000, "\"2023-11-14T22:13:20Z\""),
            (1_700_000_000_007, "\"2023-11-14T22:13:20.007Z\""),
            (0, "\"1970-01-01T00:00:00Z\""),
            (-1, "\"1969-12-31T23:59:59.999Z\""),
        ] {
            let mut out = Vec::new();
            write_time(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn statuses_follow_the_served_status() {
        use FieldStatus::*;
        let cases = [
            (ViewStatus::Found, ValueSource::Store, Present),
            (ViewStatus::Found, ValueSource::Cache, Present),
            (ViewStatus::Timeout, ValueSource::Default, Invalid),
            (ViewStatus::Found, ValueSource::Default, NotFound),
            (ViewStatus::Missing, ValueSource::Default, NotFound),
            (ViewStatus::Expired, ValueSource::Default, OutsideMaxAge),
            (ViewStatus::Unreadable, ValueSource::Default, Invalid),
        ];
        for (view, source, status) in cases {
            assert_eq!(FieldStatus::of(view, source), status);
        }
    }
}
