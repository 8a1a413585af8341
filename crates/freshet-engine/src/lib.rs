//! Freshet's engine: windowed features over one input partition, in event time, and the
//! decoding of source records into its events. A library with no Kafka consumer loop, no
//! Redis and no HTTP: the processor, backfill and tests link it alike.
//!
//! - this module: events, compiled views, per-partition engines ([`PartitionEngine`]).
//! - [`acc`]: the accumulators (count, sum, mean, min, max, distinct count, ...).
//! - [`event_decoder`]: source records (Avro through the registry) to [`Event`]s, with
//!   typed errors that tell a bad record from a registry that could not be asked.
//! - [`fingerprint`]: a stable fingerprint of what defines a view's state.
//!
//! Pure and deterministic: no I/O, no clock. Given the records of a partition in offset
//! order, it always reaches the same state and emits the same values with the same
//! versions, wherever the processor happens to cut epochs or restart. That property is what
//! the exactly-once protocol (see `docs/processor.md`) builds on.
//!
//! ## Time
//! The partition's clock `C` is the largest event time seen on it; its watermark is
//! `W = C - watermark_delay`. An event with time `t < W` is late: counted, not aggregated.
//! Every entity's events are in one partition (records are keyed by entity), so each
//! partition's own watermark decides its windows; an idle partition holds back nothing and
//! the result does not depend on how partitions interleave.
//!
//! ## What a feature's value is at clock `C`
//! - **Tumbling** `size`: the aggregate of the last closed window, the one ending at
//!   `floor(W / size) * size`; the default when the entity had no event in it.
//! - **Sliding** `size`, `step`: the aggregate over `[E - size, E)` with
//!   `E = floor(C / step) * step + step`: the step-aligned window that contains the latest
//!   event time, so the value is as fresh as the last processed event.
//! - **Session** `gap`: the aggregate of the entity's latest closed session (a session
//!   closes when the watermark is past its end), until the watermark is more than the
//!   view's `ttl` past its end (as long as Redis serves it); then the default, and an
//!   entity with nothing else left leaves the engine.
//!
//! The value is a pure function of the entity's state and `C`. It changes only when an
//! event of the entity arrives or when `C` crosses a point registered as a timer (a window
//! closing or expiring, a pane leaving a sliding window, a session closing). Each change
//! marks the (view, entity) dirty with the version `offset + 1` of the record that caused
//! it; [`PartitionEngine::drain_updates`] then emits the current values once per dirty
//! pair. Because nothing changes between the last mark and the drain, the values under a
//! version are the same whenever the drain happens.

pub mod acc;
mod entities;
pub mod event_decoder;
pub mod fingerprint;
pub mod state_codec;
mod timers;
pub mod windows;

use acc::Acc;
use compact_str::CompactString;
use entities::{EntityTable, Slot};
use freshet_core::definitions::{Aggregation, Definitions};
use freshet_core::filter::Filter;
use freshet_core::store_layout::FeatureUpdate;
use freshet_core::window::WindowBounds;
use freshet_core::{Value, Window};
use serde::{Deserialize, Serialize};
use state_codec::PieceRef;
pub use state_codec::StateDecodeError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use timers::Timers;
use windows::{session, sliding, tumbling};

/// The engine's maps by entity id or value: foldhash, several times cheaper than SipHash
/// on short keys, with a seed chosen per process; hashbrown's, whose `entry_ref` finds or
/// inserts a borrowed key with one lookup and copies it only when it is new.
pub(crate) type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// An entity id. Ids are short (a user id is a few digits), and a compact string keeps up
/// to 24 bytes inline: the reading thread makes one per event, and the drain copies one
/// into every changed piece of state, none of which allocates.
pub type EntityId = CompactString;

/// A feature view prepared for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledView {
    pub name: String,
    /// The view's entity type (its definition's `entity`): where its values are stored.
    pub entity: String,
    pub topic: String,
    pub entity_key_field: String,
    pub event_time_field: String,
    pub watermark_delay_ms: i64,
    pub ttl_ms: i64,
    pub groups: Vec<Group>,
    pub features: Vec<CompiledFeature>,
}

/// The features of a view that share one window.
#[derive(Debug, Clone)]
pub struct Group {
    pub window: Window,
    pub features: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct CompiledFeature {
    pub name: String,
    pub aggregation: Aggregation,
    pub field: Option<String>,
    pub filter: Option<Filter>,
    pub default: Value,
    pub integral: bool,
}

impl CompiledView {
    /// Where the view's values are stored and for how long.
    pub fn storage(&self) -> freshet_core::store_layout::ViewStorage {
        freshet_core::store_layout::ViewStorage {
            entity_type: self.entity.clone(),
            ttl_ms: self.ttl_ms,
        }
    }

