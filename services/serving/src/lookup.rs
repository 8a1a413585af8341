//! What a lookup means: which views and features a request selects, and how stored hashes
//! become served values. Pure: no I/O, the time is a parameter. An entity's views live in
//! one hash (see `freshet_core::store_layout`), so a lookup is one `HMGET` per entity (per
//! entity type, when the selected views are of different ones), of only the fields it
//! needs (each selected view's version, event time and selected features): Redis sends no
//! field names and nothing unasked for.
//!
//! Served-value rules, per view and entity:
//! - `found`: the hash exists and its event time is within the view's TTL; each feature
//!   present in the hash is served from the store (`source: "store"`), with its age (now
//!   minus the hash's event time, never negative); a feature absent from the hash serves
//!   its default.
//! - `missing`: no hash; every feature serves its default.
//! - `expired`: the hash's event time is older than the view's TTL (the key's own expiry
//!   may not have run yet, or a backfill wrote old values); defaults.
//! - `unreadable`: the hash is corrupt, or the key is not a hash (Redis answers
//!   `WRONGTYPE`); logged, and defaults, so one bad key never fails a whole batch.
//! - `timeout`: the request's latency budget ran out before the values arrived; defaults.
//!
//! A value's `source` is `store` when it was read from Redis for this request, `cache`
//! when the near cache answered (see `crate::near_cache` for how fresh that is), and
//! `default` when the feature's default is served.

use crate::error::ApiError;
use crate::metrics::{ServingMetrics, ViewMetrics};
use freshet_core::store_layout::{self, decode_version, entity_key};
use freshet_core::{Definitions, Value};
use freshet_store::RawFields;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// The views and features the service serves, with their metric handles, built once from
/// the definitions.
pub struct Catalog {
    views: Vec<CatalogView>,
    /// Per entity type, every field of its hash the views define: per view (in
    /// definition order) version, event time, then features. The near cache reads these.
    entity_fields: Vec<(Arc<str>, Vec<Arc<str>>)>,
}

struct CatalogView {
    name: Arc<str>,
    /// The view's entity type: its values are in the hashes of that type.
    entity_type: Arc<str>,
    /// The hash fields of the view's version and event time.
    version_field: Arc<str>,
    event_time_field: Arc<str>,
    /// The hash field of each feature, in the order of `features`.
    feature_fields: Vec<Arc<str>>,
    /// Where the view's version field is in its entity type's `entity_fields` (event
    /// time follows, then the features).
    full_offset: usize,
    /// The source's entity key field: the entity's name in requests that name it
    /// (Feast's join key).
    join_key: Arc<str>,
    ttl_ms: i64,
    features: Vec<(Arc<str>, Value)>,
    /// Per feature: whether another view has a feature of the same name.
    shared: Vec<bool>,
    metrics: ViewMetrics,
}

impl Catalog {
    pub fn new(definitions: &Definitions, metrics: &ServingMetrics) -> Self {
        let shared = |view: &freshet_core::FeatureView| -> Vec<bool> {
            view.features
                .iter()
                .map(|f| {
                    definitions
                        .views
                        .iter()
                        .any(|other| other.name != view.name && other.feature(&f.name).is_some())
                })
                .collect()
        };
        let mut entity_fields: Vec<(Arc<str>, Vec<Arc<str>>)> = Vec::new();
        let mut full_offset = |v: &freshet_core::FeatureView| -> usize {
            let at = match entity_fields.iter().position(|(e, _)| **e == *v.entity) {
                Some(at) => at,
                None => {
                    entity_fields.push((v.entity.as_str().into(), Vec::new()));
                    entity_fields.len() - 1
                }
            };
            let fields = &mut entity_fields[at].1;
            let offset = fields.len();
            fields.push(store_layout::field(&v.name, store_layout::VERSION).into());
            fields.push(store_layout::field(&v.name, store_layout::EVENT_TIME).into());
            fields.extend(
                v.features
                    .iter()
                    .map(|f| store_layout::field(&v.name, &f.name).into()),
            );
            offset
        };
        let views = definitions
            .views
            .iter()
            .map(|v| CatalogView {
                full_offset: full_offset(v),
                shared: shared(v),
                name: v.name.as_str().into(),
                entity_type: v.entity.as_str().into(),
                version_field: store_layout::field(&v.name, store_layout::VERSION).into(),
                event_time_field: store_layout::field(&v.name, store_layout::EVENT_TIME).into(),
                feature_fields: v
                    .features
                    .iter()
                    .map(|f| store_layout::field(&v.name, &f.name).into())
                    .collect(),
                join_key: definitions.source_of(v).entity_key_field.as_str().into(),
                ttl_ms: v.ttl.0,
                features: v
                    .features
                    .iter()
                    .map(|f| (f.name.as_str().into(), f.default.clone()))
                    .collect(),
                metrics: metrics.view(&v.name),
            })
            .collect();
        Self {
            views,
            entity_fields,
        }
    }

