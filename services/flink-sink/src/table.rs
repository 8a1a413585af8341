//! The Flink job's output as a table: the latest window row of every (view, entity,
//! window group), and from it each (view, entity)'s feature values with a version.
//!
//! A row is one JSON object as the compiled job's sinks write it (`view_name`,
//! `entity_id`, `window_group`, `window_start`, `window_end` as UTC timestamps, and the
//! group's features). Rows of one key replace each other by window end, so a replayed or
//! reordered row never moves a value back.
//!
//! **Version.** A view's features come from one row per window group, and the groups'
//! rows are separate keys (possibly in separate partitions), arriving in no order between
//! them. The version of a (view, entity) is the sum of its groups' window ends (epoch ms):
//! any newer row of any group raises it, and the same rows always give the same version,
//! so replaying the topic writes the same values under the same versions, and the
//! versioned write in Redis never takes an older state over a newer one. Its event time
//! is the latest window end.

use freshet_core::definitions::Definitions;
use freshet_core::store_layout::{FeatureUpdate, ViewStorage};
use freshet_core::{Value, ValueType};
use std::collections::{BTreeMap, HashMap};

/// Why a row was not applied. Each names what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("missing or not a string: `{0}`")]
    MissingField(&'static str),
    #[error("unknown view `{0}`")]
    UnknownView(String),
    #[error("view `{view}` has no window group `{group}` (its groups: {known})")]
    UnknownGroup {
        view: String,
        group: String,
        known: String,
    },
    #[error("`{field}` is not a timestamp (`YYYY-MM-DD HH:MM:SS[.fff]`, UTC): {value:?}")]
    BadTimestamp { field: &'static str, value: String },
    #[error("feature `{feature}` of view `{view}` is not a {expected}: {value}")]
    BadValue {
        view: String,
        feature: String,
        expected: ValueType,
        value: String,
    },
}

/// One window row of a Flink sink.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub view: String,
    pub entity: String,
    pub group: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The group's features, by name, nulls as they came.
    pub values: BTreeMap<String, Value>,
}

/// A feature as the table needs it: name, type, default.
type FeatureShape = (String, ValueType, Value);

/// What the table needs to know of a view.
struct ViewShape {
    storage: ViewStorage,
    /// (window group slug, its features)
    groups: Vec<(String, Vec<FeatureShape>)>,
}

/// A group's latest row: its window end and values.
type LatestRow = (i64, BTreeMap<String, Value>);

/// `2025-12-06 06:01:00` or `2025-12-06 06:01:00.5`, UTC, in epoch ms. The ISO form with
/// a `T` is taken too (`'json.timestamp-format.standard' = 'ISO-8601'`).
fn epoch_ms(text: &str) -> Option<i64> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

/// The latest row of every (view, entity, group).
pub struct WindowTable {
    views: HashMap<String, ViewShape>,
    /// Per (view, entity): per group of the view, its latest row's end and values.
    latest: HashMap<(String, String), Vec<Option<LatestRow>>>,
}

/// What applying a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The row is the group's newest: the (view, entity) has new values.
    Newer,
    /// A row with the same or a later window end was already there.
    NotNewer,
}

impl WindowTable {
    pub fn new(defs: &Definitions) -> Self {
        let views = defs
            .views
            .iter()
            .map(|v| {
                let groups = v
                    .windows()
                    .into_iter()
                    .map(|w| {
                        let features = v
                            .features
                            .iter()
                            .filter(|f| f.window == w)
                            .map(|f| (f.name.clone(), f.value_type, f.default.clone()))
                            .collect();
                        (w.slug(), features)
                    })
                    .collect();
                let shape = ViewShape {
                    storage: ViewStorage {
                        entity_type: v.entity.clone(),
                        ttl_ms: v.ttl.as_millis(),
                    },
                    groups,
                };
                (v.name.clone(), shape)
            })
            .collect();
        Self {
            views,
            latest: HashMap::new(),
        }
    }

