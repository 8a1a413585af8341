//! The aggregation engine: windowed features over one input partition, in event time.
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
//!   closes when the watermark is past its end).
//!
//! The value is a pure function of the entity's state and `C`. It changes only when an
//! event of the entity arrives or when `C` crosses a point registered as a timer (a window
//! closing or expiring, a pane leaving a sliding window, a session closing). Each change
//! marks the (view, entity) dirty with the version `offset + 1` of the record that caused
//! it; [`PartitionEngine::drain_updates`] then emits the current values once per dirty
//! pair. Because nothing changes between the last mark and the drain, the values under a
//! version are the same whenever the drain happens.

pub mod acc;

use acc::Acc;
use freshet_core::definitions::{Aggregation, Definitions};
use freshet_core::filter::Filter;
use freshet_core::store_layout::FeatureUpdate;
use freshet_core::window::{tumbling_window, WindowBounds};
use freshet_core::{Value, Window};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A feature view prepared for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledView {
    pub name: String,
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
    pub entity: String,
    pub time: i64,
    pub fields: HashMap<String, Value>,
}

/// The state of one window group of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupState {
    /// Windows by start; only the served one and still-open ones are kept.
    Tumbling { windows: BTreeMap<i64, Vec<Acc>> },
    /// Step-sized panes by start, within the current sliding window.
    Sliding { panes: BTreeMap<i64, Vec<Acc>> },
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
            GroupState::Sliding { panes } => panes.is_empty(),
            GroupState::Session { open, closed } => open.is_empty() && closed.is_none(),
        }
    }
}

/// Everything kept about one entity in one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub groups: Vec<GroupState>,
}