    fn view_names(&self) -> String {
        self.views
            .iter()
            .map(|v| &*v.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves a request's selection. No views means every view; no features means every
    /// feature of the selected views. Views left with none of the requested features are
    /// not read at all.
    pub fn select<'a>(
        &self,
        views: Option<impl IntoIterator<Item = &'a str>>,
        features: Option<impl IntoIterator<Item = &'a str>>,
    ) -> Result<Selection<'_>, ApiError> {
        let chosen: Vec<&CatalogView> = match views {
            None => self.views.iter().collect(),
            Some(names) => {
                let mut chosen = Vec::new();
                for name in names {
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(ApiError::EmptyName("view"));
                    }
                    let view = self
                        .views
                        .iter()
                        .find(|v| &*v.name == name)
                        .ok_or_else(|| ApiError::UnknownView {
                            name: name.to_string(),
                            known: self.view_names(),
                        })?;
                    if !chosen.iter().any(|c: &&CatalogView| c.name == view.name) {
                        chosen.push(view);
                    }
                }
                if chosen.is_empty() {
                    return Err(ApiError::EmptyName("view"));
                }
                chosen
            }
        };
        let mut wanted: Option<Vec<&str>> = None;
        if let Some(names) = features {
            let mut list = Vec::new();
            for name in names {
                let name = name.trim();
                if name.is_empty() {
                    return Err(ApiError::EmptyName("feature"));
                }
                if !chosen
                    .iter()
                    .any(|v| v.features.iter().any(|(f, _)| &**f == name))
                {
                    let known: Vec<&str> = chosen
                        .iter()
                        .flat_map(|v| v.features.iter().map(|(f, _)| &**f))
                        .collect();
                    return Err(ApiError::UnknownFeature {
                        name: name.to_string(),
                        views: chosen
                            .iter()
                            .map(|v| &*v.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                        known: known.join(", "),
                    });
                }
                list.push(name);
            }
            if list.is_empty() {
                return Err(ApiError::EmptyName("feature"));
            }
            wanted = Some(list);
        }
        Ok(Selection::of(self, chosen, |name| {
            wanted.as_ref().is_none_or(|w| w.contains(&name))
        }))
    }

