//! A local server speaking OpenAI's chat-completions protocol (`POST /v1/chat/completions`,
//! plain JSON and server-sent-event streaming), answering from a script. It stands in for
//! the one external service the project does not run itself: the LLM API.

use crate::background::BackgroundServer;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A completion with this text (streamed in pieces when the request asks to stream).
    Text(String),
    /// An HTTP error with an OpenAI-style error body.
    Error { status: u16, message: String },
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::Error {
            status,
            message: message.into(),
        }
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

impl Received {
    /// The request's messages as (role, content) pairs.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or_default().to_string(),
                            m["content"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The content of the last message.
    pub fn last_message(&self) -> String {
        self.messages().pop().map(|(_, c)| c).unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

pub struct FakeLlm {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    _server: BackgroundServer,
}

/// Prompt and completion tokens the fake reports for a text: its whitespace-separated
/// words.
pub fn tokens(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn completion(text: &str, prompt_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens(text),
            "total_tokens": prompt_tokens + tokens(text)
        }
    })
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {chunk}\n\n")
}

/// The text as server-sent events: a role chunk, one chunk per word (with its following
/// whitespace), a final chunk, a usage chunk when asked for, and `[DONE]`.
fn stream_body(text: &str, usage: Option<u32>) -> String {
    let mut body = chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    );
    let mut piece = String::new();
    for c in text.chars() {
        piece.push(c);
        if c.is_whitespace() {
            body.push_str(&chunk(serde_json::json!({"content": piece}), None));
            piece.clear();
        }
    }
    if !piece.is_empty() {
        body.push_str(&chunk(serde_json::json!({"content": piece}), None));
    }
    body.push_str(&chunk(serde_json::json!({}), Some("stop")));
    if let Some(prompt_tokens) = usage {
        let usage = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "fake-model",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens(text),
                "total_tokens": prompt_tokens + tokens(text)
            }
        });
        body.push_str(&format!("data: {usage}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

impl FakeLlm {
    /// Serves `script`, one reply per request in order, on a free loopback port.
    pub fn start(script: Vec<Reply>) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use axum::routing::post;
        let shared = Arc::new(Mutex::new(Shared {
            script: script.into(),
            received: Vec::new(),
        }));
        let state = shared.clone();
        let server = BackgroundServer::start(move || {
            axum::Router::new().route(
                    "/v1/chat/completions",
                    post(move |headers: HeaderMap, body: axum::body::Bytes| {
                        let state = state.clone();
                        async move {
                            let body: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let streaming = body["stream"].as_bool().unwrap_or(false);
                            let include_usage = body["stream_options"]["include_usage"]
                                .as_bool()
                                .unwrap_or(false);
                            let prompt_tokens: u32 = body["messages"]
                                .as_array()
                                .map(|m| {
                                    m.iter()
                                        .map(|m| tokens(m["content"].as_str().unwrap_or("")))
                                        .sum()
                                })
                                .unwrap_or(0);
                            let reply = {
                                let mut shared = state.lock().expect("fake LLM state");
                                shared.received.push(Received {
                                    authorization: headers
                                        .get("authorization")
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_string),
                                    body,
                                });
                                shared.script.pop_front()
                            };
                            let json = [("content-type", "application/json")];
                            match reply {
                                Some(Reply::Text(text)) if streaming => (
                                    StatusCode::OK,
                                    [("content-type", "text/event-stream")],
                                    stream_body(&text, include_usage.then_some(prompt_tokens)),
                                )
                                    .into_response(),
                                Some(Reply::Text(text)) => (
                                    StatusCode::OK,
                                    json,
                                    completion(&text, prompt_tokens).to_string(),
                                )
                                    .into_response(),
                                Some(Reply::Error { status, message }) => (
                                    StatusCode::from_u16(status)
                                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                                    json,
                                    serde_json::json!({"error": {
                                        "message": message,
                                        "type": if status == 429 { "rate_limit_error" } else { "server_error" },
                                        "param": null,
                                        "code": null
                                    }})
                                    .to_string(),
                                )
                                    .into_response(),
                                None => (
                                    StatusCode::BAD_REQUEST,
                                    json,
                                    serde_json::json!({"error": {
                                        "message": "the fake LLM's script is used up",
                                        "type": "invalid_request_error",
                                        "param": null,
                                        "code": null
                                    }})
                                    .to_string(),
                                )
                                    .into_response(),
                            }
                        }
                    }),
                )
        });
        Self {
            port: server.port,
            shared,
            _server: server,
        }
    }

    /// The base URL to configure a client with (`OPENAI_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("fake LLM state").received.clone()
    }

    /// Replies not yet given.
    pub fn remaining(&self) -> usize {
        self.shared.lock().expect("fake LLM state").script.len()
    }
}