    /// Reads one row's JSON, checking it against the definitions.
    pub fn parse(&self, payload: &[u8]) -> Result<WindowRow, RowError> {
        let json: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| RowError::NotJson(e.to_string()))?;
        let object = json
            .as_object()
            .ok_or_else(|| RowError::NotJson(format!("a JSON {}", kind(&json))))?;
        let text = |field: &'static str| {
            object
                .get(field)
                .and_then(|v| v.as_str())
                .ok_or(RowError::MissingField(field))
        };
        let time = |field: &'static str| {
            let value = text(field)?;
            epoch_ms(value).ok_or_else(|| RowError::BadTimestamp {
                field,
                value: value.to_string(),
            })
        };
        let view = text("view_name")?;
        let shape = self
            .views
            .get(view)
            .ok_or_else(|| RowError::UnknownView(view.to_string()))?;
        let group = text("window_group")?;
        let (_, features) = shape
            .groups
            .iter()
            .find(|(slug, _)| slug == group)
            .ok_or_else(|| RowError::UnknownGroup {
                view: view.to_string(),
                group: group.to_string(),
                known: shape
                    .groups
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mut values = BTreeMap::new();
        for (name, ty, _) in features {
            let json = object.get(name).unwrap_or(&serde_json::Value::Null);
            let value = Value::from_json_as(json, *ty).ok_or_else(|| RowError::BadValue {
                view: view.to_string(),
                feature: name.clone(),
                expected: *ty,
                value: json.to_string(),
            })?;
            values.insert(name.clone(), value);
        }
        Ok(WindowRow {
            view: view.to_string(),
            entity: text("entity_id")?.to_string(),
            group: group.to_string(),
            start_ms: time("window_start")?,
            end_ms: time("window_end")?,
            values,
        })
    }

    /// Keeps `row` if it is its group's newest.
    pub fn apply(&mut self, row: WindowRow) -> Applied {
        let shape = &self.views[&row.view];
        let group = shape
            .groups
            .iter()
            .position(|(slug, _)| *slug == row.group)
            .expect("parsed rows name a group of their view");
        let slots = self
            .latest
            .entry((row.view, row.entity))
            .or_insert_with(|| vec![None; shape.groups.len()]);
        if slots[group]
            .as_ref()
            .is_some_and(|(end, _)| *end >= row.end_ms)
        {
            return Applied::NotNewer;
        }
        slots[group] = Some((row.end_ms, row.values));
        Applied::Newer
    }

    /// The values of `(view, entity)` from its groups' latest rows (a group without a row,
    /// and a null, take the feature's default, as in Freshet's own values), with their
    /// version and storage. `None` for a pair without any row.
    pub fn update(&self, view: &str, entity: &str) -> Option<(FeatureUpdate, &ViewStorage)> {
        let shape = self.views.get(view)?;
        let slots = self.latest.get(&(view.to_string(), entity.to_string()))?;
        let mut values = BTreeMap::new();
        let (mut version, mut event_time) = (0u64, i64::MIN);
        for ((_, features), slot) in shape.groups.iter().zip(slots) {
            if let Some((end, _)) = slot {
                version += *end as u64;
                event_time = event_time.max(*end);
            }
            for (name, _, default) in features {
                let value = slot
                    .as_ref()
                    .and_then(|(_, row)| row.get(name))
                    .filter(|v| !v.is_null())
                    .unwrap_or(default);
                values.insert(name.clone(), value.clone());
            }
        }
        Some((
            FeatureUpdate {
                view: view.to_string(),
                entity: entity.to_string(),
                version,
                event_time_ms: event_time,
                values,
            },
            &shape.storage,
        ))
    }

    /// (view, entity) pairs held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

fn kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> WindowTable {
        let root = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        WindowTable::new(&freshet_core::load_dir(&root).unwrap())
    }

    fn row(group: &str, end: &str, features: &str) -> Vec<u8> {
        format!(
            r#"{{"view_name":"user_click_stats","entity_id":"7","window_group":"{group}","window_start":"2025-12-06 06:00:00","window_end":"{end}",{features}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn groups_combine_into_one_update_versioned_by_the_sum_of_their_window_ends() {
        let mut t = table();
        let tumble = row(
            "tumble_1m",
            "2025-12-06 06:01:00",
            r#""click_count_1m":3,"view_count_1m":1"#,
        );
        let row1 = t.parse(&tumble).unwrap();
        assert_eq!(row1.end_ms, 1_765_000_860_000);
        assert_eq!(t.apply(row1.clone()), Applied::Newer);
        let (first, storage) = t.update("user_click_stats", "7").unwrap();
        assert_eq!(storage.entity_type, "user");
        assert_eq!(first.version, 1_765_000_860_000);
        assert_eq!(first.values["click_count_1m"], Value::Long(3));
        // The sliding group has no row yet: its features take their defaults.
        assert_eq!(first.values["click_count_10m"], Value::Long(0));

        let hop = row(
            "hop_10m_10s",
            "2025-12-06 06:00:50.5",
            r#""click_count_10m":9,"distinct_items_viewed_10m":null"#,
        );
        assert_eq!(t.apply(t.parse(&hop).unwrap()), Applied::Newer);
        let (second, _) = t.update("user_click_stats", "7").unwrap();
        assert_eq!(second.version, 1_765_000_860_000 + 1_765_000_850_500);
        assert_eq!(second.event_time_ms, 1_765_000_860_000);
        assert_eq!(second.values["click_count_10m"], Value::Long(9));
        assert_eq!(second.values["distinct_items_viewed_10m"], Value::Long(0));
        assert_eq!(second.values["click_count_1m"], Value::Long(3));

        // A replayed (or older) row changes nothing.
        assert_eq!(t.apply(row1), Applied::NotNewer);
        assert_eq!(t.update("user_click_stats", "7").unwrap().0, second);
    }

    #[test]
    fn bad_rows_are_refused_naming_what_is_wrong() {
        let t = table();
        let err = |payload: &[u8]| t.parse(payload).unwrap_err().to_string();
        assert_eq!(err(b"[1]"), "not a JSON object: a JSON array");
        assert!(err(b"{").starts_with("not a JSON object: EOF"));
        assert_eq!(err(br#"{"view_name":"nope"}"#), "unknown view `nope`");
        assert_eq!(
            err(&row("tumble_2m", "2025-12-06 06:01:00", r#""x":1"#)),
            "view `user_click_stats` has no window group `tumble_2m` (its groups: tumble_1m, hop_10m_10s)"
        );
        assert_eq!(
            err(&row("tumble_1m", "06:01", r#""click_count_1m":1"#)),
            "`window_end` is not a timestamp (`YYYY-MM-DD HH:MM:SS[.fff]`, UTC): \"06:01\""
        );
        assert_eq!(
            err(&row(
                "tumble_1m",
                "2025-12-06 06:01:00",
                r#""click_count_1m":"three""#
            )),
            "feature `click_count_1m` of view `user_click_stats` is not a long: \"three\""
        );
        let no_entity = br#"{"view_name":"user_click_stats","window_group":"tumble_1m","window_start":"2025-12-06 06:00:00","window_end":"2025-12-06 06:01:00"}"#;
        assert_eq!(err(no_entity), "missing or not a string: `entity_id`");
    }
}
