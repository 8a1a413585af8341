//! Accumulators: the running state of one aggregation over one window.

use compact_str::CompactString;
use freshet_core::definitions::Aggregation;
use freshet_core::Value;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;

/// One feature's partial aggregate. Values are added in arrival order; panes of a sliding
/// window are combined with [`Acc::merge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    SumLong(i64),
    SumDouble(f64),
    Min(Option<Value>),
    Max(Option<Value>),
    Mean {
        sum: f64,
        n: i64,
    },
    /// The value of the latest event time; on equal times the later arrival wins.
    Last(Option<(i64, Value)>),
    /// Distinct values, kept exactly (as their JSON text). Exact is a valid estimate; a
    /// sketch would bound memory for very high cardinalities.
    Distinct(DistinctSet),
}

impl Acc {
    pub fn new(aggregation: Aggregation, integral: bool) -> Self {
        match aggregation {
            Aggregation::Count => Acc::Count(0),
            Aggregation::Sum if integral => Acc::SumLong(0),
            Aggregation::Sum => Acc::SumDouble(0.0),
            Aggregation::Min => Acc::Min(None),
            Aggregation::Max => Acc::Max(None),
            Aggregation::Mean => Acc::Mean { sum: 0.0, n: 0 },
            Aggregation::Last => Acc::Last(None),
            Aggregation::ApproxCountDistinct => Acc::Distinct(DistinctSet::default()),
        }
    }

    /// Adds one event's value. `value` is `None` for a count without a field (every event
    /// counts); otherwise nulls are skipped, as in SQL. Returns whether the value was new to
    /// a distinct set (always `false` for other aggregations).
    pub fn add(&mut self, value: Option<&Value>, event_time: i64) -> bool {
        let Some(value) = value else {
            if let Acc::Count(n) = self {
                *n += 1;
            }
            return false;
        };
        if value.is_null() {
            return false;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::SumLong(s) => *s = s.wrapping_add(as_long(value)),
            Acc::SumDouble(s) => *s += value.as_f64().unwrap_or(0.0),
            Acc::Min(m) => {
                if m.as_ref().is_none_or(|cur| less(value, cur)) {
                    *m = Some(value.clone());
                }
            }
            Acc::Max(m) => {
                if m.as_ref().is_none_or(|cur| less(cur, value)) {
                    *m = Some(value.clone());
                }
            }
            Acc::Mean { sum, n } => {
                *sum += value.as_f64().unwrap_or(0.0);
                *n += 1;
            }
            Acc::Last(last) => {
                if last.as_ref().is_none_or(|(t, _)| event_time >= *t) {
                    *last = Some((event_time, value.clone()));
                }
            }
            Acc::Distinct(set) => return set.insert(&value.to_json_string()),
        }
        false
    }

    /// Adds a value's JSON text to a distinct set, copying it only when it is new; returns
    /// whether it was (always `false` for other aggregations).
    pub fn add_distinct(&mut self, text: &str) -> bool {
        match self {
            Acc::Distinct(set) => set.insert(text),
            _ => false,
        }
    }

    /// The values of a distinct set (empty for other aggregations).
    pub fn distinct_values(&self) -> impl Iterator<Item = &str> {
        let set = match self {
            Acc::Distinct(set) => Some(set),
            _ => None,
        };
        set.into_iter().flat_map(DistinctSet::iter)
    }

    /// Combines another partial aggregate of the same kind into this one.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumLong(a), Acc::SumLong(b)) => *a = a.wrapping_add(*b),
            (Acc::SumDouble(a), Acc::SumDouble(b)) => *a += b,
            (Acc::Min(a), Acc::Min(Some(b))) if a.as_ref().is_none_or(|cur| less(b, cur)) => {
                *a = Some(b.clone());
            }
            (Acc::Max(a), Acc::Max(Some(b))) if a.as_ref().is_none_or(|cur| less(cur, b)) => {
                *a = Some(b.clone());
            }
            (Acc::Mean { sum, n }, Acc::Mean { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Last(a), Acc::Last(Some((t, v))))
                if a.as_ref().is_none_or(|(cur, _)| *t >= *cur) =>
            {
                *a = Some((*t, v.clone()));
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => {
                for value in b.iter() {
                    a.insert(value);
                }
            }
            _ => {}
        }
    }

