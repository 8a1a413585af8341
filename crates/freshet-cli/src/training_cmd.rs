//! `freshet training-set`: point-in-time training sets (`freshet_training`): the features
//! as served at each (entity, time) of a spine, from the published updates or recomputed
//! from events.

use crate::history_args::HistoryFileArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use freshet_backfill::Input;
use freshet_service::{BrokerArgs, RegistryArgs, StackEnv};
use freshet_training::updates::UpdatesTopic;
use freshet_training::{History, HistoryStats, Progress, Stage, TrainingSetConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HistorySource {
    /// The `feature_updates` topic: what the processor published (fast, no recomputation).
    Updates,
    /// The events (the source topic, or --source-file) through the processor's engine.
    Events,
}

#[derive(Args)]
pub struct TrainingSetArgs {
    /// The spine: a CSV (with a header) or Parquet file of (entity, time) rows; every
    /// other column (labels) passes through unchanged, in the spine's order. A local path
    /// or s3://BUCKET/KEY (credentials from the AWS environment variables).
    #[arg(long, value_name = "FILE")]
    spine: PathBuf,
    /// Where to write the training set: a .parquet or .csv file, local or s3://BUCKET/KEY.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Views whose features to join, comma-separated (default: every view, unless
    /// --features names some).
    #[arg(long, value_name = "VIEW,...", value_delimiter = ',')]
    views: Vec<String>,
    /// Single features to join, as view:feature, comma-separated.
    #[arg(long, value_name = "VIEW:FEATURE,...", value_delimiter = ',')]
    features: Vec<String>,
    /// The spine's entity id column (default: the source's entity key field, `user_id`).
    #[arg(long, value_name = "NAME")]
    entity_column: Option<String>,
    /// The spine's time column: epoch milliseconds, timestamps or RFC 3339 strings.
    #[arg(long, value_name = "NAME", default_value = "event_timestamp")]
    time_column: String,
    /// Where history comes from.
    #[arg(long, value_enum, default_value = "updates")]
    from: HistorySource,
    /// With --from updates: the processor's output topic.
    #[arg(long, value_name = "TOPIC", default_value = "feature_updates")]
    updates_topic: String,
    /// With --from events: events from a file, Parquet files or an Iceberg table instead
    /// of the source topic.
    #[command(flatten)]
    history: HistoryFileArgs,
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Folder of the local stack whose stack.env supplies default addresses.
    #[arg(long, env = "FRESHET_STATE_DIR", default_value = freshet_service::DEFAULT_STACK_DIR)]
    state_dir: PathBuf,
}

fn bar_for(stage: Stage) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let what = match stage {
        Stage::ReadingUpdates => "updates read",
        Stage::ReplayingEvents => "of the events replayed",
        Stage::Writing => "rows joined and written",
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} {{spinner}} {{human_pos}} {what}, {{per_sec}} {{msg}}"
        ))
        .expect("a valid template"),
    );
    bar
}