    /// Resolves exact (view, feature) pairs, as Feast's `view:feature` references name
    /// them: views in the order they are first named, each view's features in the
    /// order asked. A pair named twice is refused.
    pub fn select_pairs<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Selection<'_>, RefError> {
        let mut chosen: Vec<(&CatalogView, Vec<usize>)> = Vec::new();
        for (view_name, feature) in pairs {
            let Some(view) = self.views.iter().find(|v| &*v.name == view_name) else {
                return Err(RefError::UnknownView {
                    name: view_name.to_string(),
                    known: self.view_names(),
                });
            };
            let Some(index) = view.features.iter().position(|(f, _)| &**f == feature) else {
                return Err(RefError::UnknownFeature {
                    view: view_name.to_string(),
                    name: feature.to_string(),
                    known: view
                        .features
                        .iter()
                        .map(|(f, _)| &**f)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            match chosen.iter_mut().find(|(v, _)| v.name == view.name) {
                Some((_, features)) if features.contains(&index) => {
                    return Err(RefError::Repeated {
                        view: view_name.to_string(),
                        feature: feature.to_string(),
                    })
                }
                Some((_, features)) => features.push(index),
                None => chosen.push((view, vec![index])),
            }
        }
        Ok(Selection::new(self, chosen))
    }
}

/// Why [`Catalog::select_pairs`] refused a list of `view:feature` references.
#[derive(Debug)]
pub enum RefError {
    UnknownView {
        name: String,
        known: String,
    },
    UnknownFeature {
        view: String,
        name: String,
        known: String,
    },
    /// The same pair named twice.
    Repeated {
        view: String,
        feature: String,
    },
}

impl<'c> Selection<'c> {
    /// The chosen views with the features `keep` keeps, in the definition's order;
    /// views left with none are not read at all.
    fn of(catalog: &'c Catalog, chosen: Vec<&'c CatalogView>, keep: impl Fn(&str) -> bool) -> Self {
        Self::new(
            catalog,
            chosen
                .into_iter()
                .filter_map(|view| {
                    let features: Vec<usize> = (0..view.features.len())
                        .filter(|&i| keep(&view.features[i].0))
                        .collect();
                    (!features.is_empty()).then_some((view, features))
                })
                .collect(),
        )
    }

    /// Views (with the indices of their selected features) grouped into one read per
    /// entity type, in order of first appearance.
    fn new(catalog: &'c Catalog, chosen: Vec<(&'c CatalogView, Vec<usize>)>) -> Self {
        let mut groups: Vec<ReadGroup> = Vec::new();
        let mut positions: Vec<Vec<usize>> = Vec::new();
        let mut views = Vec::with_capacity(chosen.len());
        for (view, features) in chosen {
            let group = match groups
                .iter()
                .position(|g| g.entity_type == &*view.entity_type)
            {
                Some(g) => g,
                None => {
                    let all_fields = catalog
                        .entity_fields
                        .iter()
                        .find(|(e, _)| *e == view.entity_type)
                        .map(|(_, fields)| fields.iter().map(|f| &**f).collect())
                        .unwrap_or_default();
                    groups.push(ReadGroup {
                        entity_type: &view.entity_type,
                        fields: Vec::new(),
                        all_fields,
                        positions: Arc::new([]),
                    });
                    positions.push(Vec::new());
                    groups.len() - 1
                }
            };
            let fields = &mut groups[group].fields;
            let offset = fields.len();
            fields.push(&view.version_field);
            fields.push(&view.event_time_field);
            fields.extend(features.iter().map(|&i| &*view.feature_fields[i]));
            let at = &mut positions[group];
            at.extend([view.full_offset, view.full_offset + 1]);
            at.extend(features.iter().map(|&i| view.full_offset + 2 + i));
            views.push(SelectedView {
                view,
                features,
                group,
                offset,
            });
        }
        for (group, positions) in groups.iter_mut().zip(positions) {
            group.positions = positions.into();
        }
        Selection { views, groups }
    }
}

/// The views and features one request reads.
pub struct Selection<'c> {
    views: Vec<SelectedView<'c>>,
    /// One read per entity and group.
    groups: Vec<ReadGroup<'c>>,
}

/// The selected views of one entity type: one `HMGET` of the entity's hash.
struct ReadGroup<'c> {
    entity_type: &'c str,
    /// The fields to read: per view, its version, event time, then its selected features.
    fields: Vec<&'c str>,
    /// Every field of the entity type's hash (what the near cache reads and keeps).
    all_fields: Vec<&'c str>,
    /// Where each of `fields` is in `all_fields`.
    positions: Arc<[usize]>,
}

struct SelectedView<'c> {
    view: &'c CatalogView,
    /// Indices into the view's features.
    features: Vec<usize>,
    /// Which read of an entity holds this view ([`Selection::groups`]).
    group: usize,
    /// Where the view's fields start in that read: version, event time, then the
    /// selected features.
    offset: usize,
}

