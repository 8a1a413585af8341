//! Every error the API answers with, and its one JSON shape:
//! `{"error": {"code": "unknown_view", "message": "..."}}`.
//!
//! 4xx messages name what was wrong in the request and what would be right. 5xx messages
//! say only what failed; the detail goes to the log.

use crate::store::StoreError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown feature view `{name}`; known views: {known}")]
    UnknownView { name: String, known: String },
    #[error("unknown feature `{name}` in view(s) {views}; known features: {known}")]
    UnknownFeature {
        name: String,
        views: String,
        known: String,
    },
    #[error("an empty {0} name was given; list names separated by commas")]
    EmptyName(&'static str),
    #[error("the batch is empty: give at least one entity id in `entity_ids`")]
    EmptyBatch,
    #[error("the batch has {size} entity ids, more than the maximum of {max} (the server's --max-batch-size); split it into smaller batches")]
    BatchTooLarge { size: usize, max: usize },
    #[error("give the entity ids in `entity_ids` or in `user_ids`, not in both")]
    BothIdLists,
    #[error("the request body has no `entity_ids`: send {{\"entity_ids\": [\"1\", \"2\"]}}")]
    NoIdList,
    #[error("entity id {position} is {problem}")]
    BadEntityId {
        position: usize,
        problem: &'static str,
    },
    #[error("the latency budget {given:?} is not a whole number of milliseconds from 1 to {max} (`budget_ms` in the query, or the `x-freshet-budget-ms` header)")]
    BadBudget { given: String, max: u64 },
    /// A body or query string the extractors rejected; `message` says why.
    #[error("{message}")]
    BadRequest { status: StatusCode, message: String },
    #[error("no endpoint {method} {path}; the API is described at /docs")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; the API is described at /docs")]
    MethodNotAllowed { method: String, path: String },
    #[error(
        "the feature store (Redis) is unavailable; the service reconnects by itself, retry shortly"
    )]
    StoreUnavailable,
    #[error("the feature store (Redis) failed to answer the lookup")]
    StoreFailed,
    #[error("{}", freshet_copilot::NOT_CONFIGURED)]
    LlmNotConfigured,
    #[error("{0}")]
    InvalidDefinition(String),
    #[error("{0}")]
    LlmFailed(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many copilot requests for this API key (at most {per_minute} a minute); retry in {retry_after_s} s")]
    RateLimited { per_minute: u32, retry_after_s: u64 },
    #[error(
        "the copilot is disabled on this server (start freshet-serving with --enable-copilot)"
    )]
    CopilotDisabled,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            // What was asked for does not exist (as Feast's protocol answers it too).
            UnknownView { .. } | UnknownFeature { .. } => StatusCode::NOT_FOUND,
            EmptyName(_)
            | EmptyBatch
            | BothIdLists
            | NoIdList
            | BadEntityId { .. }
            | BadBudget { .. } => StatusCode::BAD_REQUEST,
            BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BadRequest { status, .. } => *status,
            NoRoute { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            StoreFailed => StatusCode::INTERNAL_SERVER_ERROR,
            LlmNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            InvalidDefinition(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LlmFailed(_) => StatusCode::BAD_GATEWAY,
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden(_) => StatusCode::FORBIDDEN,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            CopilotDisabled => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            UnknownView { .. } => "unknown_view",
            UnknownFeature { .. } => "unknown_feature",
            EmptyName(_) => "empty_name",
            EmptyBatch => "empty_batch",
            BatchTooLarge { .. } => "batch_too_large",
            BothIdLists => "both_id_lists",
            NoIdList => "no_entity_ids",
            BadEntityId { .. } => "bad_entity_id",
            BadBudget { .. } => "bad_budget",
            BadRequest { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            BadRequest { status, .. } if *status == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "unsupported_media_type"
            }
            BadRequest { .. } => "bad_request",
            NoRoute { .. } => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            StoreUnavailable => "store_unavailable",
            StoreFailed => "store_failed",
            LlmNotConfigured => "llm_not_configured",
            InvalidDefinition(_) => "invalid_definition",
            LlmFailed(_) => "llm_failed",
            Unauthorized(_) => "unauthorized",
            Forbidden(_) => "forbidden",
            RateLimited { .. } => "rate_limited",
            CopilotDisabled => "copilot_disabled",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable,
            StoreError::Failed(detail) | StoreError::BadUrl { reason: detail, .. } => {
                tracing::error!(error = %detail, "feature store lookup failed");
                ApiError::StoreFailed
            }
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `unknown_view`, `unknown_feature`, `empty_batch`,
    /// `batch_too_large`, `bad_request`, `store_unavailable`, ...
    pub code: String,
    /// What was wrong and what would be right.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Redis comes back by itself; a missing key does not.
        let retry_after = match &self {
            ApiError::StoreUnavailable => Some(1),
            ApiError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
