//! Backfill: feature values for the past, computed from history by the live processor's
//! own engine.
//!
//! History comes from the source topics (from the offsets of a start time on every
//! partition, up to each partition's end when the backfill started) or from a file of
//! events (JSON Lines or an Avro object container file). Either way every record becomes an
//! [`Event`] by the live processor's conversion (a topic's records through its
//! [`EventDecoder`], a file's through [`into_event`], the decoder's general way, which
//! gives the same events as its short way), and goes through a [`PartitionEngine`] per
//! input partition, exactly as it would live:
//!
//! - **Kafka**: records keep their partitions and offsets, so values come with the live
//!   processor's versions (`offset + 1` of the record that last changed them). A backfill
//!   that reads the whole history the live processor read gives exactly its values under
//!   exactly its versions.
//! - **File**: events are split into the partitions the live topic puts them in
//!   ([`freshet_kafka::partition_for_key`]), so each partition's watermark (and so what is
//!   late and which windows have closed) is the same as live. A file has no offsets, so its
//!   values are written with version 0: they fill (view, entity) pairs that have no value
//!   and never replace one that Kafka history produced.
//!
//! Nothing is written until all input is processed: [`compute`] keeps the final values of
//! every (view, entity) it touched, [`write`] applies them with the versioned-write script.
//! A value already stored under a newer (or the same) version stays, so a backfill can run
//! beside the live processor and never moves a value back. An interrupted backfill has
//! written nothing or a part of one set of final values; running it again writes the same
//! values under the same versions, so the result is the same.

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use freshet_avro::WireDecoder;
use freshet_core::definitions::Definitions;
use freshet_core::store_layout::{FeatureUpdate, ViewStorage, Writer};
use freshet_core::Value;
use freshet_engine::event_decoder::{into_event, EventDecoder};
use freshet_engine::{ClosedWindow, CompiledView, Event, Outcome, PartitionEngine};
use freshet_kafka::input_queue::InputQueue;
use freshet_kafka::QuietEof;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod files;
mod kafka_input;

pub use kafka_input::topic_partitions;
use kafka_input::KafkaInput;

/// How long the broker may send nothing while records are still expected.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`compute`] reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// The first wait before asking an unavailable schema registry again; it doubles up to
/// [`REGISTRY_RETRY_MAX`].
const REGISTRY_RETRY_FIRST: Duration = Duration::from_millis(250);
const REGISTRY_RETRY_MAX: Duration = Duration::from_secs(5);
/// Unreadable lines of a file named one by one in the log; the rest are only counted.
const NAMED_BAD_LINES: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("no feature view named `{name}` (views: {known})")]
    UnknownView { name: String, known: String },
    #[error("name at least one feature view to backfill")]
    NoView,
    #[error(
        "views {views} read different sources; a file holds the events of one source, so \
         backfill them one source at a time"
    )]
    MixedSources { views: String },
    #[error("the start time {from_ms} ms is not before the end time {to_ms} ms")]
    EmptyRange { from_ms: i64, to_ms: i64 },
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a readable Avro object container file: {reason}", path.display())]
    AvroFile { path: PathBuf, reason: String },
    #[error("{0}")]
    Lake(String),
    #[error("Kafka at {brokers}: {context}: {reason}")]
    Kafka {
        brokers: String,
        context: String,
        reason: String,
    },
    #[error("the source topic `{topic}` does not exist at {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error(
        "no records from the broker for {}s while {remaining} more were expected \
         (partitions still open: {open})",
        STALL_TIMEOUT.as_secs()
    )]
    Stalled { remaining: u64, open: String },
    #[error("interrupted before all input was read; nothing was written")]
    Interrupted,
    #[error("Redis at {url}: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
}

/// Where history comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// The views' source topics, from the offsets of the start time (or the beginning) to
    /// each partition's end when the backfill starts.
    Kafka {
        brokers: String,
        registry: freshet_avro::Registry,
    },
    /// A file of events of the views' source: JSON Lines (one object per line, fields as
    /// in the source's Avro schema) or an Avro object container file (detected by its
    /// header). `partitions` is the live topic's partition count.
    File { path: PathBuf, partitions: i32 },
    /// One snapshot of an Iceberg table of events of the views' source (the current one
    /// unless the source names another). `partitions` is the live topic's partition
    /// count.
    Table {
        table: freshet_lake::TableSource,
        partitions: i32,
    },
}

