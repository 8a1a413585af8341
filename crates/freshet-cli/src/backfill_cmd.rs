//! `freshet backfill`: feature values for the past, through the processor's own engine
//! (`freshet_backfill`), from Kafka history or a file.

use crate::history_args::HistoryFileArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_backfill::{self as backfill, BackfillConfig, Input, Progress};
use freshet_core::definitions::Definitions;
use freshet_service::{BrokerArgs, RedisArgs, RegistryArgs, StackEnv};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct BackfillArgs {
    /// The feature view to backfill; repeat for several.
    #[arg(long = "view", value_name = "NAME", required = true)]
    views: Vec<String>,
    /// Events from this time on: RFC 3339 (2026-11-26T08:00:00Z), a duration ago
    /// ("2h ago", "30m ago") or "earliest". Required when reading from Kafka.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<Bound>,
    /// Events before this time (same forms as --from); default: everything there is.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<Bound>,
    #[command(flatten)]
    history: HistoryFileArgs,
    /// Compute and report what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write every window the engine closes (view, entity, window group, start, end and
    /// its features' values) to this JSON Lines file instead of writing values to Redis:
    /// the engine's answer window by window, to compare with another engine (Flink:
    /// docs/flink-sql.md). Windows ending after a partition's final watermark are still
    /// open and not written.
    #[arg(long, value_name = "PATH", conflicts_with = "dry_run")]
    windows_out: Option<PathBuf>,
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Folder of the local stack whose stack.env supplies default addresses.
    #[arg(long, env = "FRESHET_STATE_DIR", default_value = freshet_service::DEFAULT_STACK_DIR)]
    state_dir: PathBuf,
}

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Earliest,
    At(i64),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_time(text: &str) -> Result<Bound, String> {
    parse_time_at(text, now_ms())
}

fn parse_time_at(text: &str, now_ms: i64) -> Result<Bound, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("earliest") {
        return Ok(Bound::Earliest);
    }
    if let Some(ago) = text.strip_suffix("ago") {
        let ago = humantime::parse_duration(ago.trim()).map_err(|e| {
            format!("`{text}`: {e}; write a duration like \"2h ago\" or \"90m ago\"")
        })?;
        return Ok(Bound::At(now_ms - ago.as_millis() as i64));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| Bound::At(t.timestamp_millis()))
        .map_err(|e| {
            format!(
                "`{text}` is not a time ({e}): give RFC 3339 (2026-11-26T08:00:00Z), \
                 a duration ago (\"2h ago\") or \"earliest\""
            )
        })
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A bar counting what `input` is read in: bytes of a file, rows of a table, records of
/// a topic.
fn progress_bar(input: &Input) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let position = match input {
        Input::File { .. } => "{bytes}/{total_bytes}",
        Input::Table { .. } => "{human_pos}/{human_len} rows",
        Input::Kafka { .. } => "{human_pos}/{human_len} records",
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{wide_bar}}] {position} {{msg}} ETA {{eta}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

pub fn run(args: BackfillArgs, features_dir: &Path) -> Result<ExitCode> {
    let defs = freshet_core::load_dir(features_dir)?;
    let stack = StackEnv::load(&args.state_dir);
    let brokers = args.brokers.resolve(&stack);
    freshet_kafka::set_client_options(args.brokers.kafka_options(std::env::vars())?)?;
    let from_ms = match args.from {
        Some(Bound::At(ms)) => Some(ms),
        Some(Bound::Earliest) => None,
        None if !args.history.given() => bail!(
            "--from is required when backfilling from Kafka: give RFC 3339, \"2h ago\" or \"earliest\""
        ),
        None => None,
    };
    let to_ms = match args.to {
        Some(Bound::At(ms)) => Some(ms),
        Some(Bound::Earliest) => bail!("--to earliest selects no events"),
        None => None,
    };
    let input = match args.history.input(&defs, &args.views, &brokers)? {
        Some(input) => input,
        None => Input::Kafka {
            brokers: brokers.clone(),
            registry: args.registry.resolve(&stack)?,
        },
    };
    args.redis.install_ca_certificate()?;
    let redis_url = args.redis.resolve(&stack);
    let config = BackfillConfig {
        views: args.views.clone(),
        input,
        from_ms,
        to_ms,
    };

    let what = crate::history_args::describe(&config.input, &brokers);
    let range = format!(
        "[{}, {})",
        from_ms.map_or("earliest".into(), format_ms),
        to_ms.map_or("end".into(), format_ms)
    );
    println!(
        "backfill {} from {what}, events with event time in {range}",
        args.views.join(", ")
    );

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let computed = runtime.block_on(async {
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                signal_stop.store(true, Ordering::Relaxed);
            }
        });
        let bar = progress_bar(&config.input);
        let started = Instant::now();
        let mut known_length = true;
        let mut on_progress = |p: Progress| {
            // Brokers that cannot tell a partition's end (tansu) give no total: then the
            // bar counts records without an ETA.
            if p.total >= p.position && p.total > 0 {
                bar.set_length(p.total);
            } else if known_length {
                known_length = false;
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} {spinner} {human_pos} records {msg}",
                    )
                    .expect("a valid template"),
                );
                bar.unset_length();
            }
            bar.set_position(p.position);
            let rate = p.events as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{} events, {rate:.0} events/s", p.events));
        };
        if args.windows_out.is_some() {
            let log = backfill::closed_windows(&defs, &config, &mut on_progress, &stop).await;
            bar.finish_and_clear();
            return Ok(Err(log?));
        }
        let result = backfill::compute(&defs, &config, &mut on_progress, &stop).await;
        bar.finish_and_clear();
        result.map(Ok)
    })?;
    let computed = match computed {
        Ok(computed) => computed,
        Err(log) => {
            let path = args.windows_out.as_ref().expect("set for a window log");
            write_windows(path, &log)?;
            return Ok(ExitCode::SUCCESS);
        }
    };

    let stats = &computed.stats;
    println!(
        "read {}: {} aggregated, {} outside the range, {} late, {} unreadable",
        stats.read, stats.used, stats.outside_range, stats.late, stats.unreadable
    );
    report_views(&defs, &args.views, &computed);
    if args.dry_run {
        print_samples(&defs, &computed);
        println!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    let written = runtime.block_on(backfill::write(&redis_url, &computed))?;
    println!(
        "wrote {} values to {}; kept {} that Redis holds under a newer version",
        written.written,
        freshet_store::redacted_url(&redis_url),
        written.kept_newer
    );
    Ok(ExitCode::SUCCESS)
}

