//! The registry's errors, with the HTTP status and `error_code` Confluent's registry uses,
//! so existing clients recognise them. The JSON shape is defined once, here.

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(u32),
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Schema {0} not found")]
    SchemaIdNotFound(u32),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error(
        "Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted(String, u32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level '{0}'. Valid values are: NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE")]
    InvalidCompatibilityLevel(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {}", details.join("; "))]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error("Invalid mode '{0}': this registry is always READWRITE (it is not an import or migration target)")]
    InvalidMode(String),
    #[error("Malformed query string: {0}")]
    MalformedQuery(String),
    #[error("Malformed request body: {0}")]
    MalformedBody(String),
    #[error("Request body is larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("HTTP 404 Not Found")]
    NoSuchEndpoint,
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    #[error("Error in the backend data store")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        use ApiError::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound | SchemaIdNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionSoftDeleted(..) => (StatusCode::NOT_FOUND, 40406),
            VersionNotSoftDeleted(..) => (StatusCode::NOT_FOUND, 40407),
            SubjectCompatibilityNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Incompatible { .. } => (StatusCode::CONFLICT, 409),
            InvalidMode(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            MalformedQuery(_) | MalformedBody(_) => (StatusCode::BAD_REQUEST, 400),
            BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 413),
            NoSuchEndpoint => (StatusCode::NOT_FOUND, 404),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Store(e) = &self {
            // The client learns only that the store failed; the operator gets the detail.
            tracing::error!(error = %e, "schema journal write failed");
        }
        crate::api::reply(
            status,
            &serde_json::json!({"error_code": code, "message": self.to_string()}),
        )
    }
}
