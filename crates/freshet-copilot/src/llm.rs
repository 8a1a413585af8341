//! The model client: async-openai's chat completions behind a tower stack that retries
//! 429 and 5xx with exponential backoff (async-openai's retry layer), counts every HTTP
//! attempt by status, and times out reads that stall.

use crate::config::CopilotConfig;
use crate::error::CopilotError;
use crate::metrics::CopilotMetrics;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::retry::OpenAIRetryLayer;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CompletionUsage, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }

    fn to_request(&self) -> ChatCompletionRequestMessage {
        match self.role {
            Role::System => ChatCompletionRequestSystemMessage::from(self.content.as_str()).into(),
            Role::User => ChatCompletionRequestUserMessage::from(self.content.as_str()).into(),
            Role::Assistant => {
                ChatCompletionRequestAssistantMessage::from(self.content.as_str()).into()
            }
        }
    }
}

#[derive(Clone)]
pub struct Llm {
    client: Client<OpenAIConfig>,
    model: String,
    base_url: String,
    metrics: CopilotMetrics,
}

impl Llm {
    pub fn new(config: &CopilotConfig, metrics: CopilotMetrics) -> Result<Self, CopilotError> {
        let key = config
            .api_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
            .ok_or(CopilotError::NotConfigured)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| CopilotError::Model {
                base_url: config.base_url.clone(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let attempts = metrics.http_attempts.clone();
        let service = tower::ServiceBuilder::new()
            .layer(OpenAIRetryLayer::new(config.max_retries))
            .map_result(move |result: Result<reqwest::Response, OpenAIError>| {
                let status = match &result {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "0".to_string(),
                };
                attempts.with_label_values(&[&status]).inc();
                result
            })
            .service(ReqwestService::new(http.clone()));
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(config.base_url.trim_end_matches('/'))
                .with_api_key(key),
        )
        .with_http_client(http)
        .with_http_service(service);
        Ok(Self {
            client,
            model: config.model.clone(),
            base_url: config.base_url.clone(),
            metrics,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(
        &self,
        messages: &[Message],
        stream: bool,
    ) -> Result<CreateChatCompletionRequest, CopilotError> {
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(&self.model)
            .temperature(0.2)
            .messages(messages.iter().map(Message::to_request).collect::<Vec<_>>());
        if stream {
            args.stream_options(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            });
        }
        args.build().map_err(|e| CopilotError::Model {
            base_url: self.base_url.clone(),
            reason: format!("cannot build the request: {e}"),
        })
    }

    fn failed(&self, error: OpenAIError) -> CopilotError {
        let reason = match error {
            OpenAIError::ApiError(api) => format!(
                "HTTP {}: {}",
                api.status_code.as_u16(),
                api.api_error.message
            ),
            other => other.to_string(),
        };
        CopilotError::Model {
            base_url: self.base_url.clone(),
            reason,
        }
    }

    fn record_usage(&self, usage: Option<&CompletionUsage>) {
        if let Some(usage) = usage {
            self.metrics
                .tokens
                .with_label_values(&["prompt"])
                .inc_by(usage.prompt_tokens as u64);
            self.metrics
                .tokens
                .with_label_values(&["completion"])
                .inc_by(usage.completion_tokens as u64);
        }
    }

    /// The model's whole answer to `messages`.
    pub async fn complete(
        &self,
        operation: &str,
        messages: &[Message],
    ) -> Result<String, CopilotError> {
        let request = self.request(messages, false)?;
        let started = Instant::now();
        let result = self.client.chat().create(request).await;
        self.metrics
            .call_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let response = result.map_err(|e| self.failed(e))?;
        self.record_usage(response.usage.as_ref());
        response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| CopilotError::NoAnswer {
                base_url: self.base_url.clone(),
            })
    }

    /// The model's answer to `messages`, piece by piece as the server sends it.
    pub async fn stream(
        &self,
        operation: &str,
        messages: &[Message],
    ) -> Result<impl Stream<Item = Result<String, CopilotError>> + Send + 'static, CopilotError>
    {
        let request = self.request(messages, true)?;
        let started = Instant::now();
        let result = self.client.chat().create_stream(request).await;
        self.metrics
            .call_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let stream = result.map_err(|e| self.failed(e))?;
        let this = self.clone();
        Ok(stream.filter_map(move |chunk| {
            let this = this.clone();
            async move {
                match chunk {
                    Ok(chunk) => {
                        this.record_usage(chunk.usage.as_ref());
                        chunk
                            .choices
                            .into_iter()
                            .next()
                            .and_then(|c| c.delta.content)
                            .filter(|c| !c.is_empty())
                            .map(Ok)
                    }
                    Err(e) => Some(Err(this.failed(e))),
                }
            }
        }))
    }
}