    /// The aggregate's value; `Value::Null` when there is none (no values for min, max,
    /// mean, last).
    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Long(*n),
            Acc::SumLong(s) => Value::Long(*s),
            Acc::SumDouble(s) => Value::Double(*s),
            Acc::Min(v) | Acc::Max(v) => v.clone().unwrap_or(Value::Null),
            Acc::Mean { n: 0, .. } => Value::Null,
            Acc::Mean { sum, n } => Value::Double(sum / *n as f64),
            Acc::Last(v) => v.clone().map(|(_, v)| v).unwrap_or(Value::Null),
            Acc::Distinct(set) => Value::Long(set.len() as i64),
        }
    }
}

/// The result of the merge of `accs` (one feature's panes), without building the merged
/// state: distinct values are counted by reference instead of copied into one set.
pub fn merged_result<'a>(mut accs: impl Iterator<Item = &'a Acc>) -> Value {
    let Some(first) = accs.next() else {
        return Value::Null;
    };
    match first {
        Acc::Distinct(set) => {
            let mut all: HashSet<&str> = set.iter().collect();
            for acc in accs {
                if let Acc::Distinct(set) = acc {
                    all.extend(set.iter());
                }
            }
            Value::Long(all.len() as i64)
        }
        _ => {
            let mut merged = first.clone();
            for acc in accs {
                merged.merge(acc);
            }
            merged.result()
        }
    }
}

/// The values of a distinct set. Most sets are tiny (a sliding window's pane holds the
/// few values of its seconds), so up to [`DistinctSet::FEW`] values are a list searched
/// in order, and more a hash set. Values are compact strings, up to 24 bytes inline: a
/// value costs no allocation of its own. (A `BTreeSet<String>` took an eleven-entry node
/// and a string per value, the engine's largest share of allocations.)
#[derive(Debug, Clone)]
pub enum DistinctSet {
    Few(Vec<CompactString>),
    Many(hashbrown::HashSet<CompactString, foldhash::fast::RandomState>),
}

impl Default for DistinctSet {
    fn default() -> Self {
        DistinctSet::Few(Vec::new())
    }
}

impl DistinctSet {
    /// The most values kept as a list.
    const FEW: usize = 16;

    /// Adds a value; returns whether it was new.
    pub fn insert(&mut self, value: &str) -> bool {
        match self {
            DistinctSet::Few(list) if list.iter().any(|v| v == value) => false,
            DistinctSet::Few(list) if list.len() < Self::FEW => {
                list.push(value.into());
                true
            }
            DistinctSet::Few(list) => {
                let mut many: hashbrown::HashSet<_, _> = list.drain(..).collect();
                many.insert(value.into());
                *self = DistinctSet::Many(many);
                true
            }
            DistinctSet::Many(set) => {
                // One lookup, copying the value only when it is new.
                let before = set.len();
                set.get_or_insert_with(value, |v| CompactString::from(v));
                set.len() > before
            }
        }
    }

    pub fn contains(&self, value: &str) -> bool {
        match self {
            DistinctSet::Few(list) => list.iter().any(|v| v == value),
            DistinctSet::Many(set) => set.contains(value),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DistinctSet::Few(list) => list.len(),
            DistinctSet::Many(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (few, many) = match self {
            DistinctSet::Few(list) => (Some(list.iter()), None),
            DistinctSet::Many(set) => (None, Some(set.iter())),
        };
        few.into_iter()
            .flatten()
            .chain(many.into_iter().flatten())
            .map(CompactString::as_str)
    }

    /// The values in order.
    pub(crate) fn sorted(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self.iter().collect();
        values.sort_unstable();
        values
    }
}

/// Sets are equal when they hold the same values, whatever their form and order.
impl PartialEq for DistinctSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|v| other.contains(v))
    }
}

/// Saved as the sorted list of values, as a `BTreeSet` was: checkpoints written before
/// read back the same.
impl Serialize for DistinctSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.sorted())
    }
}

impl<'de> Deserialize<'de> for DistinctSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = Vec::<CompactString>::deserialize(deserializer)?;
        let mut set = DistinctSet::default();
        for value in &values {
            set.insert(value);
        }
        Ok(set)
    }
}

