//! The answer of a point-in-time lookup: per requested view and spine row, the latest
//! update of that (view, entity) whose event time is at or before the row's time.

use crate::request::RequestedView;
use freshet_core::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A view's values as of one update.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    /// The partition clock when the values last changed (the update's event time).
    pub event_time: i64,
    /// `offset + 1` of the record that last changed them (0 from a file).
    pub version: u64,
    /// Every feature's value, in the view's definition order.
    pub values: Arc<[Value]>,
}

impl AsOf {
    /// The values of `view` from a map of feature name to value; a feature the map lacks
    /// (a record from before the feature existed) takes its default.
    pub fn from_map(
        view: &RequestedView,
        event_time: i64,
        version: u64,
        mut values: BTreeMap<String, Value>,
    ) -> Self {
        let values = view
            .all_features
            .iter()
            .zip(&view.all_defaults)
            .map(|(name, default)| values.remove(name).unwrap_or_else(|| default.clone()))
            .collect();
        Self {
            event_time,
            version,
            values,
        }
    }
}

/// Per requested view (in request order), per spine row: the values as of the row's time,
/// `None` when the (view, entity) had no update at or before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    pub per_view: Vec<Vec<Option<AsOf>>>,
}

impl Answers {
    pub fn unanswered(views: usize, rows: usize) -> Self {
        Self {
            per_view: vec![vec![None; rows]; views],
        }
    }
}