    pub fn compile_all(defs: &Definitions) -> Vec<CompiledView> {
        defs.views
            .iter()
            .map(|v| {
                let source = defs.source_of(v);
                let windows = v.windows();
                let groups = windows
                    .iter()
                    .map(|w| Group {
                        window: *w,
                        features: (0..v.features.len())
                            .filter(|i| v.features[*i].window == *w)
                            .collect(),
                    })
                    .collect();
                CompiledView {
                    name: v.name.clone(),
                    entity: v.entity.clone(),
                    topic: source.topic.clone(),
                    entity_key_field: source.entity_key_field.clone(),
                    event_time_field: source.event_time_field.clone(),
                    watermark_delay_ms: source.watermark_delay.as_millis(),
                    ttl_ms: v.ttl.as_millis(),
                    groups,
                    features: v
                        .features
                        .iter()
                        .map(|f| CompiledFeature {
                            name: f.name.clone(),
                            aggregation: f.aggregation,
                            field: f.field.clone(),
                            filter: f.filter.clone(),
                            default: f.default.clone(),
                            integral: f.value_type.is_integral(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn new_accs(&self, group: &Group) -> Vec<Acc> {
        group
            .features
            .iter()
            .map(|&i| Acc::new(self.features[i].aggregation, self.features[i].integral))
            .collect()
    }
}

/// One decoded input event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub entity: EntityId,
    pub time: i64,
    pub fields: Fields,
}

/// An event's fields by name. A source has few top-level fields, so a field is found by
/// scanning names that every event of one schema shares, without hashing and without a
/// copy of the names per event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    names: FieldNames,
    values: Vec<Value>,
}

/// The names of an event's fields.
#[derive(Debug, Clone)]
enum FieldNames {
    /// One list for the whole process, shared by every event with these fields: events
    /// cross from the reading to the processing thread, and a reference count would be
    /// written by both for each event.
    Shared(&'static [String]),
    Own(Arc<[String]>),
}

impl FieldNames {
    fn as_slice(&self) -> &[String] {
        match self {
            FieldNames::Shared(names) => names,
            FieldNames::Own(names) => names,
        }
    }
}

impl PartialEq for FieldNames {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames::Own(Arc::new([]))
    }
}

/// The process's one copy of the list of field names `names`, kept for its lifetime (one
/// per reader schema's field list).
pub fn shared_names(names: &[String]) -> &'static [String] {
    static LISTS: std::sync::Mutex<Vec<&'static [String]>> = std::sync::Mutex::new(Vec::new());
    let mut lists = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(list) = lists.iter().find(|list| **list == names) {
        return list;
    }
    let list: &'static [String] = Box::leak(names.to_vec().into_boxed_slice());
    lists.push(list);
    list
}

impl Fields {
    /// `values[i]` is the field named `names[i]`.
    pub fn new(names: Arc<[String]>, values: Vec<Value>) -> Self {
        assert_eq!(names.len(), values.len(), "one value per field name");
        Self {
            names: FieldNames::Own(names),
            values,
        }
    }

    /// Like [`Self::new`], with names from [`shared_names`].
    pub fn with_shared_names(names: &'static [String], values: Vec<Value>) -> Self {
        assert_eq!(names.len(), values.len(), "one value per field name");
        Self {
            names: FieldNames::Shared(names),
            values,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        Some(&self.values[self.position(name)?])
    }

    /// Where the field `name` is among the fields.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.as_slice().iter().position(|n| n == name)
    }

    /// The value of the field at `position` (see [`Self::position`]).
    pub fn value_at(&self, position: usize) -> &Value {
        &self.values[position]
    }

    pub fn names(&self) -> &[String] {
        self.names.as_slice()
    }

    /// The names when they are the process's shared list (see [`shared_names`]).
    fn shared(&self) -> Option<&'static [String]> {
        match self.names {
            FieldNames::Shared(names) => Some(names),
            FieldNames::Own(_) => None,
        }
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let (names, values): (Vec<String>, Vec<Value>) = iter.into_iter().unzip();
        Self::new(names.into(), values)
    }
}

impl<const N: usize> From<[(String, Value); N]> for Fields {
    fn from(fields: [(String, Value); N]) -> Self {
        fields.into_iter().collect()
    }
}

/// The state of one window group of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupState {
    /// Windows by start; only the served one and still-open ones are kept.
    Tumbling { windows: BTreeMap<i64, Vec<Acc>> },
    /// Step-sized panes by start, within the current sliding window.
    Sliding {
        panes: BTreeMap<i64, Vec<Acc>>,
        /// Derived from the panes, never checkpointed: see [`PaneUnion`].
        #[serde(skip)]
        union: PaneUnion,
    },
    /// Open sessions (sorted, disjoint) and the latest closed one.
    Session {
        open: Vec<(WindowBounds, Vec<Acc>)>,
        closed: Option<(WindowBounds, Vec<Acc>)>,
    },
}

impl GroupState {
    fn new(window: &Window) -> Self {
        match window {
            Window::Tumbling { .. } => GroupState::Tumbling {
                windows: BTreeMap::new(),
            },
            Window::Sliding { .. } => GroupState::Sliding {
                panes: BTreeMap::new(),
                union: PaneUnion::default(),
            },
            Window::Session { .. } => GroupState::Session {
                open: Vec::new(),
                closed: None,
            },
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            GroupState::Tumbling { windows } => windows.is_empty(),
            GroupState::Sliding { panes, .. } => panes.is_empty(),
            GroupState::Session { open, closed } => open.is_empty() && closed.is_none(),
        }
    }
}

/// For each feature slot of a sliding group, how many of the group's panes hold each
/// distinct value. The number of keys is the window's distinct count, kept up to date as
/// values enter and panes leave, so serving it costs nothing however many values the
/// window holds (merging the panes' sets cost the whole window on every change).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaneUnion {
    per_slot: Vec<FastMap<CompactString, u32>>,
}

impl PaneUnion {
    fn slot(&mut self, slot: usize) -> &mut FastMap<CompactString, u32> {
        if self.per_slot.len() <= slot {
            self.per_slot.resize_with(slot + 1, FastMap::default);
        }
        &mut self.per_slot[slot]
    }

    fn add_value(&mut self, slot: usize, value: &str) {
        // One lookup; a new value's key is made from it (`or_insert` would want `String`).
        match self.slot(slot).entry_ref(value) {
            hashbrown::hash_map::EntryRef::Occupied(n) => *n.into_mut() += 1,
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                v.insert_with_key(value.into(), 1);
            }
        }
    }

    fn add_pane(&mut self, accs: &[Acc]) {
        for (slot, acc) in accs.iter().enumerate() {
            for value in acc.distinct_values() {
                self.add_value(slot, value);
            }
        }
    }

    fn remove_pane(&mut self, accs: &[Acc]) {
        for (slot, acc) in accs.iter().enumerate() {
            let counts = self.slot(slot);
            for value in acc.distinct_values() {
                if let Some(n) = counts.get_mut(value) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(value);
                    }
                }
            }
        }
    }

    fn distinct(&self, slot: usize) -> usize {
        self.per_slot.get(slot).map_or(0, FastMap::len)
    }
}

/// Where one separately checkpointed piece of an entity's state lives: the window
/// (tumbling) or pane (sliding) of group `group` starting at `start`, or all sessions of a
/// session group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartKey {
    Window { group: usize, start: i64 },
    Sessions { group: usize },
}

/// One piece of an entity's state. The checkpoint keeps each piece under its own key, so an
/// epoch writes the windows and panes it changed, not every entity's whole state: a
/// ten-minute sliding window of one-second panes would otherwise be rewritten whole on
/// every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StatePart {
    Window(Vec<Acc>),
    Sessions {
        open: Vec<(WindowBounds, Vec<Acc>)>,
        closed: Option<(WindowBounds, Vec<Acc>)>,
    },
}

impl StatePart {
    /// The piece as the checkpoint and the changelog store it (format 1 of
    /// [`state_codec`]).
    pub fn encode(&self) -> Vec<u8> {
        state_codec::encode(match self {
            StatePart::Window(accs) => PieceRef::Window(accs),
            StatePart::Sessions { open, closed } => PieceRef::Sessions { open, closed },
        })
    }

    /// A stored piece, in the format [`StatePart::encode`] writes or in the JSON of
    /// earlier versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        state_codec::decode(bytes)
    }
}

/// A changed piece of state, for the checkpoint: `state` holds it encoded as
/// [`StatePart::encode`] does, `None` when it was removed.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchedPart {
    pub view: usize,
    pub entity: EntityId,
    pub part: PartKey,
    pub state: Option<Vec<u8>>,
    /// Created and removed since the last drain, so no checkpoint ever held it (`state` is
    /// `None`). Reported only by an engine that [reports such
    /// deletions](PartitionEngine::report_unwritten_deletions): a changelog read without a
    /// transaction filter may hold the piece from an aborted epoch, and needs the deletion.
    pub unwritten: bool,
}