fn as_long(v: &Value) -> i64 {
    match v {
        Value::Long(i) => *i,
        Value::Double(d) => *d as i64,
        _ => 0,
    }
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Long(x), Value::Long(y)) => x < y,
        (Value::String(x), Value::String(y)) => x < y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x < y,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(agg: Aggregation, integral: bool, values: &[(i64, Value)]) -> Value {
        let mut acc = Acc::new(agg, integral);
        for (t, v) in values {
            acc.add(Some(v), *t);
        }
        acc.result()
    }

    #[test]
    fn aggregations_compute_their_values_and_skip_nulls() {
        let vals = [
            (1, Value::Long(5)),
            (2, Value::Null),
            (3, Value::Long(-2)),
            (4, Value::Long(9)),
        ];
        assert_eq!(run(Aggregation::Count, true, &vals), Value::Long(3));
        assert_eq!(run(Aggregation::Sum, true, &vals), Value::Long(12));
        assert_eq!(run(Aggregation::Min, true, &vals), Value::Long(-2));
        assert_eq!(run(Aggregation::Max, true, &vals), Value::Long(9));
        assert_eq!(run(Aggregation::Mean, true, &vals), Value::Double(4.0));
        assert_eq!(run(Aggregation::Last, true, &vals), Value::Long(9));
        let dup = [
            (1, Value::String("a".into())),
            (2, Value::String("b".into())),
            (3, Value::String("a".into())),
        ];
        assert_eq!(
            run(Aggregation::ApproxCountDistinct, false, &dup),
            Value::Long(2)
        );
    }

    #[test]
    fn a_distinct_set_keeps_each_value_once_as_a_list_and_beyond_and_saves_as_before() {
        let values: Vec<String> = (0..100).map(|i| format!("{}", (i * 7) % 41)).collect();
        let mut set = DistinctSet::default();
        let mut reference = std::collections::BTreeSet::new();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(set.insert(v), reference.insert(v.clone()), "value {i}");
            assert_eq!(set.len(), reference.len());
        }
        assert!(matches!(set, DistinctSet::Many(_)), "41 values are many");
        assert!(reference.iter().all(|v| set.contains(v)));
        assert!(!set.contains("41"));
        // Saved as the sorted list a BTreeSet<String> gave, and read back from it.
        let saved = serde_json::to_string(&set).unwrap();
        assert_eq!(saved, serde_json::to_string(&reference).unwrap());
        let read: DistinctSet = serde_json::from_str(&saved).unwrap();
        assert_eq!(read, set);
        // Equal whatever the order values came in.
        let mut backwards = DistinctSet::default();
        for v in values.iter().rev() {
            backwards.insert(v);
        }
        assert_eq!(backwards, set);
        let (mut few, mut other) = (DistinctSet::default(), DistinctSet::default());
        for v in ["\"b\"", "\"a\"", "\"b\""] {
            few.insert(v);
        }
        assert!(matches!(few, DistinctSet::Few(_)));
        assert_ne!(few, other);
        other.insert("\"a\"");
        other.insert("\"b\"");
        assert_eq!(few, other);
        assert_eq!(serde_json::to_string(&few).unwrap(), r#"["\"a\"","\"b\""]"#);
    }

    #[test]
    fn empty_aggregates_are_zero_or_null() {
        assert_eq!(run(Aggregation::Count, true, &[]), Value::Long(0));
        assert_eq!(run(Aggregation::Sum, false, &[]), Value::Double(0.0));
        assert_eq!(run(Aggregation::Mean, false, &[]), Value::Null);
        assert_eq!(run(Aggregation::Max, false, &[]), Value::Null);
        assert_eq!(run(Aggregation::Last, false, &[]), Value::Null);
    }

    #[test]
    fn last_follows_event_time_not_arrival_and_ties_go_to_the_later_arrival() {
        let vals = [
            (10, Value::Long(1)),
            (5, Value::Long(2)),
            (10, Value::Long(3)),
        ];
        assert_eq!(run(Aggregation::Last, true, &vals), Value::Long(3));
        let vals = [(10, Value::Long(1)), (5, Value::Long(2))];
        assert_eq!(run(Aggregation::Last, true, &vals), Value::Long(1));
    }

    #[test]
    fn a_count_without_field_counts_every_event() {
        let mut acc = Acc::new(Aggregation::Count, true);
        acc.add(None, 1);
        acc.add(None, 2);
        assert_eq!(acc.result(), Value::Long(2));
    }

    #[test]
    fn merging_panes_equals_adding_everything_to_one() {
        // Values repeat across the panes, so distinct counts must not add up per pane.
        let values: Vec<(i64, Value)> = (0..10)
            .map(|i| (i, Value::Double((i % 6) as f64 * 1.5)))
            .collect();
        for agg in Aggregation::ALL {
            let mut whole = Acc::new(agg, false);
            let mut left = Acc::new(agg, false);
            let mut right = Acc::new(agg, false);
            for (i, (t, v)) in values.iter().enumerate() {
                whole.add(Some(v), *t);
                if i < 4 {
                    left.add(Some(v), *t);
                } else {
                    right.add(Some(v), *t);
                }
            }
            assert_eq!(
                merged_result([&left, &right].into_iter()),
                whole.result(),
                "{agg}"
            );
            left.merge(&right);
            assert_eq!(left.result(), whole.result(), "{agg}");
        }
    }
}