impl Selection<'_> {
    pub fn view_names(&self) -> Vec<&str> {
        self.views.iter().map(|v| &*v.view.name).collect()
    }

    /// Each selected view's join key (its source's entity key field), in view order.
    pub fn join_keys(&self) -> impl Iterator<Item = &str> {
        self.views.iter().map(|v| &*v.view.join_key)
    }

    /// Selected feature names that more than one selected view has (once each).
    pub fn shared_feature_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (v, selected) in self.views.iter().enumerate() {
            for &i in &selected.features {
                let name = &*selected.view.features[i].0;
                if !selected.view.shared[i] || names.contains(&name) {
                    continue;
                }
                let elsewhere = self.views[v + 1..].iter().any(|other| {
                    other
                        .features
                        .iter()
                        .any(|&j| &*other.view.features[j].0 == name)
                });
                if elsewhere {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Each selected view's name and selected feature names, in answer order.
    pub fn features(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.views.iter().map(|v| {
            (
                &*v.view.name,
                v.features.iter().map(|&i| &*v.view.features[i].0),
            )
        })
    }

    /// What to read from Redis, entity-major: read `e * groups + g` is group `g` (the
    /// views of one entity type) of entity `e`. An entity's reads are adjacent, so its
    /// answer can be built as soon as they have arrived.
    pub fn reads(&self, entities: &[String]) -> Vec<(String, &[&str])> {
        let mut reads = Vec::with_capacity(self.groups.len() * entities.len());
        for entity in entities {
            for group in &self.groups {
                reads.push((
                    entity_key(group.entity_type, entity),
                    group.fields.as_slice(),
                ));
            }
        }
        reads
    }

    /// The key of group `g`'s hash for `entity`.
    pub fn key(&self, g: usize, entity: &str) -> String {
        entity_key(self.groups[g].entity_type, entity)
    }

    /// Every field of group `g`'s hash (what the near cache reads).
    pub fn all_fields(&self, g: usize) -> &[&str] {
        &self.groups[g].all_fields
    }

    /// Group `g`'s selected fields out of a read of [`Selection::all_fields`] (a view of
    /// it: nothing is copied), marked as answered by the cache or not.
    pub fn project(&self, g: usize, all: &Arc<RawFields>, cached: bool) -> RawFields {
        RawFields::project(all.clone(), self.groups[g].positions.clone(), cached)
    }

    /// How many reads each entity takes: one per entity type among the selected views
    /// (one for the shipped definitions, whatever the views).
    pub fn reads_per_entity(&self) -> usize {
        self.groups.len()
    }

    /// How many views are selected.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    /// A new tally of this selection's per-view metrics.
    pub fn tally(&self) -> Tally {
        Tally {
            views: vec![ViewTally::default(); self.views.len()],
        }
    }

    /// One entity's served values from its reads (one per group, in order, as
    /// [`Selection::reads`] lists them), counted in `tally`.
    pub fn entity(
        &self,
        entity_id: String,
        read: &[RawFields],
        now_ms: i64,
        tally: &mut Tally,
    ) -> EntityFeatures {
        let started = Instant::now();
        let mut views = Vec::with_capacity(self.views.len());
        for (selected, counts) in self.views.iter().zip(&mut tally.views) {
            let values = selected.serve(&read[selected.group], now_ms, &entity_id);
            counts.count(selected, values.status, values.age_ms);
            views.push((selected.view.name.clone(), values));
        }
        tally.spent(started);
        EntityFeatures {
            entity_id,
            views: NamedMap(views),
        }
    }

    /// The JSON fragments [`Selection::write_entity`] needs.
    pub fn answer_json(&self) -> AnswerJson {
        AnswerJson {
            views: self.views.iter().map(SelectedView::json).collect(),
        }
    }

    /// [`Selection::entity`]'s answer, written as JSON to `out`: the same bytes serde
    /// writes for it, without building it first.
    pub fn write_entity(
        &self,
        json: &AnswerJson,
        entity_id: &str,
        read: &[RawFields],
        now_ms: i64,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) {
        let started = Instant::now();
        out.extend_from_slice(b"{\"entity_id\":");
        serde_json::to_writer(&mut *out, entity_id).expect("an id to memory");
        out.extend_from_slice(b",\"views\":{");
        let views = self.views.iter().zip(&json.views);
        for (v, (selected, view_json)) in views.enumerate() {
            if v > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&view_json.name);
            let read = &read[selected.group];
            let (status, age_ms) = selected.write_json(read, now_ms, entity_id, view_json, out);
            tally.views[v].count(selected, status, age_ms);
        }
        out.extend_from_slice(b"}}");
        tally.spent(started);
    }

    /// Records a finished lookup's tally in the per-view metrics, with how long the Redis
    /// round trip took (for a large read, this overlaps the building of the answer).
    pub fn record(&self, tally: &Tally, redis_seconds: f64) {
        for (selected, counts) in self.views.iter().zip(&tally.views) {
            let m = &selected.view.metrics;
            for (counter, status) in [
                (&m.found, ViewStatus::Found),
                (&m.missing, ViewStatus::Missing),
                (&m.expired, ViewStatus::Expired),
                (&m.unreadable, ViewStatus::Unreadable),
                (&m.timeout, ViewStatus::Timeout),
            ] {
                // Each an atomic add: only the statuses seen (one, for a single lookup).
                let count = counts.statuses[status as usize];
                if count > 0 {
                    counter.inc_by(count);
                }
            }
            m.redis_seconds.observe(redis_seconds);
            m.compute_seconds.observe(counts.compute.as_secs_f64());
        }
    }
}

/// What one lookup counted per selected view, recorded by [`Selection::record`].
pub struct Tally {
    views: Vec<ViewTally>,
}

#[derive(Clone, Default)]
struct ViewTally {
    /// Entities per [`ViewStatus`].
    statuses: [u64; 5],
    /// Time spent building this view's values.
    compute: Duration,
}

impl Tally {
    /// Adds the time since `started`, spent building one entity's answer, to its views'
    /// compute time in equal shares (one clock read per entity, not per view).
    fn spent(&mut self, started: Instant) {
        let share = started.elapsed() / self.views.len().max(1) as u32;
        for view in &mut self.views {
            view.compute += share;
        }
    }
}

impl ViewTally {
    /// Counts one entity's view; a served age goes straight to the age histogram.
    fn count(&mut self, selected: &SelectedView, status: ViewStatus, age_ms: Option<i64>) {
        self.statuses[status as usize] += 1;
        if let Some(age_ms) = age_ms {
            selected
                .view
                .metrics
                .age_seconds
                .observe(age_ms as f64 / 1_000.0);
        }
    }
}

impl SelectedView<'_> {
    /// What the stored version and event time say, before any feature value is read.
    fn classify(&self, read: &RawFields, now_ms: i64) -> Stored {
        if read.is_timed_out() {
            return Stored::TimedOut;
        }
        if let Some(error) = read.error() {
            return Stored::Unreadable(format!("Redis answered {error}"));
        }
        if read.none_in(self.offset..self.offset + 2 + self.features.len()) {
            return Stored::Missing;
        }
        let version = read.get(self.offset).and_then(decode_version);
        let event_time = read
            .get(self.offset + 1)
            .and_then(|t| t.parse::<i64>().ok());
        let (Some(version), Some(event_time_ms)) = (version, event_time) else {
            return Stored::Unreadable("the version or event time is missing or malformed".into());
        };
        if now_ms - event_time_ms > self.view.ttl_ms {
            return Stored::Expired;
        }
        Stored::Fresh {
            version,
            event_time_ms,
            age_ms: (now_ms - event_time_ms).max(0),
        }
    }

    /// One entity's values of this view, straight from the fields read (see `fields`).
    fn serve(&self, read: &RawFields, now_ms: i64, entity: &str) -> ViewValues {
        let view = self.view;
        let (version, event_time_ms, age_ms) = match self.classify(read, now_ms) {
            Stored::Missing => return self.defaults(ViewStatus::Missing),
            Stored::Expired => return self.defaults(ViewStatus::Expired),
            Stored::TimedOut => return self.defaults(ViewStatus::Timeout),
            Stored::Unreadable(problem) => return self.unreadable(entity, &problem),
            Stored::Fresh {
                version,
                event_time_ms,
                age_ms,
            } => (version, event_time_ms, age_ms),
        };
        let mut features = Vec::with_capacity(self.features.len());
        for (j, &i) in self.features.iter().enumerate() {
            let (name, default) = &view.features[i];
            let value = match read.get(self.offset + 2 + j) {
                Some(text) => match Value::from_json_str(text) {
                    Some(value) => FeatureValue {
                        value,
                        source: if read.is_cached() {
                            ValueSource::Cache
                        } else {
                            ValueSource::Store
                        },
                        age_ms: Some(age_ms),
                    },
                    None => return self.unreadable(entity, &format!("`{name}` holds {text:?}")),
                },
                None => FeatureValue::default_of(default),
            };
            features.push((name.clone(), value));
        }
        ViewValues {
            status: ViewStatus::Found,
            event_time_ms: Some(event_time_ms),
            version: Some(version),
            age_ms: Some(age_ms),
            features: NamedMap(features),
        }
    }

    /// [`SelectedView::serve`]'s answer written straight as JSON (the bytes serde would
    /// write for it), from fragments made once per batch. Returns the status and age.
    fn write_json(
        &self,
        read: &RawFields,
        now_ms: i64,
        entity: &str,
        json: &ViewJson,
        out: &mut Vec<u8>,
    ) -> (ViewStatus, Option<i64>) {
        let (version, event_time_ms, age_ms) = match self.classify(read, now_ms) {
            Stored::Missing => return json.defaults(ViewStatus::Missing, out),
            Stored::Expired => return json.defaults(ViewStatus::Expired, out),
            Stored::TimedOut => return json.defaults(ViewStatus::Timeout, out),
            Stored::Unreadable(problem) => {
                self.log_unreadable(entity, &problem);
                return json.defaults(ViewStatus::Unreadable, out);
            }
            Stored::Fresh {
                version,
                event_time_ms,
                age_ms,
            } => (version, event_time_ms, age_ms),
        };
        let start = out.len();
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"status\":\"found\",\"event_time_ms\":");
        out.extend_from_slice(number.format(event_time_ms).as_bytes());
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(number.format(version).as_bytes());
        out.extend_from_slice(b",\"age_ms\":");
        let mut age_text = itoa::Buffer::new();
        let age = age_text.format(age_ms).as_bytes();
        let source: &[u8] = if read.is_cached() {
            b",\"source\":\"cache\",\"age_ms\":"
        } else {
            b",\"source\":\"store\",\"age_ms\":"
        };
        out.extend_from_slice(age);
        out.extend_from_slice(b",\"features\":{");
        for (j, feature) in json.features.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            match read.get(self.offset + 2 + j) {
                Some(text) => match Value::from_json_str(text) {
                    Some(value) => {
                        out.extend_from_slice(&feature.key);
                        serde_json::to_writer(&mut *out, &value).expect("a value to memory");
                        out.extend_from_slice(source);
                        out.extend_from_slice(age);
                        out.push(b'}');
                    }
                    None => {
                        out.truncate(start);
                        let name = &self.view.features[self.features[j]].0;
                        self.log_unreadable(entity, &format!("`{name}` holds {text:?}"));
                        return json.defaults(ViewStatus::Unreadable, out);
                    }
                },
                None => out.extend_from_slice(&feature.default),
            }
        }
        out.extend_from_slice(b"}}");
        (ViewStatus::Found, Some(age_ms))
    }

    /// The JSON fragments [`SelectedView::write_json`] copies.
    fn json(&self) -> ViewJson {
        let features = self
            .features
            .iter()
            .map(|&i| {
                let (name, default) = &self.view.features[i];
                let mut key = to_json(&**name);
                key.extend_from_slice(b":{\"value\":");
                let mut entry = to_json(&**name);
                entry.push(b':');
                entry.extend(to_json(&FeatureValue::default_of(default)));
                FeatureJson {
                    key,
                    default: entry,
                }
            })
            .collect();
        let mut name = to_json(&*self.view.name);
        name.push(b':');
        ViewJson {
            name,
            features,
            defaults: [
                ViewStatus::Found,
                ViewStatus::Missing,
                ViewStatus::Expired,
                ViewStatus::Unreadable,
                ViewStatus::Timeout,
            ]
            .map(|status| to_json(&self.defaults(status))),
        }
    }

    fn defaults(&self, status: ViewStatus) -> ViewValues {
        ViewValues {
            status,
            event_time_ms: None,
            version: None,
            age_ms: None,
            features: NamedMap(
                self.features
                    .iter()
                    .map(|&i| {
                        let (name, default) = &self.view.features[i];
                        (name.clone(), FeatureValue::default_of(default))
                    })
                    .collect(),
            ),
        }
    }

    /// Logs a corrupt entry; its defaults.
    fn unreadable(&self, entity: &str, problem: &str) -> ViewValues {
        self.log_unreadable(entity, problem);
        self.defaults(ViewStatus::Unreadable)
    }

    fn log_unreadable(&self, entity: &str, problem: &str) {
        tracing::warn!(
            key = %entity_key(&self.view.entity_type, entity),
            view = %self.view.name,
            problem,
            "unreadable feature values; serving defaults"
        );
    }
}