#[derive(Debug, Clone)]
pub struct BackfillConfig {
    pub views: Vec<String>,
    pub input: Input,
    /// Only events with an event time at or after this (epoch ms).
    pub from_ms: Option<i64>,
    /// Only events with an event time before this (epoch ms).
    pub to_ms: Option<i64>,
}

/// How far [`compute`] has come. `position` and `total` count records for Kafka input,
/// bytes for a file, and rows for a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub events: u64,
    pub position: u64,
    pub total: u64,
}

/// What the input held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Records or lines read.
    pub read: u64,
    /// Events that went into the aggregation.
    pub used: u64,
    /// Events outside `[from, to)`.
    pub outside_range: u64,
    /// Events behind their partition's watermark (late, not aggregated, as live).
    pub late: u64,
    /// Records or lines that are not events of the source.
    pub unreadable: u64,
}

/// The result of [`compute`]: the final values of every (view, entity) the input touched.
#[derive(Debug, Clone)]
pub struct Computed {
    pub updates: Vec<FeatureUpdate>,
    pub stats: InputStats,
    /// Where each view's values are stored, for the writes.
    storage: HashMap<String, ViewStorage>,
}

/// One view's part of a backfill, as `--dry-run` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSummary {
    pub view: String,
    pub entities: usize,
    /// Per feature (in definition order): how many entities get a value other than the
    /// feature's default.
    pub non_default: Vec<(String, usize)>,
}

impl Computed {
    /// Entities and non-default values per view, in the order the views were asked for.
    pub fn summary(&self, defs: &Definitions, views: &[String]) -> Vec<ViewSummary> {
        views
            .iter()
            .filter_map(|name| defs.view(name))
            .map(|view| {
                let updates: Vec<&FeatureUpdate> = self
                    .updates
                    .iter()
                    .filter(|u| u.view == view.name)
                    .collect();
                let non_default = view
                    .features
                    .iter()
                    .map(|f| {
                        let n = updates
                            .iter()
                            .filter(|u| u.values.get(&f.name).is_some_and(|v| *v != f.default))
                            .count();
                        (f.name.clone(), n)
                    })
                    .collect();
                ViewSummary {
                    view: view.name.clone(),
                    entities: updates.len(),
                    non_default,
                }
            })
            .collect()
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Values written.
    pub written: usize,
    /// Values left alone because Redis held a version at least as new.
    pub kept_newer: usize,
}

/// Watches each input partition's engine while history goes through it: what a training
/// set needs to read the values a (view, entity) had at a past moment. The engine has
/// processed every record before the call, and none after.
pub trait LaneObserver {
    /// `topic`/`partition`'s clock is about to move from `engine.clock()` to `to` (the
    /// next record's event time). Returns whether the partition needs no more input (its
    /// remaining records are then skipped).
    fn clock_moves(
        &mut self,
        topic: &str,
        partition: i32,
        engine: &mut PartitionEngine,
        to: i64,
    ) -> bool;
    /// All of `topic`/`partition`'s input has been processed.
    fn input_ended(&mut self, topic: &str, partition: i32, engine: &mut PartitionEngine);
}

/// Observes nothing: a plain backfill.
struct Unobserved;

impl LaneObserver for Unobserved {
    fn clock_moves(&mut self, _: &str, _: i32, _: &mut PartitionEngine, _: i64) -> bool {
        false
    }
    fn input_ended(&mut self, _: &str, _: i32, _: &mut PartitionEngine) {}
}

fn select_views(
    defs: &Definitions,
    names: &[String],
) -> Result<Arc<Vec<CompiledView>>, BackfillError> {
    if names.is_empty() {
        return Err(BackfillError::NoView);
    }
    for name in names {
        if defs.view(name).is_none() {
            return Err(BackfillError::UnknownView {
                name: name.clone(),
                known: defs.view_names().join(", "),
            });
        }
    }
    Ok(Arc::new(
        CompiledView::compile_all(defs)
            .into_iter()
            .filter(|v| names.contains(&v.name))
            .collect(),
    ))
}

/// One input partition: its engine and where its input ends.
struct Lane {
    topic: String,
    partition: i32,
    engine: PartitionEngine,
    /// The largest event time seen, counting events outside the range.
    max_time: Option<i64>,
    done: bool,
}

/// Feeds events through the lanes' engines, keeping the range and the statistics.
struct Feeder {
    from_ms: i64,
    to_ms: i64,
    stats: InputStats,
}

impl Feeder {
    fn new(config: &BackfillConfig) -> Result<Self, BackfillError> {
        let from_ms = config.from_ms.unwrap_or(i64::MIN);
        let to_ms = config.to_ms.unwrap_or(i64::MAX);
        if from_ms >= to_ms {
            return Err(BackfillError::EmptyRange { from_ms, to_ms });
        }
        Ok(Self {
            from_ms,
            to_ms,
            stats: InputStats::default(),
        })
    }