/// The closed windows as JSON Lines, and a summary.
fn write_windows(path: &Path, log: &backfill::WindowLog) -> Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for window in &log.windows {
        serde_json::to_writer(&mut out, window)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let stats = &log.stats;
    println!(
        "read {}: {} aggregated, {} outside the range, {} late, {} unreadable",
        stats.read, stats.used, stats.outside_range, stats.late, stats.unreadable
    );
    println!(
        "wrote {} closed windows to {}",
        log.windows.len(),
        path.display()
    );
    Ok(())
}

fn report_views(defs: &Definitions, views: &[String], computed: &backfill::Computed) {
    for summary in computed.summary(defs, views) {
        let features = summary
            .non_default
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{}: {} entities; values other than the default: {features}",
            summary.view, summary.entities
        );
    }
}

/// A few of the values a dry run would write, so they can be eyeballed.
fn print_samples(defs: &Definitions, computed: &backfill::Computed) {
    const SAMPLES: usize = 5;
    let mut shown: std::collections::BTreeMap<&str, usize> = Default::default();
    for update in &computed.updates {
        let n = shown.entry(update.view.as_str()).or_default();
        if *n >= SAMPLES {
            continue;
        }
        *n += 1;
        let values = backfill::ordered_values(defs, update)
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "  {} {} (version {}, as of {}): {values}",
            update.view,
            update.entity,
            update.version,
            format_ms(update.event_time_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_durations_ago_or_earliest() {
        let now = 1_800_000_000_000;
        assert_eq!(
            parse_time_at("2026-11-26T08:00:00Z", now),
            Ok(Bound::At(1_795_680_000_000))
        );
        assert_eq!(
            parse_time_at("2026-11-26T09:00:00+01:00", now),
            Ok(Bound::At(1_795_680_000_000))
        );
        assert_eq!(parse_time_at("2h ago", now), Ok(Bound::At(now - 7_200_000)));
        assert_eq!(
            parse_time_at("90m ago", now),
            Ok(Bound::At(now - 5_400_000))
        );
        assert_eq!(parse_time_at("earliest", now), Ok(Bound::Earliest));
        let error = parse_time_at("yesterday", now).unwrap_err();
        assert!(error.contains("`yesterday` is not a time"), "{error}");
        let error = parse_time_at("2 fortnights ago", now).unwrap_err();
        assert!(error.contains("\"2h ago\""), "{error}");
    }
}