/// What a view's stored version and event time say (see [`SelectedView::classify`]).
enum Stored {
    Missing,
    Expired,
    TimedOut,
    /// Why the entry cannot be served (it is logged).
    Unreadable(String),
    Fresh {
        version: u64,
        event_time_ms: i64,
        age_ms: i64,
    },
}

/// Compact JSON, as serde writes it.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("our answers serialise to JSON")
}

/// JSON fragments of a selection's answers, made once per batch: most of an entity's
/// answer is names and defaults that are the same for every entity, and writing them
/// through serde (escaping every name, building every value) was most of a batch's
/// server CPU.
pub struct AnswerJson {
    views: Vec<ViewJson>,
}

struct ViewJson {
    /// `"view_name":`
    name: Vec<u8>,
    /// Per selected feature.
    features: Vec<FeatureJson>,
    /// The view's whole answer when it serves defaults, per [`ViewStatus`] (the entry
    /// for `found` is unused).
    defaults: [Vec<u8>; 5],
}

struct FeatureJson {
    /// `"feature_name":{"value":`
    key: Vec<u8>,
    /// `"feature_name":{"value":<default>,"source":"default","age_ms":null}`
    default: Vec<u8>,
}

impl ViewJson {
    fn defaults(&self, status: ViewStatus, out: &mut Vec<u8>) -> (ViewStatus, Option<i64>) {
        out.extend_from_slice(&self.defaults[status as usize]);
        (status, None)
    }
}