/// A checkpointed piece of state does not fit the view's definition.
#[derive(Debug, thiserror::Error)]
#[error("the saved state of entity {entity} in view {view} does not fit the view's definition: {part:?}")]
pub struct RestoreError {
    pub view: String,
    pub entity: String,
    pub part: PartKey,
}

/// Everything kept about one entity in one view.
///
/// Its marks (changed since the last drain, which pieces) live here rather than in maps of
/// their own beside the states, so a record costs one lookup by entity per view instead
/// of three. While marked, a state stays in the engine even when empty: the drains need
/// it, and remove it once it is empty and no longer marked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityState {
    pub groups: Vec<GroupState>,
    /// The version and clock of the latest change since the last drain of updates.
    #[serde(skip)]
    dirty: Option<(u64, i64)>,
    /// The pieces changed since the last drain of touched pieces.
    #[serde(skip)]
    touched: Vec<PartKey>,
    /// The windows and panes created since then: never checkpointed, so one that is gone
    /// again by the drain needs no deletion. (A piece in the checkpoint is in this state
    /// too, restored or kept, so it is not created again; nor is a dropped window or pane:
    /// its events are late, or behind the sliding window, which takes no new pane there.)
    #[serde(skip)]
    born: Vec<PartKey>,
}

/// States are equal when they hold the same windows and sessions, whatever their marks.
impl PartialEq for EntityState {
    fn eq(&self, other: &Self) -> bool {
        self.groups == other.groups
    }
}

impl EntityState {
    fn new(view: &CompiledView) -> Self {
        Self::with_groups(
            view.groups
                .iter()
                .map(|g| GroupState::new(&g.window))
                .collect(),
        )
    }

    /// A state of these groups, not marked as changed.
    pub fn with_groups(groups: Vec<GroupState>) -> Self {
        Self {
            groups,
            dirty: None,
            touched: Vec::new(),
            born: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.iter().all(GroupState::is_empty)
    }

    /// Whether the state can leave the engine: nothing in it, and nothing to drain.
    fn is_gone(&self) -> bool {
        self.dirty.is_none() && self.touched.is_empty() && self.is_empty()
    }

    /// A copy of one piece (`None` if it does not exist).
    pub fn part(&self, key: PartKey) -> Option<StatePart> {
        Some(match self.part_ref(key)? {
            PieceRef::Window(accs) => StatePart::Window(accs.to_vec()),
            PieceRef::Sessions { open, closed } => StatePart::Sessions {
                open: open.to_vec(),
                closed: closed.clone(),
            },
        })
    }

    fn part_ref(&self, key: PartKey) -> Option<PieceRef<'_>> {
        match (key, self.groups.get(key.group())?) {
            (PartKey::Window { start, .. }, GroupState::Tumbling { windows }) => {
                windows.get(&start).map(|w| PieceRef::Window(w))
            }
            (PartKey::Window { start, .. }, GroupState::Sliding { panes, .. }) => {
                panes.get(&start).map(|p| PieceRef::Window(p))
            }
            (PartKey::Sessions { .. }, GroupState::Session { open, closed }) => (!open.is_empty()
                || closed.is_some())
            .then_some(PieceRef::Sessions { open, closed }),
            _ => None,
        }
    }

    /// Every piece, in key order.
    pub fn parts(&self) -> Vec<(PartKey, StatePart)> {
        let mut keys = Vec::new();
        for (group, gs) in self.groups.iter().enumerate() {
            match gs {
                GroupState::Tumbling { windows } => keys.extend(
                    windows
                        .keys()
                        .map(|&start| PartKey::Window { group, start }),
                ),
                GroupState::Sliding { panes, .. } => {
                    keys.extend(panes.keys().map(|&start| PartKey::Window { group, start }))
                }
                GroupState::Session { .. } => keys.push(PartKey::Sessions { group }),
            }
        }
        keys.into_iter()
            .filter_map(|k| self.part(k).map(|p| (k, p)))
            .collect()
    }

    /// Puts a piece back; `false` when it does not fit the group's kind of window.
    fn insert_part(&mut self, key: PartKey, part: StatePart) -> bool {
        let Some(gs) = self.groups.get_mut(key.group()) else {
            return false;
        };
        match (key, part, gs) {
            (
                PartKey::Window { start, .. },
                StatePart::Window(accs),
                GroupState::Tumbling { windows },
            ) => {
                windows.insert(start, accs);
            }
            (
                PartKey::Window { start, .. },
                StatePart::Window(accs),
                GroupState::Sliding { panes, union },
            ) => {
                union.add_pane(&accs);
                panes.insert(start, accs);
            }
            (
                PartKey::Sessions { .. },
                StatePart::Sessions { open: o, closed: c },
                GroupState::Session { open, closed },
            ) => {
                *open = o;
                *closed = c;
            }
            _ => return false,
        }
        true
    }
}

impl PartKey {
    pub fn group(&self) -> usize {
        match *self {
            PartKey::Window { group, .. } | PartKey::Sessions { group } => group,
        }
    }
}

/// The window a group's values were served from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedWindow {
    /// The window's slug, e.g. `tumble_1m`.
    pub group: String,
    pub start: i64,
    pub end: i64,
}

/// One emitted update: the values and the windows they come from (groups serving
/// defaults have no window).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewUpdate {
    pub update: FeatureUpdate,
    pub windows: Vec<ServedWindow>,
}

/// One window whose aggregates are final: no later input changes them. What
/// [`PartitionEngine::windows_closing`] reports, for comparing the engine with another
/// one window by window (`docs/flink-sql.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedWindow {
    pub view: String,
    pub entity: String,
    /// The window's slug, e.g. `tumble_1m`.
    pub group: String,
    pub start: i64,
    pub end: i64,
    /// The features of the group over the window, null results replaced by the feature's
    /// default, as they are served.
    pub values: BTreeMap<String, Value>,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Behind the watermark: counted, not aggregated.
    Late,
}

/// The key of an entity's state: (view index, entity id).
pub type StateKey = (usize, String);

/// Windowed aggregation of one input partition.
pub struct PartitionEngine {
    views: Arc<Vec<CompiledView>>,
    /// Indices of the views that read this partition's topic.
    view_ids: Vec<usize>,
    delay: i64,
    clock: Option<i64>,
    next_offset: i64,
    /// Entity states per view index (views on other topics hold none).
    entities: EntityTable,
    /// (time, view, entity's slot, whether it is a session's).
    timers: Timers,
    /// The entities changed since the drains.
    marks: Marks,
    /// Per view: its distinct filters (features often share one, such as
    /// `action_type == "click"`), each tested once per event, and where its fields are.
    inputs: Vec<ViewInputs>,
    /// Reused by every event: the pieces of state it changed, the timers it needs.
    scratch: Scratch,
}

