//! How to reach the model: any server speaking OpenAI's chat-completions API.

use std::time::Duration;

/// OpenAI's API; any compatible server works (Ollama: `http://localhost:11434/v1`, vLLM,
/// llama.cpp's server, a provider's compatible endpoint).
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// What the copilot needs to talk to a model. Without an API key it is not configured:
/// every operation says how to configure it instead of calling anything.
#[derive(Clone)]
pub struct CopilotConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// The longest wait for the server to send the next bytes of an answer.
    pub timeout: Duration,
    /// Retries of a request answered 429 or 5xx (or not connected), with exponential
    /// backoff (or the server's `Retry-After`).
    pub max_retries: usize,
    /// How many times `generate` sends validation errors back before giving up.
    pub max_repairs: usize,
}

impl std::fmt::Debug for CopilotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopilotConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_repairs", &self.max_repairs)
            .finish()
    }
}

impl Default for CopilotConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_retries: 3,
            max_repairs: 2,
        }
    }
}

/// What to tell a user whose copilot has no key.
pub const NOT_CONFIGURED: &str = "the copilot has no API key: set OPENAI_API_KEY (and \
OPENAI_BASE_URL and FRESHET_LLM_MODEL for an OpenAI-compatible server such as Ollama, vLLM \
or llama.cpp; any non-empty key works for a local server)";

impl CopilotConfig {
    pub fn is_configured(&self) -> bool {
        self.api_key
            .as_deref()
            .is_some_and(|k| !k.trim().is_empty())
    }
}

/// The copilot's flags, shared by every binary that hosts it.
#[derive(Debug, Clone, clap::Args)]
pub struct CopilotArgs {
    /// Base URL of an OpenAI-compatible chat-completions API.
    #[arg(long = "llm-base-url", env = "OPENAI_BASE_URL", default_value = DEFAULT_BASE_URL)]
    pub base_url: String,
    /// The model to ask.
    #[arg(long = "llm-model", env = "FRESHET_LLM_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// API key; without one the copilot is off and says how to turn it on.
    #[arg(long = "llm-api-key", env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds to wait for the model server's next bytes.
    #[arg(
        long = "llm-timeout-secs",
        env = "FRESHET_LLM_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub timeout_secs: u64,
    /// Retries of a request answered 429 or 5xx.
    #[arg(
        long = "llm-max-retries",
        env = "FRESHET_LLM_MAX_RETRIES",
        default_value_t = 3
    )]
    pub max_retries: usize,
    /// Times an invalid answer is sent back with the validator's problems.
    #[arg(
        long = "llm-max-repairs",
        env = "FRESHET_LLM_MAX_REPAIRS",
        default_value_t = 2
    )]
    pub max_repairs: usize,
}

impl From<CopilotArgs> for CopilotConfig {
    fn from(args: CopilotArgs) -> Self {
        Self {
            base_url: args.base_url,
            model: args.model,
            api_key: args.api_key,
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            max_retries: args.max_retries,
            max_repairs: args.max_repairs,
        }
    }
}