pub fn run(args: TrainingSetArgs, features_dir: &Path) -> Result<ExitCode> {
    let defs = freshet_core::load_dir(features_dir)?;
    let stack = StackEnv::load(&args.state_dir);
    let brokers = args.brokers.resolve(&stack);
    freshet_kafka::set_client_options(args.brokers.kafka_options(std::env::vars())?)?;
    let registry = args.registry.resolve(&stack)?;
    let history = match args.from {
        HistorySource::Updates => {
            if args.history.given() || args.history.partitions.is_some() {
                bail!("--source-file, --source-table and --partitions apply to --from events only");
            }
            History::Updates(UpdatesTopic {
                brokers: brokers.clone(),
                registry,
                topic: args.updates_topic.clone(),
            })
        }
        HistorySource::Events => {
            let views = freshet_training::request::resolve(&defs, &args.views, &args.features)?;
            let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
            History::Events(match args.history.input(&defs, &names, &brokers)? {
                Some(input) => input,
                None => Input::Kafka {
                    brokers: brokers.clone(),
                    registry,
                },
            })
        }
    };
    // Spines and outputs on S3 go through a local copy.
    let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
    let lake = LakeFiles::new(scratch.path());
    let spine = lake.fetch(&args.spine)?;
    let (out, upload) = lake.staged(&args.out)?;
    let config = TrainingSetConfig {
        spine,
        out,
        entity_column: args.entity_column.clone(),
        time_column: args.time_column.clone(),
        views: args.views.clone(),
        features: args.features.clone(),
        history,
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let report = runtime.block_on(async {
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                signal_stop.store(true, Ordering::Relaxed);
            }
        });
        let mut current: Option<(Stage, ProgressBar)> = None;
        let mut on_progress = |p: Progress| {
            if current.as_ref().is_none_or(|(stage, _)| *stage != p.stage) {
                if let Some((_, bar)) = current.take() {
                    bar.finish();
                }
                current = Some((p.stage, bar_for(p.stage)));
            }
            let (_, bar) = current.as_ref().expect("set above");
            match p.total {
                Some(total) if bar.length() != Some(total) => {
                    bar.set_length(total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} {per_sec} ETA {eta}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                }
                _ => {}
            }
            bar.set_position(p.done);
        };
        let result = freshet_training::build(&defs, &config, &mut on_progress, &stop).await;
        if let Some((_, bar)) = current {
            bar.finish_and_clear();
        }
        result
    })?;

    match &report.history {
        HistoryStats::Updates(s) => println!(
            "history: {} updates read from `{}`, {} of the requested views and spine entities, {} unreadable",
            s.read, args.updates_topic, s.used, s.unreadable
        ),
        HistoryStats::Events(s) => println!(
            "history: {} events read, {} aggregated, {} late, {} unreadable (recomputed by the engine)",
            s.read, s.used, s.late, s.unreadable
        ),
    }
    for (view, tally) in &report.views {
        println!(
            "{view}: {} found, {} missing, {} expired",
            tally.found, tally.missing, tally.expired
        );
    }
    if let Some((local, location)) = upload {
        lake.upload(&local, &location)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wrote {} rows to {} in {seconds:.1} s ({:.0} rows/s)",
        report.rows,
        args.out.display(),
        report.rows as f64 / seconds.max(1e-3)
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies between S3 and a scratch folder for the spine and the output, which the
/// training-set builder reads and writes as local files.
struct LakeFiles<'a> {
    scratch: &'a Path,
    lake: std::cell::OnceCell<freshet_lake::Lake>,
}

impl<'a> LakeFiles<'a> {
    fn new(scratch: &'a Path) -> Self {
        Self {
            scratch,
            lake: std::cell::OnceCell::new(),
        }
    }

    fn lake(&self) -> Result<&freshet_lake::Lake> {
        if self.lake.get().is_none() {
            let _ = self.lake.set(freshet_lake::Lake::new()?);
        }
        Ok(self.lake.get().expect("set above"))
    }

    /// `path` itself when local; an S3 location downloaded into the scratch folder.
    fn fetch(&self, path: &Path) -> Result<PathBuf> {
        let Some(location) = s3_location(path)? else {
            return Ok(path.to_path_buf());
        };
        let bytes = self.lake()?.read(&location)?;
        let local = self.scratch.join(location.file_name());
        std::fs::write(&local, &bytes)
            .with_context(|| format!("cannot copy {location} to {}", local.display()))?;
        Ok(local)
    }

    /// Where to write `path`: itself when local; for an S3 location, a scratch file of
    /// the same name and the location to upload it to.
    fn staged(&self, path: &Path) -> Result<(PathBuf, Option<(PathBuf, freshet_lake::Location)>)> {
        let Some(location) = s3_location(path)? else {
            return Ok((path.to_path_buf(), None));
        };
        self.lake()?;
        let local = self.scratch.join(location.file_name());
        Ok((local.clone(), Some((local, location))))
    }

    fn upload(&self, local: &Path, location: &freshet_lake::Location) -> Result<()> {
        let bytes = std::fs::read(local)
            .with_context(|| format!("cannot read the training set at {}", local.display()))?;
        self.lake()?.write(location, bytes.into())?;
        Ok(())
    }
}

/// The S3 location `path` names, if it names one.
fn s3_location(path: &Path) -> Result<Option<freshet_lake::Location>> {
    let Some(text) = path.to_str().filter(|t| t.starts_with("s3://")) else {
        return Ok(None);
    };
    Ok(Some(freshet_lake::Location::parse(text)?))
}