/// Names to values, serialised as a JSON object in the definitions' order. The names are
/// shared with the catalog, so building an answer copies none of them.
#[derive(Debug)]
pub struct NamedMap<T>(pub Vec<(Arc<str>, T)>);

impl<T: Serialize> Serialize for NamedMap<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(&**name, value)?;
        }
        map.end()
    }
}

/// One entity's served features, per view.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntityFeatures {
    pub entity_id: String,
    /// The selected feature views, by name.
    #[schema(value_type = BTreeMap<String, ViewValues>)]
    pub views: NamedMap<ViewValues>,
}

/// One view's served features for one entity.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewValues {
    /// Where the values came from: `found` (the store or the near cache), `missing`
    /// (nothing stored), `expired` (stored values older than the view's TTL),
    /// `unreadable` (a corrupt entry) or `timeout` (the request's latency budget ran out
    /// before the values arrived). All but `found` serve every feature's default.
    pub status: ViewStatus,
    /// Event time (epoch milliseconds) of the latest event the stored values reflect.
    pub event_time_ms: Option<i64>,
    /// Version of the stored values (grows with every update the processor writes).
    pub version: Option<u64>,
    /// Serving time minus `event_time_ms`, in milliseconds (never negative).
    pub age_ms: Option<i64>,
    /// The selected features, by name, in the order of the definition.
    #[schema(value_type = BTreeMap<String, FeatureValue>)]
    pub features: NamedMap<FeatureValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViewStatus {
    Found = 0,
    Missing = 1,
    Expired = 2,
    Unreadable = 3,
    Timeout = 4,
}