/// A view's distinct filters and which one each feature has.
struct ViewInputs {
    distinct: Vec<Filter>,
    /// Per feature, the index of its filter in `distinct`.
    of_feature: Vec<Option<usize>>,
    /// The fields the view reads: its filters' and its features'.
    fields: Vec<String>,
    /// Per distinct filter, per comparison: its field's index in `fields`.
    compared: Vec<Vec<usize>>,
    /// Per feature: its field's index in `fields`.
    feature_field: Vec<Option<usize>>,
    /// The shared field names `at` was found for. Events decoded with one reader schema
    /// share their names, so fields are looked up by name once per schema, not per event
    /// (that lookup was a tenth of the engine's time).
    located_in: Option<&'static [String]>,
    /// Per entry of `fields`: its position among the fields of `located_in`.
    at: Vec<Option<usize>>,
}

/// What a feature takes from an event.
#[derive(Debug, Clone, Copy)]
enum FeatureInput {
    /// Nothing: its filter rejects the event.
    Skip,
    /// The event itself (a count).
    Event,
    /// The event's field at this position.
    Field(usize),
    /// Its field, which the event lacks: null.
    Missing,
}

impl ViewInputs {
    fn new(view: &CompiledView) -> Self {
        let mut distinct: Vec<Filter> = Vec::new();
        let of_feature = view
            .features
            .iter()
            .map(|f| {
                let filter = f.filter.as_ref()?;
                Some(match distinct.iter().position(|d| d == filter) {
                    Some(at) => at,
                    None => {
                        distinct.push(filter.clone());
                        distinct.len() - 1
                    }
                })
            })
            .collect();
        let mut fields: Vec<String> = Vec::new();
        let mut field_index = |name: &str| match fields.iter().position(|f| f == name) {
            Some(at) => at,
            None => {
                fields.push(name.to_string());
                fields.len() - 1
            }
        };
        let compared = distinct
            .iter()
            .map(|f| f.all_of.iter().map(|c| field_index(&c.field)).collect())
            .collect();
        let feature_field = view
            .features
            .iter()
            .map(|f| f.field.as_deref().map(&mut field_index))
            .collect();
        Self {
            distinct,
            of_feature,
            fields,
            compared,
            feature_field,
            located_in: None,
            at: Vec::new(),
        }
    }

    /// What each feature takes from `event`, into `inputs` (by feature index); `results`
    /// is a buffer for the filters' results.
    fn take(&mut self, event: &Event, results: &mut Vec<bool>, inputs: &mut Vec<FeatureInput>) {
        let names = event.fields.shared();
        let located = matches!((self.located_in, names), (Some(a), Some(b)) if std::ptr::eq(a, b));
        if !located {
            self.at = self
                .fields
                .iter()
                .map(|f| event.fields.position(f))
                .collect();
            self.located_in = names;
        }
        let at = &self.at;
        results.clear();
        results.extend(self.distinct.iter().zip(&self.compared).map(|(f, fields)| {
            f.matches_each(|c| at[fields[c]].map(|i| event.fields.value_at(i)))
        }));
        inputs.clear();
        inputs.extend(
            self.of_feature
                .iter()
                .zip(&self.feature_field)
                .map(|(filter, field)| {
                    if !filter.is_none_or(|i| results[i]) {
                        return FeatureInput::Skip;
                    }
                    match field.map(|f| at[f]) {
                        None => FeatureInput::Event,
                        Some(Some(i)) => FeatureInput::Field(i),
                        Some(None) => FeatureInput::Missing,
                    }
                }),
        );
    }
}

/// Buffers an event's processing reuses rather than allocates.
#[derive(Default)]
struct Scratch {
    parts: Vec<PartKey>,
    /// The windows and panes the event created.
    born: Vec<PartKey>,
    /// (time, whether it is a session's)
    timers: Vec<(i64, bool)>,
    /// The JSON text of a value for a distinct set.
    text: String,
    filter_results: Vec<bool>,
    /// Per feature of the view at hand: what it takes from the event.
    inputs: Vec<FeatureInput>,
}

impl PartitionEngine {
    /// An engine for a partition of `topic` that starts from nothing.
    pub fn new(views: Arc<Vec<CompiledView>>, topic: &str) -> Self {
        Self::restore(views, topic, 0, None, HashMap::new()).expect("no saved state to misfit")
    }

    /// An engine for a partition of `topic`, starting at `next_offset` with `clock` and the
    /// pieces of entity state restored from a checkpoint.
    pub fn restore(
        views: Arc<Vec<CompiledView>>,
        topic: &str,
        next_offset: i64,
        clock: Option<i64>,
        saved: HashMap<StateKey, Vec<(PartKey, StatePart)>>,
    ) -> Result<Self, RestoreError> {
        let view_ids: Vec<usize> = (0..views.len())
            .filter(|&i| views[i].topic == topic)
            .collect();
        let delay = view_ids.first().map_or(0, |&i| views[i].watermark_delay_ms);
        let mut entities = EntityTable::new(views.len());
        for ((vi, entity), parts) in saved {
            let Some(view) = views.get(vi) else {
                continue;
            };
            let mut state = EntityState::new(view);
            for (key, part) in parts {
                if !state.insert_part(key, part) {
                    return Err(RestoreError {
                        view: view.name.clone(),
                        entity,
                        part: key,
                    });
                }
            }
            if !state.is_empty() {
                let slot = entities.slot_of(&entity.into());
                entities.insert(vi, slot, state);
            }
        }
        let n = views.len();
        let mut engine = Self {
            inputs: views.iter().map(ViewInputs::new).collect(),
            views,
            view_ids,
            delay,
            clock,
            next_offset,
            entities,
            timers: Timers::default(),
            marks: Marks {
                dirty: vec![Vec::new(); n],
                touched: vec![Vec::new(); n],
                track_touched: true,
                report_unwritten: false,
            },
            scratch: Scratch::default(),
        };
        engine.rebuild_timers();
        Ok(engine)
    }

    /// Makes [`Self::drain_touched`] also report the pieces created and removed since the
    /// last drain ([`TouchedPart::unwritten`]), which a checkpoint skips but a changelog
    /// records: see `docs/scaling.md`.
    pub fn report_unwritten_deletions(&mut self, report: bool) {
        self.marks.report_unwritten = report;
    }

