//! chat: an assistant that knows the definition format, the views that exist and the
//! CLI. The caller keeps the history (the CLI in memory, API clients in their requests).

use crate::context::{describe_views, CLI_GUIDE, FORMAT_GUIDE};
use crate::error::CopilotError;
use crate::llm::{Message, Role};
use freshet_core::definitions::Definitions;

/// Most messages of history sent to the model; older ones are left out.
pub const MAX_HISTORY: usize = 40;

pub fn system_prompt(defs: &Definitions) -> String {
    let sources: Vec<String> = defs
        .sources
        .iter()
        .map(|s| {
            format!(
                "- {} (topic {}): {}",
                s.name,
                s.topic,
                s.schema.field_names().join(", ")
            )
        })
        .collect();
    format!(
        "You are Freshet's assistant. Freshet is a real-time feature platform: events on \
         Kafka (Avro), a stream processor computing windowed features exactly once, values \
         in Redis, an HTTP API serving them. Answer questions about defining features, \
         running the platform and reading its values; be brief and concrete, and give \
         definitions as TOML in the format below. If something is not in what you are told \
         here, say you do not know.\n\n\
         Sources and their fields:\n{}\n\n{}\nCommands:\n{CLI_GUIDE}\n\n\
         The definition format:\n\n{FORMAT_GUIDE}",
        sources.join("\n"),
        describe_views(defs),
    )
}

/// The messages to send for `history` (user and assistant turns, oldest first): the
/// system prompt, then the latest [`MAX_HISTORY`] turns. The last turn must be the user's.
pub fn conversation(defs: &Definitions, history: &[Message]) -> Result<Vec<Message>, CopilotError> {
    match history.last() {
        Some(m) if m.role == Role::User && !m.content.trim().is_empty() => {}
        Some(_) => {
            return Err(CopilotError::BadRequest(
                "the last message must be the user's, and not empty".into(),
            ))
        }
        None => return Err(CopilotError::BadRequest("send at least one message".into())),
    }
    if history.iter().any(|m| m.role == Role::System) {
        return Err(CopilotError::BadRequest(
            "messages are the user's and the assistant's; the system prompt is Freshet's".into(),
        ));
    }
    let start = history.len().saturating_sub(MAX_HISTORY);
    let mut messages = vec![Message::system(system_prompt(defs))];
    messages.extend_from_slice(&history[start..]);
    Ok(messages)
}