/// One served feature value.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureValue {
    /// The value: a JSON number, string, boolean, or null.
    #[schema(value_type = Object)]
    pub value: Value,
    /// `store` when the value was read from Redis for this request, `cache` when the
    /// service's near cache answered (never staler than its documented bound), `default`
    /// when it is the feature's declared default.
    pub source: ValueSource,
    /// Age of a stored value in milliseconds (serving time minus its event time); null
    /// for defaults.
    pub age_ms: Option<i64>,
}

impl FeatureValue {
    fn default_of(default: &Value) -> Self {
        Self {
            value: default.clone(),
            source: ValueSource::Default,
            age_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    Store,
    Cache,
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_core::store_layout::{encode_version, field, EVENT_TIME, VERSION};
    use std::collections::HashMap;

    const NOW: i64 = 1_700_000_000_000;

    fn catalog() -> Catalog {
        let features = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        let definitions = freshet_core::load_dir(&features).expect("the shipped definitions");
        Catalog::new(&definitions, &ServingMetrics::new())
    }

    /// Each group's read of an entity whose hash holds `stored` (field -> text).
    fn reads(selection: &Selection, stored: &HashMap<String, String>) -> Vec<RawFields> {
        selection
            .groups
            .iter()
            .map(|g| {
                g.fields
                    .iter()
                    .map(|f| stored.get(*f).map(String::as_str))
                    .collect()
            })
            .collect()
    }

    /// A stored entity hash: both shipped views at version 42 and the given age, every
    /// feature holding `value` except those in `absent`.
    fn stored(age_ms: i64, value: &str, absent: &[&str]) -> HashMap<String, String> {
        let views = [
            (
                "user_click_stats",
                &[
                    "click_count_1m",
                    "view_count_1m",
                    "click_count_10m",
                    "distinct_items_viewed_10m",
                ][..],
            ),
            (
                "user_purchase_stats",
                &[
                    "purchase_count_5m",
                    "purchase_amount_sum_1h",
                    "avg_purchase_amount_1h",
                    "events_per_session",
                ][..],
            ),
        ];
        let mut hash = HashMap::new();
        for (view, features) in views {
            for f in features.iter().filter(|f| !absent.contains(f)) {
                hash.insert(field(view, f), value.to_string());
            }
            hash.insert(field(view, VERSION), encode_version(42));
            hash.insert(field(view, EVENT_TIME), (NOW - age_ms).to_string());
        }
        hash
    }

    #[test]
    fn pairs_select_exactly_what_they_name_and_shared_names_are_found() {
        let features = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        let mut definitions = freshet_core::load_dir(&features).unwrap();
        definitions.views[1].features[0].name = "click_count_1m".into();
        let catalog = Catalog::new(&definitions, &ServingMetrics::new());
        let selection = catalog
            .select_pairs([
                ("user_purchase_stats", "events_per_session"),
                ("user_click_stats", "view_count_1m"),
                ("user_purchase_stats", "click_count_1m"),
                ("user_click_stats", "click_count_1m"),
            ])
            .unwrap();
        let chosen: Vec<(&str, Vec<&str>)> = selection
            .features()
            .map(|(view, features)| (view, features.collect()))
            .collect();
        assert_eq!(
            chosen,
            [
                (
                    "user_purchase_stats",
                    vec!["events_per_session", "click_count_1m"]
                ),
                ("user_click_stats", vec!["view_count_1m", "click_count_1m"]),
            ]
        );
        assert_eq!(selection.shared_feature_names(), ["click_count_1m"]);
        let one_view = catalog
            .select_pairs([("user_click_stats", "click_count_1m")])
            .unwrap();
        assert!(one_view.shared_feature_names().is_empty());
        let repeated = catalog.select_pairs([
            ("user_click_stats", "click_count_1m"),
            ("user_click_stats", "click_count_1m"),
        ]);
        assert!(matches!(repeated, Err(RefError::Repeated { .. })));
        assert!(matches!(
            catalog.select_pairs([("nope", "x")]),
            Err(RefError::UnknownView { .. })
        ));
        assert!(matches!(
            catalog.select_pairs([("user_click_stats", "x")]),
            Err(RefError::UnknownFeature { .. })
        ));
    }

    #[test]
    fn answers_written_straight_as_json_are_what_serde_writes() {
        let catalog = catalog();
        let mut malformed = stored(5, "1", &[]);
        malformed.insert(field("user_click_stats", VERSION), "v42".into());
        malformed.insert(field("user_purchase_stats", VERSION), "v42".into());
        let cases: Vec<(&str, HashMap<String, String>, ViewStatus)> = vec![
            ("1", stored(1_500, "3", &[]), ViewStatus::Found),
            (
                "2",
                stored(0, "2.5", &["view_count_1m", "events_per_session"]),
                ViewStatus::Found,
            ),
            (
                "3",
                stored(-20, "\"a \\\"quoted\\\" \u{e9}\"", &[]),
                ViewStatus::Found,
            ),
            ("4", stored(7, "null", &[]), ViewStatus::Found),
            ("5", stored(9, "-1.5e-7", &[]), ViewStatus::Found),
            (
                "an \"odd\" id \\ \u{e9}",
                stored(3, "true", &[]),
                ViewStatus::Found,
            ),
            ("6", HashMap::new(), ViewStatus::Missing),
            ("7", stored(25 * 3_600_000, "3", &[]), ViewStatus::Expired),
            ("8", malformed, ViewStatus::Unreadable),
            ("9", stored(5, "not json", &[]), ViewStatus::Unreadable),
        ];
        let wrong_type = |selection: &Selection| -> Vec<RawFields> {
            selection
                .groups
                .iter()
                .map(|_| {
                    RawFields::failed(
                        "WRONGTYPE Operation against a key holding the wrong kind of value",
                    )
                })
                .collect()
        };
        let selections = [
            catalog
                .select(None::<[&str; 0]>, None::<[&str; 0]>)
                .unwrap(),
            catalog
                .select(
                    Some(["user_purchase_stats"]),
                    Some(["avg_purchase_amount_1h", "purchase_count_5m"]),
                )
                .unwrap(),
        ];
        for selection in &selections {
            let json = selection.answer_json();
            let (mut by_serde, mut written) = (selection.tally(), selection.tally());
            for (id, hash, status) in &cases {
                let read = reads(selection, hash);
                let entity = selection.entity(id.to_string(), &read, NOW, &mut by_serde);
                assert_eq!(entity.views.0[0].1.status, *status, "entity {id}");
                let mut out = Vec::new();
                selection.write_entity(&json, id, &read, NOW, &mut written, &mut out);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(to_json(&entity)).unwrap(),
                    "entity {id}"
                );
            }
            let read = wrong_type(selection);
            let entity = selection.entity("10".into(), &read, NOW, &mut by_serde);
            assert_eq!(entity.views.0[0].1.status, ViewStatus::Unreadable);
            let mut out = Vec::new();
            selection.write_entity(&json, "10", &read, NOW, &mut written, &mut out);
            assert_eq!(out, to_json(&entity));
            let statuses = |t: &Tally| t.views.iter().map(|v| v.statuses).collect::<Vec<_>>();
            assert_eq!(statuses(&written), statuses(&by_serde));
            assert_eq!(statuses(&written)[0], [6, 1, 1, 3, 0]);
        }
    }
}