impl EntityState {
    fn new(view: &CompiledView) -> Self {
        Self {
            groups: view
                .groups
                .iter()
                .map(|g| GroupState::new(&g.window))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.iter().all(GroupState::is_empty)
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
    /// Entity states per view index (the maps of views on other topics stay empty).
    /// Keyed by entity alone, so a record's entity is looked up without a copy.
    entities: Vec<HashMap<String, EntityState>>,
    timers: BTreeSet<(i64, usize, String)>,
    /// Per view: entities changed since the last drain, with the version and event time.
    dirty: Vec<HashMap<String, (u64, i64)>>,
    /// Per view: entities whose state changed since the last checkpoint.
    touched: Vec<HashSet<String>>,
}

fn floor_to(t: i64, size: i64) -> i64 {
    t - t.rem_euclid(size)
}

impl PartitionEngine {
    /// An engine for a partition of `topic`, starting at `next_offset` with `clock` and the
    /// given entity states (as restored from a checkpoint).
    pub fn new(
        views: Arc<Vec<CompiledView>>,
        topic: &str,
        next_offset: i64,
        clock: Option<i64>,
        entities: HashMap<StateKey, EntityState>,
    ) -> Self {
        let view_ids: Vec<usize> = (0..views.len())
            .filter(|&i| views[i].topic == topic)
            .collect();
        let delay = view_ids.first().map_or(0, |&i| views[i].watermark_delay_ms);
        let mut by_view: Vec<HashMap<String, EntityState>> =
            (0..views.len()).map(|_| HashMap::default()).collect();
        for ((vi, entity), state) in entities {
            if let Some(map) = by_view.get_mut(vi) {
                map.insert(entity, state);
            }
        }
        let n = views.len();
        let mut engine = Self {
            views,
            view_ids,
            delay,
            clock,
            next_offset,
            entities: by_view,
            timers: BTreeSet::new(),
            dirty: (0..n).map(|_| HashMap::default()).collect(),
            touched: (0..n).map(|_| HashSet::default()).collect(),
        };
        engine.rebuild_timers();
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

    pub fn entity_count(&self) -> usize {
        self.entities.iter().map(HashMap::len).sum()
    }

    /// Timers are not persisted: they follow from the state and the clock.
    fn rebuild_timers(&mut self) {
        let clock = self.clock.unwrap_or(i64::MIN);
        let mut timers = BTreeSet::new();
        for (vi, entities) in self.entities.iter().enumerate() {
            let view = &self.views[vi];
            for (entity, state) in entities {
                for (group, gs) in view.groups.iter().zip(&state.groups) {
                    for at in timers_of(&group.window, gs, self.delay) {
                        if at > clock {
                            timers.insert((at, vi, entity.clone()));
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
        let entity = event.entity.as_str();
        for &vi in &self.view_ids {
            let view = &self.views[vi];
            let entities = &mut self.entities[vi];
            if !entities.contains_key(entity) {
                entities.insert(entity.to_string(), EntityState::new(view));
            }
            let state = entities.get_mut(entity).expect("inserted above");
            for (gi, group) in view.groups.iter().enumerate() {
                let new_timers =
                    add_event(view, group, &mut state.groups[gi], event, clock, self.delay);
                for at in new_timers {
                    self.timers.insert((at, vi, entity.to_string()));
                }
            }
            mark(
                &mut self.dirty[vi],
                &mut self.touched[vi],
                entity,
                version,
                clock,
            );
        }
        Outcome::Applied
    }

    fn fire_timers(&mut self, version: u64) {
        let clock = self.clock.expect("timers fire after the clock moved");
        while let Some(first) = self.timers.first() {
            if first.0 > clock {
                break;
            }
            let (at, vi, entity) = self.timers.pop_first().expect("first exists");
            let Some(state) = self.entities[vi].get_mut(&entity) else {
                continue;
            };
            let view = &self.views[vi];
            // A timer left by state that has since changed (a session merged away, a
            // window already dropped) changes nothing. Acting on it would give a version
            // that a run restored from a checkpoint, which rebuilds only the timers its
            // state needs, would not give.
            let live = view
                .groups
                .iter()
                .zip(&state.groups)
                .any(|(g, gs)| timers_of(&g.window, gs, self.delay).contains(&at));
            if !live {
                continue;
            }
            cleanup(view, state, clock, self.delay);
            if state.is_empty() {
                self.entities[vi].remove(&entity);
            }
            mark(
                &mut self.dirty[vi],
                &mut self.touched[vi],
                &entity,
                version,
                clock,
            );
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
            let mut dirty: Vec<(String, (u64, i64))> = self.dirty[vi].drain().collect();
            // In entity order, so a drain's output does not depend on hashing.
            dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let view = &self.views[vi];
            for (entity, (version, event_time)) in dirty {
                let (values, windows) = match self.entities[vi].get(&entity) {
                    Some(state) => served(view, state, clock, self.delay),
                    None => (defaults(view), Vec::new()),
                };
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

    /// The states changed since the last drain (`None`: removed), for the checkpoint.
    pub fn drain_touched(&mut self) -> Vec<(StateKey, Option<EntityState>)> {
        let mut out = Vec::new();
        for vi in 0..self.views.len() {
            let mut touched: Vec<String> = self.touched[vi].drain().collect();
            touched.sort_unstable();
            for entity in touched {
                let state = self.entities[vi].get(&entity).cloned();
                out.push(((vi, entity), state));
            }
        }
        out
    }

    /// The served values of one entity now (for tests and diagnostics).
    pub fn values(&self, view: usize, entity: &str) -> BTreeMap<String, Value> {
        let v = &self.views[view];
        match self.entities[view].get(entity) {
            Some(state) => served(v, state, self.clock.unwrap_or(i64::MIN), self.delay).0,
            None => defaults(v),
        }
    }
}

/// Records a change of `entity`'s values (`dirty`) and state (`touched`).
fn mark(
    dirty: &mut HashMap<String, (u64, i64)>,
    touched: &mut HashSet<String>,
    entity: &str,
    version: u64,
    clock: i64,
) {
    match dirty.get_mut(entity) {
        Some(mark) => *mark = (version, clock),
        None => {
            dirty.insert(entity.to_string(), (version, clock));
        }
    }
    if !touched.contains(entity) {
        touched.insert(entity.to_string());
    }
}

fn matches(filter: &Option<Filter>, event: &Event) -> bool {
    filter
        .as_ref()
        .is_none_or(|f| f.matches(|k| event.fields.get(k)))
}

fn add_to(view: &CompiledView, group: &Group, accs: &mut [Acc], event: &Event) {
    for (slot, &fi) in group.features.iter().enumerate() {
        let feature = &view.features[fi];
        if matches(&feature.filter, event) {
            let value = feature
                .field
                .as_ref()
                .map(|f| event.fields.get(f).unwrap_or(&Value::Null));
            accs[slot].add(value, event.time);
        }
    }
}

/// Adds an event to a group's state; returns the timers the change needs.
fn add_event(
    view: &CompiledView,
    group: &Group,
    state: &mut GroupState,
    event: &Event,
    clock: i64,
    delay: i64,
) -> Vec<i64> {
    let t = event.time;
    match (&group.window, state) {
        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
            let size = size.as_millis();
            let start = tumbling_window(t, size).start;
            let mut timers = Vec::new();
            let accs = windows.entry(start).or_insert_with(|| {
                // Served once the watermark passes its end; replaced one window later.
                timers.extend([start + size + delay, start + 2 * size + delay]);
                view.new_accs(group)
            });
            add_to(view, group, accs, event);
            timers
        }
        (Window::Sliding { size, step }, GroupState::Sliding { panes }) => {
            let (size, step) = (size.as_millis(), step.as_millis());
            let window_end = floor_to(clock, step) + step;
            let pane = floor_to(t, step);
            if pane < window_end - size {
                return Vec::new();
            }
            let mut timers = Vec::new();
            let accs = panes.entry(pane).or_insert_with(|| {
                timers.push(pane + size);
                view.new_accs(group)
            });
            add_to(view, group, accs, event);
            timers
        }
        (Window::Session { gap }, GroupState::Session { open, .. }) => {
            let mut session = WindowBounds {
                start: t,
                end: t.saturating_add(gap.as_millis()),
            };
            let mut accs = view.new_accs(group);
            let mut kept = Vec::with_capacity(open.len());
            for (bounds, other) in open.drain(..) {
                if bounds.touches(&session) {
                    session = session.cover(&bounds);
                    for (a, b) in accs.iter_mut().zip(&other) {
                        a.merge(b);
                    }
                } else {
                    kept.push((bounds, other));
                }
            }
            add_to(view, group, &mut accs, event);
            let at = kept.partition_point(|(b, _)| b.start < session.start);
            kept.insert(at, (session, accs));
            *open = kept;
            vec![session.end + delay + 1]
        }
        _ => unreachable!("group state matches its window"),
    }
}

/// Drops what can no longer be served at `clock` and closes sessions.
fn cleanup(view: &CompiledView, state: &mut EntityState, clock: i64, delay: i64) {
    let watermark = clock - delay;
    for (group, gs) in view.groups.iter().zip(state.groups.iter_mut()) {
        match (&group.window, gs) {
            (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
                let size = size.as_millis();
                let served_start = floor_to(watermark, size) - size;
                windows.retain(|start, _| *start >= served_start);
            }
            (Window::Sliding { size, step }, GroupState::Sliding { panes }) => {
                let (size, step) = (size.as_millis(), step.as_millis());
                let window_start = floor_to(clock, step) + step - size;
                panes.retain(|pane, _| *pane >= window_start);
            }
            (Window::Session { .. }, GroupState::Session { open, closed }) => {
                let still_open = open.partition_point(|(b, _)| b.end < watermark);
                for (bounds, accs) in open.drain(..still_open) {
                    if closed.as_ref().is_none_or(|(c, _)| bounds.end >= c.end) {
                        *closed = Some((bounds, accs));
                    }
                }
            }
            _ => unreachable!("group state matches its window"),
        }
    }
}

/// The timers a group's state needs (used to rebuild them after a restore).
fn timers_of(window: &Window, state: &GroupState, delay: i64) -> Vec<i64> {
    match (window, state) {
        (Window::Tumbling { size }, GroupState::Tumbling { windows }) => {
            let size = size.as_millis();
            windows
                .keys()
                .flat_map(|s| [s + size + delay, s + 2 * size + delay])
                .collect()
        }
        (Window::Sliding { size, .. }, GroupState::Sliding { panes }) => {
            panes.keys().map(|p| p + size.as_millis()).collect()
        }
        (Window::Session { .. }, GroupState::Session { open, .. }) => {
            open.iter().map(|(b, _)| b.end + delay + 1).collect()
        }
        _ => Vec::new(),
    }
}

fn defaults(view: &CompiledView) -> BTreeMap<String, Value> {
    view.features
        .iter()
        .map(|f| (f.name.clone(), f.default.clone()))
        .collect()
}

fn put_results(
    view: &CompiledView,
    group: &Group,
    accs: &[Acc],
    out: &mut BTreeMap<String, Value>,
) {
    for (slot, &fi) in group.features.iter().enumerate() {
        let feature = &view.features[fi];
        let value = match accs[slot].result() {
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
                let served_start = floor_to(watermark, size) - size;
                if let Some(accs) = windows.get(&served_start) {
                    put_results(view, group, accs, &mut out);
                    record(group, served_start, served_start + size);
                }
            }
            (Window::Sliding { size, step }, GroupState::Sliding { panes }) => {
                let (size, step) = (size.as_millis(), step.as_millis());
                let end = floor_to(clock, step) + step;
                let window: Vec<&Vec<Acc>> =
                    panes.range(end - size..end).map(|(_, accs)| accs).collect();
                if !window.is_empty() {
                    for (slot, &fi) in group.features.iter().enumerate() {
                        let feature = &view.features[fi];
                        let value = match acc::merged_result(window.iter().map(|a| &a[slot])) {
                            Value::Null => feature.default.clone(),
                            v => v,
                        };
                        out.insert(feature.name.clone(), value);
                    }
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
                    put_results(view, group, accs, &mut out);
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
