//! `freshet-schema-registry`: parses flags and serves the registry until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Schema registry speaking the Confluent REST API")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Require HTTP basic auth: users from this file, one `NAME:ROLE:HASH` per line (ROLE
    /// `read` or `write`; HASH from `hash-password`). Without it, anyone may read and
    /// change schemas.
    #[arg(long, env = "FRESHET_REGISTRY_USERS_FILE", value_name = "FILE")]
    users_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Reads a password from standard input (one line) and prints its argon2id hash, for
    /// a users file line `NAME:ROLE:HASH`.
    HashPassword,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .context("cannot read the password from standard input")?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!("no password on standard input");
        }
        // The one output of this command: the hash, for the users file.
        use std::io::Write;
        writeln!(
            std::io::stdout(),
            "{}",
            freshet_schema_registry::auth::hash_password(password)
        )?;
        return Ok(());
    }
    let users = match &args.users_file {
        Some(path) => {
            let users = freshet_schema_registry::auth::Users::load(path)?;
            tracing::info!(users = users.len(), file = %path.display(), "basic auth required");
            Some(users)
        }
        None => {
            tracing::warn!(
                "no --users-file: anyone who reaches the registry may read and change schemas"
            );
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "schema registry listening");
    freshet_schema_registry::serve(
        listener,
        &args.journal,
        args.max_body_bytes,
        users,
        freshet_service::shutdown_signal(),
    )
    .await
}
