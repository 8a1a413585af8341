//! The copilot's REST endpoints (`/api/llm/...`): generate, recommend, chat (whole or
//! streamed as server-sent events) and health. Without an API key every one answers 503
//! with a message saying how to configure it.

use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use freshet_copilot::{Copilot, CopilotError, Message, SchemaOrigin};
use freshet_core::Definitions;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

pub struct LlmState {
    pub copilot: Copilot,
    pub definitions: Arc<Definitions>,
}

type SharedLlm = Arc<LlmState>;

pub fn router(state: SharedLlm) -> Router {
    Router::new()
        .route("/api/llm/health", get(llm_health))
        .route("/api/llm/generate", post(llm_generate))
        .route("/api/llm/recommend", post(llm_recommend))
        .route("/api/llm/chat", post(llm_chat))
        .with_state(state)
}

impl From<CopilotError> for ApiError {
    fn from(e: CopilotError) -> Self {
        match e {
            CopilotError::NotConfigured => ApiError::LlmNotConfigured,
            e @ CopilotError::NeverValid { .. } => ApiError::InvalidDefinition(e.to_string()),
            e if e.is_bad_request() => ApiError::BadRequest {
                status: axum::http::StatusCode::BAD_REQUEST,
                message: e.to_string(),
            },
            e => {
                tracing::warn!(error = %e, "copilot call failed");
                ApiError::LlmFailed(e.to_string())
            }
        }
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| ApiError::BadRequest {
        status: e.status(),
        message: e.body_text(),
    })
}

fn configured(state: &LlmState) -> Result<&Copilot, ApiError> {
    if state.copilot.is_configured() {
        Ok(&state.copilot)
    } else {
        Err(ApiError::LlmNotConfigured)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LlmHealth {
    /// `configured` when a key is set.
    pub status: &'static str,
    pub model: String,
    pub base_url: String,
}

/// Whether the copilot is configured, and with which model and server.
#[utoipa::path(
    get,
    path = "/api/llm/health",
    tag = "copilot",
    responses(
        (status = 200, description = "The copilot has a key", body = LlmHealth),
        (status = 503, description = "No key configured; the message says how to set one", body = ErrorBody),
    )
)]
pub async fn llm_health(State(state): State<SharedLlm>) -> Result<Json<LlmHealth>, ApiError> {
    let copilot = configured(&state)?;
    Ok(Json(LlmHealth {
        status: "configured",
        model: copilot.config().model.clone(),
        base_url: copilot.config().base_url.clone(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// What to compute, in words.
    pub description: String,
    /// The source the view reads (default: the only source).
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    /// The view's name.
    pub view: String,
    /// The definition (TOML), validated against the served definitions.
    pub definition: String,
    /// What the model said besides the definition.
    pub reasoning: String,
    /// Answers it took (validation failures are sent back to the model).
    pub attempts: usize,
}

/// A validated feature view definition from a description in words.
#[utoipa::path(
    post,
    path = "/api/llm/generate",
    tag = "copilot",
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "A definition that validates", body = GenerateResponse),
        (status = 400, description = "Empty description or unknown source", body = ErrorBody),
        (status = 422, description = "The model's answer never validated; the problems are listed", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "No key configured", body = ErrorBody),
    )
)]
pub async fn llm_generate(
    State(state): State<SharedLlm>,
    request: Result<Json<GenerateRequest>, JsonRejection>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let copilot = configured(&state)?;
    let request = body(request)?;
    let generated = copilot
        .generate(
            &state.definitions,
            &request.description,
            request.source.as_deref(),
            &SchemaOrigin::Definitions,
        )
        .await?;
    Ok(Json(GenerateResponse {
        view: generated.view,
        definition: generated.toml,
        reasoning: generated.reasoning,
        attempts: generated.attempts,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The use case, e.g. "CTR prediction for e-commerce".
    pub use_case: String,
    #[serde(default)]
    pub source: Option<String>,
    /// How many ideas (1 to 50, default 5).
    #[serde(default = "default_count")]
    pub count: usize,
}

fn default_count() -> usize {
    5
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdeaBody {
    pub name: String,
    pub description: String,
    pub aggregation: String,
    pub field: Option<String>,
    pub filter: Option<String>,
    #[schema(value_type = Object)]
    pub window: serde_json::Value,
    pub rationale: String,
    /// The idea as a `[[feature]]` table, valid over the source.
    pub feature: String,
    /// A description to send to `/api/llm/generate` for a view around it.
    pub generate_description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendResponse {
    /// Best first.
    pub ideas: Vec<IdeaBody>,
    /// Ideas that never validated, with the validator's words.
    pub dropped: Vec<DroppedIdea>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DroppedIdea {
    pub name: String,
    pub problem: String,
}

/// Ranked feature ideas for a use case, each a valid feature over the source's fields.
#[utoipa::path(
    post,
    path = "/api/llm/recommend",
    tag = "copilot",
    request_body = RecommendRequest,
    responses(
        (status = 200, description = "Validated ideas, best first", body = RecommendResponse),
        (status = 400, description = "Empty use case, bad count or unknown source", body = ErrorBody),
        (status = 422, description = "No idea ever validated", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "No key configured", body = ErrorBody),
    )
)]
pub async fn llm_recommend(
    State(state): State<SharedLlm>,
    request: Result<Json<RecommendRequest>, JsonRejection>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let copilot = configured(&state)?;
    let request = body(request)?;
    let recommendations = copilot
        .recommend(
            &state.definitions,
            &request.use_case,
            request.source.as_deref(),
            request.count,
        )
        .await?;
    Ok(Json(RecommendResponse {
        ideas: recommendations
            .ideas
            .into_iter()
            .map(|idea| IdeaBody {
                feature: idea.feature_toml(),
                generate_description: idea.as_description(),
                name: idea.name,
                description: idea.description,
                aggregation: idea.aggregation,
                field: idea.field,
                filter: idea.filter,
                window: serde_json::Value::Object(idea.window),
                rationale: idea.rationale,
            })
            .collect(),
        dropped: recommendations
            .dropped
            .into_iter()
            .map(|(name, problem)| DroppedIdea { name, problem })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The conversation so far, oldest first: `user` and `assistant` turns, the last one the
    /// user's.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Message>,
    /// Stream the answer as server-sent events (`delta` events, then `done`).
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub reply: String,
}

/// The assistant's answer to a conversation; with `"stream": true` as server-sent events:
/// `delta` events carrying pieces of text, then `done` (or `error`).
#[utoipa::path(
    post,
    path = "/api/llm/chat",
    tag = "copilot",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer (JSON, or text/event-stream when streaming)", body = ChatResponse),
        (status = 400, description = "No messages, or the last is not the user's", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "No key configured", body = ErrorBody),
    )
)]
pub async fn llm_chat(
    State(state): State<SharedLlm>,
    request: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let copilot = configured(&state)?;
    let request = body(request)?;
    if !request.stream {
        let reply = copilot.chat(&state.definitions, &request.messages).await?;
        return Ok(Json(ChatResponse { reply }).into_response());
    }
    let stream = copilot
        .chat_stream(&state.definitions, &request.messages)
        .await?;
    let events = stream
        .map(|piece| {
            Ok::<_, std::convert::Infallible>(match piece {
                Ok(text) => Event::default().event("delta").data(text),
                Err(e) => Event::default().event("error").data(e.to_string()),
            })
        })
        .chain(futures::stream::once(async {
            Ok(Event::default().event("done").data(""))
        }));
    Ok(Sse::new(events).into_response())
}