    /// An engine like [`Self::new`] whose state is never checkpointed: it keeps no record
    /// of the pieces of state that changed ([`Self::drain_touched`] stays empty).
    pub fn without_checkpoint(views: Arc<Vec<CompiledView>>, topic: &str) -> Self {
        let mut engine = Self::new(views, topic);
        engine.marks.track_touched = false;
        engine
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn clock(&self) -> Option<i64> {
        self.clock
    }

    pub fn watermark(&self) -> Option<i64> {
        self.clock.map(|c| c - self.delay)
    }

    /// How far the watermark trails the clock.
    pub fn watermark_delay(&self) -> i64 {
        self.delay
    }

    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Timers are not persisted: they follow from the state and the clock.
    fn rebuild_timers(&mut self) {
        let clock = self.clock.unwrap_or(i64::MIN);
        let mut timers = Timers::default();
        for (vi, view) in self.views.iter().enumerate() {
            for (slot, _, state) in self.entities.iter(vi) {
                for (group, gs) in view.groups.iter().zip(&state.groups) {
                    for (at, session) in timers_of(&group.window, gs, (self.delay, view.ttl_ms)) {
                        if at > clock {
                            timers.insert((at, vi as u32, slot, session));
                        }
                    }
                }
            }
        }
        self.timers = timers;
    }

    /// Processes the record at `offset`; `event` is `None` for a record that could not be
    /// decoded (it still moves the offset on).
    pub fn process(&mut self, offset: i64, event: Option<&Event>) -> Outcome {
        self.next_offset = offset + 1;
        let Some(event) = event else {
            return Outcome::Applied;
        };
        let version = (offset + 1) as u64;
        if self.clock.is_none_or(|c| event.time > c) {
            self.clock = Some(event.time);
            self.fire_timers(version);
        }
        let clock = self.clock.expect("set above");
        if event.time < clock - self.delay {
            return Outcome::Late;
        }
        let slot = self.entities.slot_of(&event.entity);
        let Scratch {
            parts,
            born,
            timers,
            text,
            filter_results,
            inputs,
        } = &mut self.scratch;
        for &vi in &self.view_ids {
            let view = &self.views[vi];
            self.inputs[vi].take(event, filter_results, inputs);
            let state = self
                .entities
                .get_or_insert_with(vi, slot, || EntityState::new(view));
            parts.clear();
            for (gi, group) in view.groups.iter().enumerate() {
                add_event(
                    view,
                    (gi, group),
                    &mut state.groups[gi],
                    event,
                    (clock, self.delay),
                    inputs,
                    ((parts, born), timers, text),
                );
            }
            if self.marks.track_touched {
                state.born.append(born);
            } else {
                born.clear();
            }
            for (at, session) in timers.drain(..) {
                self.timers.insert((at, vi as u32, slot, session));
            }
            self.marks.mark(vi, state, slot, (version, clock), parts);
        }
        Outcome::Applied
    }

    /// Moves the clock on to `to` without a record: what the processor does for a quiet
    /// partition once its source's `idle_timeout` has passed (see `docs/processor.md`).
    /// Windows and sessions the new watermark passes close, as they would for an event at
    /// `to`, and nothing is aggregated. The changes take the version of the last record
    /// processed (`next_offset`), which the live processor's write applies over, so they
    /// replace in Redis what that record's epoch wrote. Unlike everything else here, this
    /// depends on when it is called, not only on the records: a replay without it reaches
    /// the same state only once the records move the clock as far. Returns whether the
    /// clock moved (never for a partition without a record yet, or to a time not past it).
    pub fn advance_clock(&mut self, to: i64) -> bool {
        match self.clock {
            Some(clock) if to > clock => {
                self.clock = Some(to);
                self.fire_timers(self.next_offset as u64);
                true
            }
            _ => false,
        }
    }

    /// Whether values changed since the last drain of updates.
    pub fn has_changes(&self) -> bool {
        self.marks.dirty.iter().any(|d| !d.is_empty())
    }

    fn fire_timers(&mut self, version: u64) {
        let clock = self.clock.expect("timers fire after the clock moved");
        while let Some((at, due)) = self.timers.pop_due(clock) {
            for (view_index, slot, session) in due {
                let vi = view_index as usize;
                let Some(state) = self.entities.get_mut(vi, slot) else {
                    continue;
                };
                let view = &self.views[vi];
                // A timer left by state that has since changed (a session merged away,
                // a window already dropped, an entity gone from the slot, which another
                // entity may hold now) changes nothing. Acting on it would give a
                // version that a run restored from a checkpoint, which rebuilds only the
                // timers its state needs, would not give.
                let live = view
                    .groups
                    .iter()
                    .zip(&state.groups)
                    .any(|(g, gs)| has_timer_at(&g.window, gs, (self.delay, view.ttl_ms), at));
                if live {
                    let mut parts = Vec::new();
                    let mut expiries = Vec::new();
                    cleanup(view, state, (clock, self.delay), &mut parts, &mut expiries);
                    for expiry in expiries {
                        self.timers.insert((expiry, view_index, slot, false));
                    }
                    self.marks.mark(vi, state, slot, (version, clock), &parts);
                }
                // Session timers are set lazily (see `add_event`): whichever of an
                // entity's session timers fires sets the exact ones of its open sessions.
                // Only a session's: every timer of the entity did, and as each extension
                // moves the exact time, an entity with an open session gathered a stale
                // timer per window or pane that closed, until the session did.
                if session {
                    let open_sessions =
                        view.groups.iter().zip(&state.groups).flat_map(|(g, gs)| {
                            match (&g.window, gs) {
                                (Window::Session { .. }, GroupState::Session { open, .. }) => {
                                    &open[..]
                                }
                                _ => &[],
                            }
                        });
                    for (bounds, _) in open_sessions {
                        let exact = session::close_timer(bounds, self.delay);
                        if exact > at {
                            self.timers.insert((exact, view_index, slot, true));
                        }
                    }
                }
                if state.is_gone() {
                    self.entities.remove(vi, slot);
                }
            }
        }
    }

    /// The current feature values of every (view, entity) changed since the last drain.
    pub fn drain_updates(&mut self) -> Vec<FeatureUpdate> {
        self.drain_view_updates()
            .into_iter()
            .map(|u| u.update)
            .collect()
    }

    /// Like [`Self::drain_updates`], with the windows the values were served from.
    pub fn drain_view_updates(&mut self) -> Vec<ViewUpdate> {
        let clock = self.clock.unwrap_or(i64::MIN);
        let mut out = Vec::new();
        for vi in 0..self.views.len() {
            let mut dirty = std::mem::take(&mut self.marks.dirty[vi]);
            // In entity order, so a drain's output does not depend on slots.
            let entities = &mut self.entities;
            dirty.sort_unstable_by(|&a, &b| entities.id(a).cmp(entities.id(b)));
            let view = &self.views[vi];
            for slot in dirty {
                let entity = entities.id(slot).to_string();
                let Some(state) = entities.get_mut(vi, slot) else {
                    continue;
                };
                let Some((version, event_time)) = state.dirty.take() else {
                    continue;
                };
                let (values, windows) = served(view, state, clock, self.delay);
                if state.is_gone() {
                    entities.remove(vi, slot);
                }
                out.push(ViewUpdate {
                    update: FeatureUpdate {
                        view: view.name.clone(),
                        entity,
                        version,
                        event_time_ms: event_time,
                        values,
                    },
                    windows,
                });
            }
        }
        out
    }

    /// The position of the view named `name` among the engine's views.
    pub fn view_position(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }

    /// What [`Self::drain_updates`] would emit now for one (view, entity), taking its
    /// mark, so neither a later call nor a drain emits it again: `None` when the pair has
    /// not changed since it was last drained or taken (or is unknown). A reader that
    /// follows a few entities (training sets answering spine rows) asks for those alone
    /// instead of draining every entity the input changed.
    pub fn take_update(&mut self, view: usize, entity: &str) -> Option<FeatureUpdate> {
        let clock = self.clock.unwrap_or(i64::MIN);
        let slot = self.entities.find(entity)?;
        let compiled = &self.views[view];
        let state = self.entities.get_mut(view, slot)?;
        let (version, event_time_ms) = state.dirty.take()?;
        let (values, _) = served(compiled, state, clock, self.delay);
        Some(FeatureUpdate {
            view: compiled.name.clone(),
            entity: entity.to_string(),
            version,
            event_time_ms,
            values,
        })
    }

    /// The pieces of state changed since the last drain, for the checkpoint.
    pub fn drain_touched(&mut self) -> Vec<TouchedPart> {
        let mut out = Vec::new();
        let report_unwritten = self.marks.report_unwritten;
        for vi in 0..self.views.len() {
            let mut touched = std::mem::take(&mut self.marks.touched[vi]);
            let entities = &mut self.entities;
            touched.sort_unstable_by(|&a, &b| entities.id(a).cmp(entities.id(b)));
            for slot in touched {
                let entity = entities.id(slot).clone();
                let Some(state) = entities.get_mut(vi, slot) else {
                    continue;
                };
                let mut parts = std::mem::take(&mut state.touched);
                parts.sort_unstable();
                parts.dedup();
                state.born.sort_unstable();
                for &part in &parts {
                    let encoded = state.part_ref(part).map(state_codec::encode);
                    // A window or pane created and gone since the last drain was never
                    // written: no deletion for it. Catching up, an epoch spans minutes of
                    // event time, and most one-minute windows live and leave within one.
                    let unwritten = encoded.is_none() && state.born.binary_search(&part).is_ok();
                    if unwritten && !report_unwritten {
                        continue;
                    }
                    out.push(TouchedPart {
                        view: vi,
                        entity: entity.clone(),
                        part,
                        state: encoded,
                        unwritten,
                    });
                }
                state.born.clear();
                if state.is_gone() {
                    entities.remove(vi, slot);
                } else {
                    // Kept for the entity's next changes.
                    parts.clear();
                    state.touched = parts;
                }
            }
        }
        out
    }

    /// The windows whose aggregates become final when the clock moves from where it is
    /// to `to` (before the event at `to` is processed), in (view, entity, group, start)
    /// order. Final means no later event can change them:
    ///
    /// - **tumbling**: windows whose end the watermark reaches (`end <= to - delay`);
    /// - **sliding**: the windows served until now, which the clock leaves: those ending
    ///   from the one served at the current clock up to (not including) the one served at
    ///   `to`, each the union of its panes (a window without a pane of the entity is none);
    /// - **session**: open sessions whose end the watermark passes (`end < to - delay`).
    ///
    /// A read of the state, changing nothing; its cost grows with the entities held, so it
    /// is for comparisons and diagnostics, not for the live path.
    pub fn windows_closing(&self, to: i64) -> Vec<ClosedWindow> {
        let Some(clock) = self.clock.filter(|c| to > *c) else {
            return Vec::new();
        };
        let (from_watermark, to_watermark) = (clock - self.delay, to - self.delay);
        let mut out = Vec::new();
        for &vi in &self.view_ids {
            let view = &self.views[vi];
            for (_, entity, state) in self.entities.iter(vi) {
                for (group, gs) in view.groups.iter().zip(&state.groups) {
                    let mut close = |start: i64, end: i64, result: &dyn Fn(usize) -> Value| {
                        let mut values = BTreeMap::new();
                        put_results(view, group, result, &mut values);
                        out.push(ClosedWindow {
                            view: view.name.clone(),
                            entity: entity.to_string(),
                            group: group.window.slug(),
                            start,
                            end,
                            values,
                        });
                    };
                    match (&group.window, gs) {
                        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
                            let size = size.as_millis();
                            for (&start, accs) in windows {
                                let end = start + size;
                                if end > from_watermark && end <= to_watermark {
                                    close(start, end, &|slot| accs[slot].result());
                                }
                            }
                        }
                        (Window::Sliding { size, step }, GroupState::Sliding { panes, .. }) => {
                            let (size, step) = (size.as_millis(), step.as_millis());
                            let last_end = sliding::served_end(to, step);
                            let mut end = sliding::served_end(clock, step);
                            while end < last_end {
                                let window: Vec<&Vec<Acc>> =
                                    panes.range(end - size..end).map(|(_, a)| a).collect();
                                if window.is_empty() {
                                    // No pane until the next one's window: skip ahead.
                                    match panes.range(end..).next() {
                                        Some((&pane, _)) => {
                                            end = end.max(sliding::served_end(pane, step));
                                            continue;
                                        }
                                        None => break,
                                    }
                                }
                                close(end - size, end, &|slot| {
                                    acc::merged_result(window.iter().map(|a| &a[slot]))
                                });
                                end += step;
                            }
                        }
                        (Window::Session { .. }, GroupState::Session { open, .. }) => {
                            for (bounds, accs) in open.iter().filter(|(b, _)| b.end < to_watermark)
                            {
                                close(bounds.start, bounds.end, &|slot| accs[slot].result());
                            }
                        }
                        _ => unreachable!("group state matches its window"),
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.view, &a.entity, &a.group, a.start).cmp(&(&b.view, &b.entity, &b.group, b.start))
        });
        out
    }

    /// The served values of one entity now (for tests and diagnostics).
    pub fn values(&self, view: usize, entity: &str) -> BTreeMap<String, Value> {
        let v = &self.views[view];
        match self
            .entities
            .find(entity)
            .and_then(|slot| self.entities.get(view, slot))
        {
            Some(state) => served(v, state, self.clock.unwrap_or(i64::MIN), self.delay).0,
            None => defaults(v),
        }
    }
}

/// Per view, the entities changed since the drains (what changed is in their states).
struct Marks {
    /// Per view: entities changed since the last drain of updates (the version and event
    /// time are in their state), each once.
    dirty: Vec<Vec<Slot>>,
    /// Per view: entities whose state changed since the last checkpoint (the pieces that
    /// changed are in their state), each once.
    touched: Vec<Vec<Slot>>,
    /// Whether `touched` is kept: not for an engine whose state is never checkpointed
    /// (backfill), where nothing drains it and it would grow with the input.
    track_touched: bool,
    /// Whether drains report pieces created and removed between them.
    report_unwritten: bool,
}

impl Marks {
    /// Records in `entity`'s `state` in view `vi` a change of its values (with the version
    /// and clock) and of its pieces `parts` (when `touched` is kept), and lists the entity
    /// in `dirty` and `touched` the first time since their drains.
    fn mark(
        &mut self,
        vi: usize,
        state: &mut EntityState,
        entity: Slot,
        version_and_clock: (u64, i64),
        parts: &[PartKey],
    ) {
        if state.dirty.replace(version_and_clock).is_none() {
            self.dirty[vi].push(entity);
        }
        if !self.track_touched || parts.is_empty() {
            return;
        }
        if state.touched.is_empty() {
            self.touched[vi].push(entity);
        }
        for part in parts {
            // Only among the latest few: an event mostly touches the pieces its entity's
            // last event did, and the drain removes the repeats this lets through.
            // Searching the whole list read it all for most events, since a sparse entity
            // touches a new pane with almost every one (half the engine's first-level
            // cache misses in `mark`, per cachegrind).
            let recent = &state.touched[state.touched.len().saturating_sub(8)..];
            if !recent.contains(part) {
                state.touched.push(*part);
            }
        }
    }
}

/// Adds an event to one window's (or pane's) accumulators, for the features whose filter
/// takes it (`inputs`); values new to a distinct set also go into `union` when given.
/// `text` is a buffer for a distinct value's text.
fn add_to(
    group: &Group,
    accs: &mut [Acc],
    (event, inputs): (&Event, &[FeatureInput]),
    mut union: Option<&mut PaneUnion>,
    text: &mut String,
) {
    for (slot, &fi) in group.features.iter().enumerate() {
        let value = match inputs[fi] {
            FeatureInput::Skip => continue,
            FeatureInput::Event => None,
            FeatureInput::Field(at) => Some(event.fields.value_at(at)),
            FeatureInput::Missing => Some(&Value::Null),
        };
        let acc = &mut accs[slot];
        if let (Acc::Distinct(_), Some(value)) = (&*acc, value) {
            if value.is_null() {
                continue;
            }
            text.clear();
            value.write_json(text);
            if acc.add_distinct(text) {
                if let Some(union) = union.as_deref_mut() {
                    union.add_value(slot, text);
                }
            }
        } else {
            acc.add(value, event.time);
        }
    }
}

/// The pieces of state an event changed, and those of them it created.
type Touched<'a> = (&'a mut Vec<PartKey>, &'a mut Vec<PartKey>);

/// Adds an event to a group's state, the pieces it changed to `parts` (those it created
/// to `born` too) and the timers the change needs to `timers`.
///
/// A session's timer is set only when the event starts a new session. An event that
/// extends sessions leaves their timers, which are then early: when one fires, the exact
/// timers of the entity's open sessions are set (`fire_timers`). Every open session so
/// always has a timer at or before its exact one, while an event costs no timer (a timer
/// per event, most of them made stale by the next event, used to be the engine's largest
/// cost).
fn add_event(
    view: &CompiledView,
    (gi, group): (usize, &Group),
    state: &mut GroupState,
    event: &Event,
    (clock, delay): (i64, i64),
    inputs: &[FeatureInput],
    ((parts, born), timers, text): (Touched<'_>, &mut Vec<(i64, bool)>, &mut String),
) {
    let t = event.time;
    match (&group.window, state) {
        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
            let size = size.as_millis();
            let start = tumbling::window_start(t, size);
            let key = PartKey::Window { group: gi, start };
            let accs = windows.entry(start).or_insert_with(|| {
                // Served once the watermark passes its end; replaced one window later.
                timers.extend(tumbling::timers(start, size, delay).map(|at| (at, false)));
                born.push(key);
                view.new_accs(group)
            });
            add_to(group, accs, (event, inputs), None, text);
            parts.push(key);
        }
        (Window::Sliding { size, step }, GroupState::Sliding { panes, union }) => {
            let (size, step) = (size.as_millis(), step.as_millis());
            let pane = sliding::pane_start(t, step);
            if pane < sliding::served_start(clock, size, step) {
                return;
            }
            let key = PartKey::Window {
                group: gi,
                start: pane,
            };
            let accs = panes.entry(pane).or_insert_with(|| {
                timers.push((sliding::pane_timer(pane, size), false));
                born.push(key);
                view.new_accs(group)
            });
            add_to(group, accs, (event, inputs), Some(union), text);
            parts.push(key);
        }
        (Window::Session { gap }, GroupState::Session { open, .. }) => {
            let mut session = session::of_event(t, gap.as_millis());
            parts.push(PartKey::Sessions { group: gi });
            let mut touching = open.iter_mut().filter(|(b, _)| b.touches(&session));
            if let (Some((bounds, accs)), None) = (touching.next(), touching.next()) {
                // The usual case: the event extends one session, in place. The extended
                // session touches no other (the others touched neither it nor the event),
                // and keeps its place in the order.
                *bounds = bounds.cover(&session);
                add_to(group, accs, (event, inputs), None, text);
                return;
            }
            let mut accs = view.new_accs(group);
            let mut kept = Vec::with_capacity(open.len());
            let mut extends = false;
            for (bounds, other) in open.drain(..) {
                if bounds.touches(&session) {
                    extends = true;
                    session = session.cover(&bounds);
                    for (a, b) in accs.iter_mut().zip(&other) {
                        a.merge(b);
                    }
                } else {
                    kept.push((bounds, other));
                }
            }
            add_to(group, &mut accs, (event, inputs), None, text);
            if !extends {
                timers.push((session::close_timer(&session, delay), true));
            }
            let at = kept.partition_point(|(b, _)| b.start < session.start);
            kept.insert(at, (session, accs));
            *open = kept;
        }
        _ => unreachable!("group state matches its window"),
    }
}

/// Drops what can no longer be served at `clock` and closes sessions; adds the pieces it
/// changed to `parts`.
fn cleanup(
    view: &CompiledView,
    state: &mut EntityState,
    (clock, delay): (i64, i64),
    parts: &mut Vec<PartKey>,
    timers: &mut Vec<i64>,
) {
    let watermark = clock - delay;
    for (gi, (group, gs)) in view.groups.iter().zip(state.groups.iter_mut()).enumerate() {
        match (&group.window, gs) {
            // Oldest first, one by one: a timer mostly drops one window or pane, or none
            // (it fired for another group), where splitting the map allocated every time.
            (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
                let size = size.as_millis();
                let served_start = tumbling::served_start(watermark, size);
                while let Some(oldest) = windows.first_entry().filter(|w| *w.key() < served_start) {
                    let (start, _) = oldest.remove_entry();
                    parts.push(PartKey::Window { group: gi, start });
                }
            }
            (Window::Sliding { size, step }, GroupState::Sliding { panes, union }) => {
                let (size, step) = (size.as_millis(), step.as_millis());
                let window_start = sliding::served_start(clock, size, step);
                while let Some(oldest) = panes.first_entry().filter(|p| *p.key() < window_start) {
                    let (start, accs) = oldest.remove_entry();
                    union.remove_pane(&accs);
                    parts.push(PartKey::Window { group: gi, start });
                }
            }
            (Window::Session { .. }, GroupState::Session { open, closed }) => {
                let still_open = open.partition_point(|(b, _)| b.end < watermark);
                if still_open > 0 {
                    parts.push(PartKey::Sessions { group: gi });
                }
                for (bounds, accs) in open.drain(..still_open) {
                    if closed.as_ref().is_none_or(|(c, _)| bounds.end >= c.end) {
                        *closed = Some((bounds, accs));
                    }
                }
                // Served until the view's ttl has passed since its end: then Redis, which
                // keeps values that long, no longer serves it either, and the entity's
                // state can leave the engine (kept forever, it grew with every entity
                // ever seen).
                let expiry = closed
                    .as_ref()
                    .map(|(c, _)| session::expiry_timer(c, delay, view.ttl_ms));
                if expiry.is_some_and(|at| at <= clock) {
                    *closed = None;
                    parts.push(PartKey::Sessions { group: gi });
                } else if still_open > 0 {
                    // A session closed: the served one's expiry (the same timer again when
                    // it is still the one served).
                    timers.extend(expiry);
                }
            }
            _ => unreachable!("group state matches its window"),
        }
    }
}

/// Whether `at` is one of the timers a group's state needs (see [`timers_of`]).
fn has_timer_at(window: &Window, state: &GroupState, (delay, ttl): (i64, i64), at: i64) -> bool {
    match (window, state) {
        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
            let size = size.as_millis();
            tumbling::windows_with_timer_at(at, size, delay)
                .iter()
                .any(|start| windows.contains_key(start))
        }
        (Window::Sliding { size, .. }, GroupState::Sliding { panes, .. }) => {
            panes.contains_key(&(at - size.as_millis()))
        }
        (Window::Session { .. }, GroupState::Session { open, closed }) => {
            open.iter()
                .any(|(b, _)| session::close_timer(b, delay) == at)
                || closed
                    .as_ref()
                    .is_some_and(|(c, _)| session::expiry_timer(c, delay, ttl) == at)
        }
        _ => false,
    }
}