    /// Processes one record at `offset` of `lane`; `event` is `None` for an unreadable one.
    fn feed(
        &mut self,
        lane: &mut Lane,
        offset: i64,
        event: Option<&Event>,
        delay_ms: i64,
        observer: &mut dyn LaneObserver,
    ) {
        self.stats.read += 1;
        let Some(event) = event else {
            self.stats.unreadable += 1;
            lane.engine.process(offset, None);
            return;
        };
        lane.max_time = Some(lane.max_time.map_or(event.time, |t| t.max(event.time)));
        if event.time < self.from_ms || event.time >= self.to_ms {
            self.stats.outside_range += 1;
        } else {
            if lane.engine.clock().is_none_or(|c| event.time > c)
                && observer.clock_moves(&lane.topic, lane.partition, &mut lane.engine, event.time)
            {
                lane.done = true;
                return;
            }
            self.stats.used += 1;
            if lane.engine.process(offset, Some(event)) == Outcome::Late {
                self.stats.late += 1;
            }
        }
        // Past `to + delay` every further event before `to` would be late: the lane is
        // complete.
        if self.to_ms != i64::MAX
            && lane
                .max_time
                .is_some_and(|t| t >= self.to_ms.saturating_add(delay_ms))
        {
            lane.done = true;
        }
    }
}

fn finish(
    lanes: Vec<Lane>,
    stats: InputStats,
    views: &[CompiledView],
    version: Option<u64>,
) -> Computed {
    let mut updates: Vec<FeatureUpdate> = lanes
        .into_iter()
        .flat_map(|mut lane| lane.engine.drain_updates())
        .collect();
    if let Some(version) = version {
        for u in &mut updates {
            u.version = version;
        }
    }
    updates.sort_by(|a, b| (&a.view, &a.entity).cmp(&(&b.view, &b.entity)));
    Computed {
        updates,
        stats,
        storage: views
            .iter()
            .map(|v| (v.name.clone(), v.storage()))
            .collect(),
    }
}

/// Reads the input and computes the final values of every (view, entity) it touches.
/// Calls `progress` now and then; returns [`BackfillError::Interrupted`] when `stop` is
/// set before the input is read.
pub async fn compute(
    defs: &Definitions,
    config: &BackfillConfig,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<Computed, BackfillError> {
    let views = select_views(defs, &config.views)?;
    let (lanes, stats) = read_input(defs, &views, config, &mut Unobserved, progress, stop).await?;
    // File history ranks below anything from Kafka: version 0.
    let version = (!matches!(config.input, Input::Kafka { .. })).then_some(0);
    Ok(finish(lanes, stats, &views, version))
}

/// Puts the input through the engines as [`compute`] does, with `observer` watching each
/// partition's engine, and returns what the input held. Nothing is computed for writing.
pub async fn replay(
    defs: &Definitions,
    config: &BackfillConfig,
    observer: &mut dyn LaneObserver,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<InputStats, BackfillError> {
    let views = select_views(defs, &config.views)?;
    let (mut lanes, stats) = read_input(defs, &views, config, observer, progress, stop).await?;
    for lane in &mut lanes {
        observer.input_ended(&lane.topic, lane.partition, &mut lane.engine);
    }
    Ok(stats)
}

/// What the engine closed while the input went through it: see [`closed_windows`].
#[derive(Debug, Clone)]
pub struct WindowLog {
    /// Every window closed, in the order the engines closed them (per partition, in
    /// (view, entity, group, start) order at each clock move).
    pub windows: Vec<ClosedWindow>,
    /// Per input partition, its watermark when its input ended (`None`: no event).
    /// Windows ending after it were still open.
    pub final_watermarks: Vec<(String, i32, Option<i64>)>,
    pub stats: InputStats,
}

/// Puts the input through the engines as [`compute`] does and returns every window whose
/// aggregates became final on the way ([`PartitionEngine::windows_closing`]): the
/// engine's answer window by window, to compare with another engine run on the same input
/// (Flink, `docs/flink-sql.md`).
pub async fn closed_windows(
    defs: &Definitions,
    config: &BackfillConfig,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<WindowLog, BackfillError> {
    #[derive(Default)]
    struct Collector {
        windows: Vec<ClosedWindow>,
        final_watermarks: Vec<(String, i32, Option<i64>)>,
    }
    impl LaneObserver for Collector {
        fn clock_moves(&mut self, _: &str, _: i32, engine: &mut PartitionEngine, to: i64) -> bool {
            self.windows.extend(engine.windows_closing(to));
            false
        }
        fn input_ended(&mut self, topic: &str, partition: i32, engine: &mut PartitionEngine) {
            self.final_watermarks
                .push((topic.to_string(), partition, engine.watermark()));
        }
    }
    let mut collector = Collector::default();
    let stats = replay(defs, config, &mut collector, progress, stop).await?;
    Ok(WindowLog {
        windows: collector.windows,
        final_watermarks: collector.final_watermarks,
        stats,
    })
}

async fn read_input(
    defs: &Definitions,
    views: &Arc<Vec<CompiledView>>,
    config: &BackfillConfig,
    observer: &mut dyn LaneObserver,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<(Vec<Lane>, InputStats), BackfillError> {
    let feeder = Feeder::new(config)?;
    let (source, partitions) = match &config.input {
        Input::Kafka { brokers, registry } => {
            let input = KafkaInput { brokers, registry };
            return input
                .read(defs, views, feeder, observer, progress, stop)
                .await;
        }
        Input::File { path, partitions } => (files::FileSource::Path(path), *partitions),
        Input::Table { table, partitions } => (files::FileSource::Table(table), *partitions),
    };
    files::read_file(
        defs, views, feeder, source, partitions, observer, progress, stop,
    )
}

/// Writes computed values to Redis with versioned writes.
pub async fn write(redis_url: &str, computed: &Computed) -> Result<WriteReport, BackfillError> {
    let redis_error = |source| BackfillError::Redis {
        url: freshet_store::redacted_url(redis_url),
        source,
    };
    let target = freshet_store::StoreTarget::parse(redis_url, None).map_err(|e| {
        redis_error(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "invalid URL",
            e.reason,
        )))
    })?;
    let mut connection = target.connect().await.map_err(redis_error)?;
    let written = connection
        .write_updates(
            computed
                .updates
                .iter()
                .map(|u| (u, &computed.storage[&u.view])),
            Writer::Backfill,
        )
        .await
        .map_err(redis_error)?;
    Ok(WriteReport {
        written,
        kept_newer: computed.updates.len() - written,
    })
}

/// The source topic of the views (for a file backfill, which reads one source).
pub fn source_topic(defs: &Definitions, views: &[String]) -> Result<String, BackfillError> {
    one_topic(&select_views(defs, views)?).map(str::to_string)
}

/// The one topic `views` read, or [`BackfillError::MixedSources`].
fn one_topic(views: &[CompiledView]) -> Result<&str, BackfillError> {
    let mut topics: Vec<&str> = views.iter().map(|v| v.topic.as_str()).collect();
    topics.sort();
    topics.dedup();
    match topics.as_slice() {
        [one] => Ok(one),
        _ => Err(BackfillError::MixedSources {
            views: views
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The source a compiled view's topic comes from.
fn source_of_topic<'a>(
    defs: &'a Definitions,
    topic: &str,
) -> &'a freshet_core::definitions::Source {
    defs.sources
        .iter()
        .find(|s| s.topic == topic)
        .expect("a compiled view's topic is a source's")
}

fn open_lanes(lanes: &[Lane]) -> String {
    lanes
        .iter()
        .filter(|l| !l.done)
        .map(|l| format!("{}/{}", l.topic, l.partition))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of one update as `(feature, value)` pairs in definition order, for reports.
pub fn ordered_values<'a>(
    defs: &'a Definitions,
    update: &'a FeatureUpdate,
) -> Vec<(&'a str, &'a Value)> {
    defs.view(&update.view)
        .map(|v| {
            v.features
                .iter()
                .filter_map(|f| update.values.get(&f.name).map(|x| (f.name.as_str(), x)))
                .collect()
        })
        .unwrap_or_default()
}
