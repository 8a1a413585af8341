//! `freshet-schema-registry`: parses flags and serves the registry until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Schema registry speaking the Confluent REST API")]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "FRESHET_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: String,
    /// The journal file holding every schema, subject and setting.
    #[arg(
        long,
        env = "FRESHET_REGISTRY_JOURNAL",
        default_value = ".freshet/data/schema-registry/journal.jsonl"
    )]
    journal: PathBuf,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = freshet_schema_registry::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "schema registry listening");
    freshet_schema_registry::serve(
        listener,
        &args.journal,
        args.max_body_bytes,
        freshet_service::shutdown_signal(),
    )
    .await
}