/// The timers a group's state needs (used to rebuild them after a restore), each with
/// whether it is an open session's.
fn timers_of(window: &Window, state: &GroupState, (delay, ttl): (i64, i64)) -> Vec<(i64, bool)> {
    match (window, state) {
        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
            let size = size.as_millis();
            windows
                .keys()
                .flat_map(|&s| tumbling::timers(s, size, delay).map(|at| (at, false)))
                .collect()
        }
        (Window::Sliding { size, .. }, GroupState::Sliding { panes, .. }) => panes
            .keys()
            .map(|&p| (sliding::pane_timer(p, size.as_millis()), false))
            .collect(),
        (Window::Session { .. }, GroupState::Session { open, closed }) => open
            .iter()
            .map(|(b, _)| (session::close_timer(b, delay), true))
            .chain(
                closed
                    .iter()
                    .map(|(c, _)| (session::expiry_timer(c, delay, ttl), false)),
            )
            .collect(),
        _ => Vec::new(),
    }
}

fn defaults(view: &CompiledView) -> BTreeMap<String, Value> {
    view.features
        .iter()
        .map(|f| (f.name.clone(), f.default.clone()))
        .collect()
}

/// Puts each feature of `group` into `out` with the value `result(slot)` gives for its
/// slot, or its default when that is null.
fn put_results(
    view: &CompiledView,
    group: &Group,
    mut result: impl FnMut(usize) -> Value,
    out: &mut BTreeMap<String, Value>,
) {
    for (slot, &fi) in group.features.iter().enumerate() {
        let feature = &view.features[fi];
        let value = match result(slot) {
            Value::Null => feature.default.clone(),
            v => v,
        };
        out.insert(feature.name.clone(), value);
    }
}

