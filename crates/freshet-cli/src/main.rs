//! `freshet`: the command-line tool of the Freshet feature platform.
//!
//! - `features list|validate`: read the feature definitions through the core crate
//!   ([`features_cmd`]).
//! - `compile --target flink-sql`: generate Flink SQL for a view ([`compile_cmd`]).
//! - `up`, `status`, `down`: run the local stack without containers ([`stack_cmd`]).
//! - `backfill`: feature values for the past from Kafka history or a file ([`backfill_cmd`]).
//! - `training-set`: point-in-time training sets from a spine ([`training_cmd`]).
//! - `store migrate`: moves values from the previous Redis layout ([`store_cmd`]).
//! - `copilot generate|recommend|chat`: the LLM copilot ([`copilot_cmd`]).
//!
//! Every failure ends as one clear line on stderr (`error: ...`) and a non-zero exit code;
//! usage mistakes exit with 2, everything else with 1.

mod backfill_cmd;
mod compile_cmd;
mod copilot_cmd;
mod features_cmd;
mod history_args;
mod stack_cmd;
mod store_cmd;
mod training_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "freshet",
    version,
    about = "Freshet: real-time features for machine learning"
)]
struct Cli {
    /// The folder of feature definitions (*.toml).
    #[arg(
        long,
        global = true,
        env = "FRESHET_FEATURES_DIR",
        default_value = "features"
    )]
    features_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List and validate feature definitions.
    #[command(subcommand)]
    Features(features_cmd::FeaturesCommand),
    /// Compile a feature view for another engine.
    Compile(compile_cmd::CompileArgs),
    /// Start the local stack (broker, Redis, registry, processor, demo producer); Ctrl-C stops it.
    Up(stack_cmd::UpArgs),
    /// Show which components of the local stack run and are healthy.
    Status(stack_cmd::StateDirArgs),
    /// Stop the local stack started with `freshet up --detach`.
    Down(stack_cmd::StateDirArgs),
    /// Compute feature values for the past, from Kafka history or a file, and write them
    /// to Redis without overwriting newer values.
    Backfill(backfill_cmd::BackfillArgs),
    /// Build a point-in-time training set: each spine row's features as served at its time,
    /// as Parquet or CSV.
    TrainingSet(training_cmd::TrainingSetArgs),
    /// The LLM copilot: definitions from plain language, feature ideas, chat.
    Copilot(copilot_cmd::CopilotCmd),
    /// Maintain the feature store in Redis.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

/// mimalloc, as in the processor: replays for backfill and training sets allocate many
/// small, short-lived values per event (decoded fields, served values), and the system
/// allocator was the largest item of a recomputation's profile (about a sixth of the
/// thread that runs the engines).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A bug must still end as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error in freshet ({info}); please report it");
    }));
    freshet_service::no_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features(cmd) => features_cmd::run(cmd, &cli.features_dir),
        Command::Compile(args) => compile_cmd::run(args, &cli.features_dir),
        Command::Up(args) => stack_cmd::up(args, &cli.features_dir),
        Command::Status(args) => stack_cmd::status(args),
        Command::Down(args) => stack_cmd::down(args),
        Command::Backfill(args) => {
            // Warnings about skipped input go to stderr through tracing.
            let _logs = freshet_telemetry::init("freshet-backfill", None);
            backfill_cmd::run(args, &cli.features_dir)
        }
        Command::TrainingSet(args) => {
            let _logs = freshet_telemetry::init("freshet-training-set", None);
            training_cmd::run(args, &cli.features_dir)
        }
        Command::Copilot(cmd) => copilot_cmd::run(cmd, &cli.features_dir),
        Command::Store(cmd) => store_cmd::run(cmd, &cli.features_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
