//! `freshet compile --target flink-sql (--view NAME [-o FILE] | --all --output-dir DIR)
//! [--connectors kafka|planner-check|files]`.

use crate::features_cmd::load;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use freshet_flink_sql::{compile_view, Connectors, FlinkOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    /// Flink SQL with window TVFs, an avro-confluent Kafka source and upsert-kafka sinks.
    FlinkSql,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ConnectorChoice {
    /// Kafka source and upsert-kafka sinks, for running the job.
    Kafka,
    /// datagen source and blackhole sinks with the same columns, for checking the plan
    /// where the Kafka connector is not installed.
    PlannerCheck,
    /// A JSON Lines file of events (`--events-path`) and JSON Lines output files (under
    /// `--output-path`), for running the job on Flink's local mini-cluster, or any
    /// cluster, without Kafka.
    Files,
}

#[derive(Args)]
pub struct CompileArgs {
    /// What to compile to.
    #[arg(long, value_enum)]
    target: Target,
    /// The feature view to compile.
    #[arg(long, required_unless_present = "all")]
    view: Option<String>,
    /// Compile every view, each to `<view>.sql` in --output-dir.
    #[arg(long, conflicts_with_all = ["view", "output"], requires = "output_dir")]
    all: bool,
    /// Write the SQL to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// With --all: the folder the scripts are written to (made if missing).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Kafka bootstrap servers the Flink job connects to.
    #[arg(long, env = "FRESHET_BROKERS", default_value = "localhost:9092")]
    bootstrap_servers: String,
    /// Schema registry the avro-confluent format reads schemas from.
    #[arg(
        long,
        env = "FRESHET_REGISTRY_URL",
        default_value = "http://localhost:8081"
    )]
    schema_registry_url: String,
    /// Topic the window rows are written to (upsert-kafka, JSON): what
    /// `freshet-flink-sink` reads into Redis. Not `feature_updates`, the processor's Avro
    /// topic.
    #[arg(long, default_value = "flink_feature_windows")]
    output_topic: String,
    /// Which connectors the tables use.
    #[arg(long, value_enum, default_value = "kafka")]
    connectors: ConnectorChoice,
    /// With `--connectors files`: the JSON Lines file of events the source table reads
    /// (fields named as in the source's Avro schema). A path as Flink sees it.
    #[arg(long, required_if_eq("connectors", "files"))]
    events_path: Option<String>,
    /// With `--connectors files`: the folder the sinks write into, one subfolder per
    /// window (`<view>__<window>`). A path as Flink sees it.
    #[arg(long, required_if_eq("connectors", "files"))]
    output_path: Option<String>,
}

pub fn run(args: CompileArgs, features_dir: &Path) -> Result<ExitCode> {
    let defs = load(features_dir)?;
    let options = FlinkOptions {
        bootstrap_servers: args.bootstrap_servers,
        schema_registry_url: args.schema_registry_url,
        output_topic: args.output_topic,
        connectors: match args.connectors {
            ConnectorChoice::Kafka => Connectors::Kafka,
            ConnectorChoice::PlannerCheck => Connectors::PlannerCheck,
            ConnectorChoice::Files => Connectors::Files {
                events: args
                    .events_path
                    .context("--connectors files needs --events-path")?,
                output_dir: args
                    .output_path
                    .context("--connectors files needs --output-path")?,
            },
        },
    };
    let compile = |view: &str| match args.target {
        Target::FlinkSql => compile_view(&defs, view, &options),
    };
    if let (true, Some(dir)) = (args.all, &args.output_dir) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for view in defs.view_names() {
            let path = dir.join(format!("{view}.sql"));
            std::fs::write(&path, compile(view)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote Flink SQL for view `{view}` to {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let view = args.view.as_deref().context("--view or --all is needed")?;
    let sql = compile(view)?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, &sql)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote Flink SQL for view `{view}` to {}", path.display());
        }
        None => print!("{sql}"),
    }
    Ok(ExitCode::SUCCESS)
}