/// The served values of an entity at `clock` (see the module documentation), and the
/// windows they come from.
fn served(
    view: &CompiledView,
    state: &EntityState,
    clock: i64,
    delay: i64,
) -> (BTreeMap<String, Value>, Vec<ServedWindow>) {
    let watermark = clock - delay;
    let mut out = defaults(view);
    let mut windows_out = Vec::new();
    let mut record = |group: &Group, start: i64, end: i64| {
        windows_out.push(ServedWindow {
            group: group.window.slug(),
            start,
            end,
        })
    };
    for (group, gs) in view.groups.iter().zip(&state.groups) {
        match (&group.window, gs) {
            (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
                let size = size.as_millis();
                let served_start = tumbling::served_start(watermark, size);
                if let Some(accs) = windows.get(&served_start) {
                    put_results(view, group, |slot| accs[slot].result(), &mut out);
                    record(group, served_start, served_start + size);
                }
            }
            (Window::Sliding { size, step }, GroupState::Sliding { panes, union }) => {
                let (size, step) = (size.as_millis(), step.as_millis());
                let end = sliding::served_end(clock, step);
                let window: Vec<&Vec<Acc>> =
                    panes.range(end - size..end).map(|(_, accs)| accs).collect();
                // The union covers every pane held; it answers for the window when all of
                // them are in it (always, once the timers up to the clock have fired).
                let union_is_window = window.len() == panes.len();
                if !window.is_empty() {
                    let merged = |slot: usize| acc::merged_result(window.iter().map(|a| &a[slot]));
                    let result = |slot: usize| match &window[0][slot] {
                        Acc::Distinct(_) if union_is_window => {
                            let n = Value::Long(union.distinct(slot) as i64);
                            debug_assert_eq!(n, merged(slot));
                            n
                        }
                        _ => merged(slot),
                    };
                    put_results(view, group, result, &mut out);
                    record(group, end - size, end);
                }
            }
            (Window::Session { .. }, GroupState::Session { open, closed }) => {
                let latest_closed = open
                    .iter()
                    .filter(|(b, _)| b.end < watermark)
                    .chain(closed.iter())
                    .max_by_key(|(b, _)| b.end);
                if let Some((bounds, accs)) = latest_closed {
                    put_results(view, group, |slot| accs[slot].result(), &mut out);
                    record(group, bounds.start, bounds.end);
                }
            }
            _ => unreachable!("group state matches its window"),
        }
    }
    (out, windows_out)
}

#[cfg(test)]
mod tests;
