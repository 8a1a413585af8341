//! `freshet-serving`: flags in, the API served until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;
use freshet_localstack::stack::StackEnv;
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
    /// Redis URL (default: the local stack's, else redis://127.0.0.1:6379).
    #[arg(long, env = "FRESHET_REDIS_URL")]
    redis_url: Option<String>,
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
    /// Folder of the local stack whose stack.env supplies default addresses.
    #[arg(long, env = "FRESHET_STATE_DIR", default_value = ".freshet")]
    stack_dir: PathBuf,
    /// OTLP/HTTP endpoint to export traces to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    llm: freshet_copilot::config::CopilotArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = freshet_telemetry::init("freshet-serving", args.otlp_endpoint.as_deref())?;
    if args.max_batch_size == 0 {
        anyhow::bail!("--max-batch-size must be at least 1");
    }
    let definitions = freshet_core::load_dir(&args.features_dir)?;
    let stack = StackEnv::load(&args.stack_dir);
    let config = ServingConfig {
        redis_url: stack.resolve(
            args.redis_url,
            "FRESHET_REDIS_URL",
            "redis://127.0.0.1:6379",
        ),
        max_batch_size: args.max_batch_size,
        redis_timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        trace_requests: args.otlp_endpoint.is_some(),
        copilot: args.llm.into(),
        llm_request_timeout: freshet_serving::DEFAULT_LLM_REQUEST_TIMEOUT,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen)", args.listen))?;
    tracing::info!(
        address = %args.listen,
        redis = %config.redis_url,
        views = ?definitions.view_names(),
        copilot = config.copilot.is_configured(),
        "serving features"
    );
    freshet_serving::serve(
        listener,
        &definitions,
        &config,
        ServingMetrics::new(),
        shutdown(),
    )
    .await
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop requested; finishing requests in flight");
}
