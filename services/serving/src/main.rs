//! `freshet-serving`: flags in, the API served until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;
use freshet_service::{OtlpArgs, RedisArgs, StackArgs};
use freshet_serving::auth::{AccessConfig, ApiKey, AuthConfig};
use freshet_serving::metrics::ServingMetrics;
use freshet_serving::ServingConfig;
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc: lookups allocate many small, short-lived buffers (Redis replies, JSON), which
/// it serves faster than the system allocator (see the serving benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Serves feature values from Redis over HTTP")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FRESHET_SERVING_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// The folder of feature definitions.
    #[arg(long, env = "FRESHET_FEATURES_DIR", default_value = "features")]
    features_dir: PathBuf,
    #[command(flatten)]
    redis: RedisArgs,
    /// Most entity ids in one batch request; larger batches get 413.
    #[arg(long, env = "FRESHET_SERVING_MAX_BATCH_SIZE", default_value_t = freshet_serving::DEFAULT_MAX_BATCH_SIZE)]
    max_batch_size: usize,
    /// Milliseconds Redis may take to connect or answer before a request gets 503.
    #[arg(long, env = "FRESHET_SERVING_REDIS_TIMEOUT_MS", default_value_t = 500)]
    redis_timeout_ms: u64,
    /// Milliseconds a request may take before it is answered with 408.
    #[arg(
        long,
        env = "FRESHET_SERVING_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    request_timeout_ms: u64,
    /// Entities the near cache holds in memory (least recently used evicted first); 0
    /// turns the cache off, and every lookup reads Redis.
    #[arg(long, env = "FRESHET_SERVING_NEAR_CACHE_ENTRIES", default_value_t = freshet_serving::DEFAULT_NEAR_CACHE_ENTRIES)]
    near_cache_entries: usize,
    /// The near cache's staleness bound in milliseconds: it serves only while Redis's
    /// invalidations are confirmed within this, so no value is served from it after
    /// Redis has held a newer one for longer.
    #[arg(long, env = "FRESHET_SERVING_NEAR_CACHE_STALENESS_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(4..=60_000))]
    near_cache_staleness_ms: u64,
    /// Threads answering requests (default: one per core). Where the service shares a
    /// small machine with Redis or a load generator, fewer threads spend less on waking
    /// one another.
    #[arg(long, env = "FRESHET_SERVING_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// API keys: a file of `NAME SHA256-HEX [copilot]` lines (the hash of each key:
    /// `printf %s "$KEY" | sha256sum`). Every route but /health, /ready and /metrics then
    /// needs `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    #[arg(long, env = "FRESHET_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// API keys from the environment: `NAME:KEY[:copilot]`, separated by commas (hashed
    /// at start; only the hashes are kept). Adds to --api-keys-file.
    #[arg(long, env = "FRESHET_API_KEYS", hide_env_values = true)]
    api_keys: Option<String>,
    /// Serve without API keys: anyone who reaches the port reads every feature. For
    /// local use only; without keys and without this flag the service does not start.
    #[arg(long, env = "FRESHET_SERVING_NO_AUTH", conflicts_with_all = ["api_keys_file", "api_keys"])]
    no_auth: bool,
    /// Ask for a key on /metrics too (open by default, for Prometheus).
    #[arg(long, env = "FRESHET_SERVING_METRICS_NEED_KEY")]
    metrics_need_key: bool,
    /// Serve the copilot (/api/llm/...), which spends the LLM budget: off by default.
    /// With keys, only keys with the `copilot` permission may use it.
    #[arg(long, env = "FRESHET_SERVING_ENABLE_COPILOT")]
    enable_copilot: bool,
    /// Copilot requests a minute per key (or in all without keys).
    #[arg(long, env = "FRESHET_SERVING_COPILOT_PER_MINUTE", default_value_t = freshet_serving::auth::DEFAULT_COPILOT_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    copilot_per_minute: u32,
    #[command(flatten)]
    stack: StackArgs,
    #[command(flatten)]
    otlp: OtlpArgs,
    #[command(flatten)]
    llm: freshet_copilot::config::CopilotArgs,
}

/// The access configuration from the flags: keys from the file and the environment, or
/// none with an explicit --no-auth.
fn access(args: &Args) -> anyhow::Result<AccessConfig> {
    let auth = if args.no_auth {
        AuthConfig::Off
    } else {
        let mut keys = Vec::new();
        if let Some(path) = &args.api_keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the API keys file {}", path.display()))?;
            keys.extend(
                ApiKey::parse_file(&text)
                    .with_context(|| format!("in the API keys file {}", path.display()))?,
            );
        }
        if let Some(text) = &args.api_keys {
            keys.extend(ApiKey::parse_env(text)?);
        }
        if keys.is_empty() {
            anyhow::bail!(
                "no API keys: give --api-keys-file (or FRESHET_API_KEYS_FILE) or FRESHET_API_KEYS, \
                 or --no-auth to serve every feature to anyone who reaches the port (local use only)"
            );
        }
        AuthConfig::Keys(keys)
    };
    Ok(AccessConfig {
        auth,
        metrics_need_key: args.metrics_need_key,
        copilot_enabled: args.enable_copilot,
        copilot_per_minute: args.copilot_per_minute,
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = args.otlp.init("freshet-serving")?;
    if args.max_batch_size == 0 {
        anyhow::bail!("--max-batch-size must be at least 1");
    }
    let definitions = freshet_core::load_dir(&args.features_dir)?;
    let stack = args.stack.env();
    let access = access(&args)?;
    if !access.requires_keys() {
        tracing::warn!(
            "serving without API keys (--no-auth): anyone who reaches the port reads every feature"
        );
    }
    args.redis.install_ca_certificate()?;
    let config = ServingConfig {
        redis_url: args.redis.resolve(&stack),
        max_batch_size: args.max_batch_size,
        redis_timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        trace_requests: args.otlp.otlp_endpoint.is_some(),
        copilot: args.llm.into(),
        llm_request_timeout: freshet_serving::DEFAULT_LLM_REQUEST_TIMEOUT,
        near_cache_entries: args.near_cache_entries,
        near_cache_staleness: Duration::from_millis(args.near_cache_staleness_ms),
        access,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen)", args.listen))?;
    tracing::info!(
        address = %args.listen,
        api_keys = config.access.requires_keys(),
        copilot_enabled = config.access.copilot_enabled,
        views = ?definitions.view_names(),
        copilot = config.copilot.is_configured(),
        near_cache_entries = config.near_cache_entries,
        "serving features"
    );
    freshet_serving::serve(
        listener,
        &definitions,
        &config,
        ServingMetrics::new(),
        freshet_service::shutdown_signal(),
    )
    .await
}
