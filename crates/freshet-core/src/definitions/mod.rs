//! Feature definitions: the model and its loader.
//!
//! Definitions are TOML files in one folder (`features/` by default). A file holds
//! `[[source]]` tables, or one `[view]` with its `[[feature]]` tables, or both:
//!
//! ```toml
//! [[source]]
//! name = "user_events"
//! topic = "user_events"
//! schema = "schemas/user_event.v2.avsc"   # relative to the definitions folder
//! event_time_field = "timestamp"
//! entity_key_field = "user_id"
//! watermark_delay = "5s"
//!
//! [view]
//! name = "user_click_stats"
//! entity = "user"
//! source = "user_events"
//! ttl = "1h"
//! description = "Click and view activity per user"
//!
//! [[feature]]
//! name = "click_count_1m"
//! description = "Clicks in the last closed one-minute window"
//! aggregation = "count"
//! filter = 'action_type == "click"'
//! window = { type = "tumbling", size = "1m" }
//! default = 0
//! ```
//!
//! [`load_dir`] reads and validates a folder; [`parse_files`] validates files given as
//! text (how the copilot checks a candidate before writing it). Validation never stops
//! at the first mistake: it returns every [`Diagnostic`], each naming file, line, column
//! and field, and saying what would be valid.

mod toml_tree;
mod validate;

use crate::duration::DurationMs;
use crate::filter::Filter;
use crate::schema::EventSchema;
use crate::value::{Value, ValueType};
use crate::window::Window;
use std::fmt;
use std::path::{Path, PathBuf};

pub use validate::parse_files;

/// Every source and feature view of a definitions folder, validated.
#[derive(Debug, Clone)]
pub struct Definitions {
    /// The folder the definitions were read from; schema paths are relative to it.
    pub root: PathBuf,
    pub sources: Vec<Source>,
    pub views: Vec<FeatureView>,
}

impl Definitions {
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn view(&self, name: &str) -> Option<&FeatureView> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The source a view reads. Validation guarantees it exists.
    pub fn source_of(&self, view: &FeatureView) -> &Source {
        self.source(&view.source)
            .expect("validated definitions: every view's source exists")
    }

    pub fn view_names(&self) -> Vec<&str> {
        self.views.iter().map(|v| v.name.as_str()).collect()
    }
}

/// A stream of events: a Kafka topic whose values are Avro records.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub topic: String,
    /// The schema-registry subject of the topic's values (default `{topic}-value`).
    pub subject: String,
    /// The schema file as written in the definition, relative to the definitions folder.
    pub schema_path: PathBuf,
    /// The reader schema: events of older compatible versions are resolved to it.
    pub schema: EventSchema,
    /// The field holding event time, in epoch milliseconds.
    pub event_time_field: String,
    /// The field holding the entity id the features are keyed by.
    pub entity_key_field: String,
    /// How far behind the largest event time seen an event may arrive and still count.
    pub watermark_delay: DurationMs,
    /// When set, a partition of the topic with no new record for this long and no backlog
    /// has its clock moved on by processing time, so its windows close (the live processor
    /// only; backfill and training sets ignore it: see `docs/processor.md`).
    pub idle_timeout: Option<DurationMs>,
    pub file: PathBuf,
}

/// A named group of features over one source and entity, stored and served together.
#[derive(Debug, Clone)]
pub struct FeatureView {
    pub name: String,
    pub entity: String,
    pub source: String,
    /// Values whose event time is older than this are treated as missing, and Redis keys
    /// expire after it.
    pub ttl: DurationMs,
    pub description: String,
    pub features: Vec<Feature>,
    pub file: PathBuf,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The distinct windows of the view's features, in order of first use.
    pub fn windows(&self) -> Vec<Window> {
        let mut windows: Vec<Window> = Vec::new();
        for f in &self.features {
            if !windows.contains(&f.window) {
                windows.push(f.window);
            }
        }
        windows
    }
}

#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub description: String,
    pub aggregation: Aggregation,
    /// The event field aggregated; `None` only for `count`, which then counts events.
    pub field: Option<String>,
    pub filter: Option<Filter>,
    pub window: Window,
    /// Served when there is no value (no event in the window, or the value expired).
    pub default: Value,
    /// The type of the feature's values.
    pub value_type: ValueType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    Count,
    Sum,
    Min,
    Max,
    Mean,
    Last,
    ApproxCountDistinct,
}

impl Aggregation {
    pub const ALL: [Aggregation; 7] = [
        Self::Count,
        Self::Sum,
        Self::Min,
        Self::Max,
        Self::Mean,
        Self::Last,
        Self::ApproxCountDistinct,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Last => "last",
            Self::ApproxCountDistinct => "approx_count_distinct",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The type of the aggregate over a field of type `input` (`None` for a fieldless
    /// count), or why the aggregation does not apply to that type.
    pub fn output_type(self, input: Option<ValueType>) -> Result<ValueType, String> {
        let numeric = |t: ValueType| {
            if t.is_integral() {
                ValueType::Long
            } else {
                ValueType::Double
            }
        };
        match (self, input) {
            (Self::Count | Self::ApproxCountDistinct, _) => Ok(ValueType::Long),
            (_, None) => Err(format!("`{}` needs a `field` to aggregate", self.name())),
            (Self::Sum | Self::Min | Self::Max, Some(t)) if t.is_numeric() => Ok(numeric(t)),
            (Self::Mean, Some(t)) if t.is_numeric() => Ok(ValueType::Double),
            (Self::Last, Some(t)) if t.is_numeric() => Ok(numeric(t)),
            (Self::Last, Some(t)) => Ok(t),
            (_, Some(t)) => Err(format!(
                "`{}` needs a numeric field (int, long, float or double), but the field is a {t}",
                self.name()
            )),
        }
    }

    /// The default served when a definition gives none: zero for counts and sums, null
    /// for the rest (there is no meaningful minimum or mean of nothing).
    pub fn implicit_default(self, output: ValueType) -> Value {
        match (self, output) {
            (Self::Count | Self::ApproxCountDistinct, _) => Value::Long(0),
            (Self::Sum, ValueType::Long) => Value::Long(0),
            (Self::Sum, _) => Value::Double(0.0),
            _ => Value::Null,
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem in the definitions, located precisely enough to fix without searching.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line of the offending value (or of the table missing a field).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Where in the definition, e.g. `feature "click_count_1m" > window.step`.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read definitions at {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not a folder of feature definitions (expected a directory holding *.toml files)", .0.display())]
    NotADirectory(PathBuf),
    #[error("no feature definitions (*.toml) in {}", .0.display())]
    Empty(PathBuf),
    #[error("{} problem(s) in the feature definitions:\n{}", .0.len(), format_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn format_diagnostics(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates every `*.toml` file in `dir` (not recursive; schema files referenced
/// by sources are read relative to `dir`).
pub fn load_dir(dir: &Path) -> Result<Definitions, LoadError> {
    let io = |cause| LoadError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(LoadError::NotADirectory(dir.to_path_buf()));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(LoadError::Empty(dir.to_path_buf()));
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|cause| LoadError::Io {
            path: path.clone(),
            cause,
        })?;
        files.push((path, text));
    }
    parse_files(dir, &files).map_err(LoadError::Invalid)
}
