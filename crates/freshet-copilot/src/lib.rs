//! The LLM copilot: feature definitions from plain language, feature ideas for a use case,
//! and a chat assistant, over any server speaking OpenAI's chat-completions API.
//!
//! - [`config`]: base URL, model, key, timeout, retries; without a key nothing is called
//!   and every operation answers [`CopilotError::NotConfigured`] saying how to set one.
//! - [`llm`]: async-openai behind a tower stack: retries on 429/5xx with backoff, a read
//!   timeout, every HTTP attempt and every reported token counted in [`metrics`].
//! - [`context`]: what the model is told: the documented definition format, the source's
//!   fields (from the definitions or the schema registry), the existing views, the CLI.
//! - [`generate`], [`recommend`], [`chat`]: the three operations. Model output is never
//!   trusted: definitions and ideas are validated by `freshet-core` before anything is
//!   returned as one, and failures go back to the model a bounded number of times.

pub mod chat;
pub mod config;
pub mod context;
pub mod error;
pub mod generate;
pub mod llm;
pub mod metrics;
pub mod recommend;

pub use config::{CopilotConfig, NOT_CONFIGURED};
pub use context::{SchemaOrigin, SourceContext};
pub use error::CopilotError;
pub use generate::Generated;
pub use llm::{Message, Role};
pub use metrics::CopilotMetrics;
pub use recommend::{Idea, Recommendations};

use freshet_core::definitions::Definitions;
use futures::Stream;
use std::pin::Pin;

/// A stream of answer pieces.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<String, CopilotError>> + Send>>;

/// The copilot, configured or not.
#[derive(Clone)]
pub struct Copilot {
    config: CopilotConfig,
    llm: Option<llm::Llm>,
    metrics: CopilotMetrics,
}

impl Copilot {
    /// A copilot for `config`; one without a key answers every call with
    /// [`CopilotError::NotConfigured`].
    pub fn new(config: CopilotConfig, metrics: CopilotMetrics) -> Result<Self, CopilotError> {
        let llm = if config.is_configured() {
            Some(llm::Llm::new(&config, metrics.clone())?)
        } else {
            None
        };
        Ok(Self {
            config,
            llm,
            metrics,
        })
    }

    pub fn config(&self) -> &CopilotConfig {
        &self.config
    }

    pub fn is_configured(&self) -> bool {
        self.llm.is_some()
    }

    fn llm(&self) -> Result<&llm::Llm, CopilotError> {
        self.llm.as_ref().ok_or(CopilotError::NotConfigured)
    }

    fn outcome<T>(&self, operation: &str, result: &Result<T, CopilotError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(CopilotError::NeverValid { .. }) => "invalid",
            Err(e) if e.is_bad_request() => "bad_request",
            Err(CopilotError::NotConfigured) => "not_configured",
            Err(_) => "error",
        };
        self.metrics
            .operations
            .with_label_values(&[operation, outcome])
            .inc();
    }

    /// A validated view definition for `description` over `source` (the only source when
    /// `None`).
    pub async fn generate(
        &self,
        defs: &Definitions,
        description: &str,
        source: Option<&str>,
        origin: &SchemaOrigin,
    ) -> Result<Generated, CopilotError> {
        let result = async {
            let llm = self.llm()?;
            let source = context::source_context(defs, source, origin).await?;
            let repairs = self.metrics.repairs.with_label_values(&["generate"]);
            generate::generate(
                llm,
                defs,
                &source,
                description,
                self.config.max_repairs,
                || repairs.inc(),
            )
            .await
        }
        .await;
        self.outcome("generate", &result);
        result
    }

    /// Up to `count` validated feature ideas for `use_case`, best first.
    pub async fn recommend(
        &self,
        defs: &Definitions,
        use_case: &str,
        source: Option<&str>,
        count: usize,
    ) -> Result<Recommendations, CopilotError> {
        let result = async {
            let llm = self.llm()?;
            let source = context::source_context(defs, source, &SchemaOrigin::Definitions).await?;
            let repairs = self.metrics.repairs.with_label_values(&["recommend"]);
            recommend::recommend(
                llm,
                defs,
                &source,
                use_case,
                count,
                self.config.max_repairs,
                || repairs.inc(),
            )
            .await
        }
        .await;
        self.outcome("recommend", &result);
        result
    }

    /// The assistant's answer to the conversation `history`, piece by piece.
    pub async fn chat_stream(
        &self,
        defs: &Definitions,
        history: &[Message],
    ) -> Result<AnswerStream, CopilotError> {
        let result = async {
            let llm = self.llm()?;
            let messages = chat::conversation(defs, history)?;
            let stream = llm.stream("chat", &messages).await?;
            Ok(Box::pin(stream) as AnswerStream)
        }
        .await;
        self.outcome("chat", &result);
        result
    }

    /// The assistant's whole answer to the conversation `history`.
    pub async fn chat(
        &self,
        defs: &Definitions,
        history: &[Message],
    ) -> Result<String, CopilotError> {
        let result = async {
            let llm = self.llm()?;
            let messages = chat::conversation(defs, history)?;
            llm.complete("chat", &messages).await
        }
        .await;
        self.outcome("chat", &result);
        result
    }
}
