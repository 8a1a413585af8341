//! Everything that can go wrong in the copilot, each saying what to do about it.

use crate::config::NOT_CONFIGURED;

#[derive(Debug, thiserror::Error)]
pub enum CopilotError {
    #[error("{NOT_CONFIGURED}")]
    NotConfigured,
    #[error("the model server at {base_url} failed: {reason}")]
    Model { base_url: String, reason: String },
    #[error("the model server at {base_url} sent no answer")]
    NoAnswer { base_url: String },
    #[error(
        "the model's definition was still invalid after {attempts} attempt(s); last problems:\n{}",
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    NeverValid {
        attempts: usize,
        problems: Vec<String>,
    },
    #[error("no source named `{name}` in the definitions (sources: {known})")]
    UnknownSource { name: String, known: String },
    #[error("cannot read the schema of `{subject}` from the registry at {url}: {reason}")]
    Registry {
        url: String,
        subject: String,
        reason: String,
    },
    #[error("{0}")]
    BadRequest(String),
}

impl CopilotError {
    /// Whether the error is the caller's (bad input) rather than the model's or the
    /// server's.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            CopilotError::BadRequest(_) | CopilotError::UnknownSource { .. }
        )
    }
}
