//! Point-in-time training sets: for every (entity, time) row of a spine, the values each
//! requested feature had **as the online service served them at that time**: the latest
//! update of that (view, entity) whose event time is at or before the row's time, with the
//! view's TTL applied as the serving API applies it. No value a row gets was influenced by
//! an event after the row's time.
//!
//! - [`spine`] reads the rows (CSV or Parquet), [`request`] resolves the features asked for.
//! - History comes from one of two places ([`History`]):
//!   - [`updates`]: the `feature_updates` topic, what the processor really published;
//!   - [`recompute`]: the events (the source topic or a file) through the processor's own
//!     engine by [`freshet_backfill::replay`], each row answered from its partition's
//!     engine just before the partition's clock passes the row's time.
//! - [`output`] writes the spine's columns and the features (Parquet or CSV).
//!
//! The two sources agree on every row when the processor publishes every change
//! (`--publish-changes all`). By default it publishes once per epoch, so a (view, entity)
//! that changed twice within one epoch has only its second change on the topic; a row whose
//! time falls between those two changes gets the first from recomputed history and the
//! epoch before's value from the topic (see `docs/training-sets.md`).

pub mod asof;
pub mod output;
pub mod recompute;
pub mod request;
pub mod spine;
pub mod updates;

use freshet_backfill::{BackfillConfig, BackfillError, Input, InputStats};
use freshet_core::definitions::Definitions;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use asof::{Answers, AsOf};
pub use output::{Status, Tally};
pub use request::RequestedView;
pub use spine::Spine;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("cannot read or write {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("the spine {} is neither CSV (.csv) nor Parquet (.parquet)", path.display())]
    SpineFormat { path: PathBuf },
    #[error("--out {}: name a .parquet or .csv file", path.display())]
    OutFormat { path: PathBuf },
    #[error(
        "the spine {} has no column `{column}` (columns: {available}); name it with {flag}",
        path.display()
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        flag: String,
        available: String,
    },
    #[error("the spine {}, {row}, column `{column}`: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        row: String,
        column: String,
        reason: String,
    },
    #[error(
        "the spine {} has a column `{column}`, a name the training set gives a feature's \
         column; rename it",
        path.display()
    )]
    ColumnClash { path: PathBuf, column: String },
    #[error("no feature view named `{name}` (views: {known})")]
    UnknownView { name: String, known: String },
    #[error("feature view `{view}` has no feature `{feature}` (features: {known})")]
    UnknownFeature {
        view: String,
        feature: String,
        known: String,
    },
    #[error("`{text}` is not view:feature (e.g. user_click_stats:click_count_1m)")]
    BadFeatureReference { text: String },
    #[error("Kafka at {brokers}: {context}: {reason}")]
    Kafka {
        brokers: String,
        context: String,
        reason: String,
    },
    #[error("the topic `{topic}` does not exist at {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error(
        "no records from `{topic}` for 60 s after {read} records, before every partition's end"
    )]
    Stalled { topic: String, read: u64 },
    #[error("the schema registry at {url} cannot be asked: {reason}")]
    Registry { url: String, reason: String },
    #[error(transparent)]
    Events(#[from] BackfillError),
    #[error("interrupted; nothing was written")]
    Interrupted,
}

/// What a training set is built from.
#[derive(Debug, Clone)]
pub enum History {
    /// The values the processor published on its output topic.
    Updates(updates::UpdatesTopic),
    /// Recomputed from events (the source topic or a file) by the processor's engine.
    Events(Input),
}

/// A step of the work, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Records of the updates topic read.
    ReadingUpdates,
    /// Events put through the engine (`total`: records or bytes of input, when known).
    ReplayingEvents,
    /// Rows written.
    Writing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: Option<u64>,
}

/// What the history held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryStats {
    Updates(updates::UpdateStats),
    Events(InputStats),
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: usize,
    pub history: HistoryStats,
    /// Per requested view (in output order): its name and rows per status.
    pub views: Vec<(String, Tally)>,
    pub reading_spine: Duration,
    pub reading_history: Duration,
    pub writing: Duration,
}

/// Everything a training set is asked with.
#[derive(Debug, Clone)]
pub struct TrainingSetConfig {
    pub spine: PathBuf,
    pub out: PathBuf,
    /// The spine's entity column; by default the views' source's entity key field.
    pub entity_column: Option<String>,
    pub time_column: String,
    pub views: Vec<String>,
    pub features: Vec<String>,
    pub history: History,
}

/// The answers for `spine` from `history`.
pub async fn answer(
    defs: &Definitions,
    views: &[RequestedView],
    spine: &Spine,
    history: &History,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<(Answers, HistoryStats), TrainingError> {
    match history {
        History::Updates(topic) => {
            let (history, stats) = updates::read(topic, views, spine, progress, stop).await?;
            Ok((
                history.answer(spine, views.len()),
                HistoryStats::Updates(stats),
            ))
        }
        History::Events(input) => {
            let partitions = |topic: &str| match input {
                Input::File { partitions, .. } | Input::Table { partitions, .. } => Ok(*partitions),
                Input::Kafka { brokers, .. } => freshet_backfill::topic_partitions(brokers, topic),
            };
            let mut counts = std::collections::HashMap::new();
            for view in views {
                if !counts.contains_key(&view.topic) {
                    counts.insert(view.topic.clone(), partitions(&view.topic)?);
                }
            }
            let mut observer = recompute::Recompute::new(views, spine, |t| counts[t]);
            let config = BackfillConfig {
                views: views.iter().map(|v| v.name.clone()).collect(),
                input: input.clone(),
                from_ms: None,
                to_ms: None,
            };
            let file = !matches!(input, Input::Kafka { .. });
            let mut on_progress = |p: freshet_backfill::Progress| {
                progress(Progress {
                    stage: Stage::ReplayingEvents,
                    done: if file { p.position } else { p.events },
                    total: (p.total >= p.position && p.total > 0).then_some(p.total),
                })
            };
            let stats =
                freshet_backfill::replay(defs, &config, &mut observer, &mut on_progress, stop)
                    .await?;
            Ok((observer.into_answers(), HistoryStats::Events(stats)))
        }
    }
}

/// Builds the training set `config` asks for and writes it.
pub async fn build(
    defs: &Definitions,
    config: &TrainingSetConfig,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<Report, TrainingError> {
    let views = request::resolve(defs, &config.views, &config.features)?;
    if spine::TableFormat::of(&config.out).is_none() {
        return Err(TrainingError::OutFormat {
            path: config.out.clone(),
        });
    }
    let entity_column = match &config.entity_column {
        Some(column) => column.clone(),
        None => default_entity_column(defs, &views),
    };
    let started = Instant::now();
    let spine = spine::read(&config.spine, &entity_column, &config.time_column)?;
    let reading_spine = started.elapsed();
    let started = Instant::now();
    let (answers, history) = answer(defs, &views, &spine, &config.history, progress, stop).await?;
    let reading_history = started.elapsed();
    let started = Instant::now();
    let tallies = output::write(&spine, &views, &answers, &config.out, progress)?;
    Ok(Report {
        rows: spine.rows(),
        history,
        views: views.iter().map(|v| v.name.clone()).zip(tallies).collect(),
        reading_spine,
        reading_history,
        writing: started.elapsed(),
    })
}

/// The entity key field of the first requested view's source (`user_id`).
pub fn default_entity_column(defs: &Definitions, views: &[RequestedView]) -> String {
    views
        .first()
        .and_then(|v| defs.sources.iter().find(|s| s.topic == v.topic))
        .map_or_else(|| "entity_id".to_string(), |s| s.entity_key_field.clone())
}
