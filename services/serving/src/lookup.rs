//! What a lookup means: which views and features a request selects, and how stored hashes
//! become served values. Pure: no I/O, the time is a parameter.
//!
//! Served-value rules, per view and entity:
//! - `found`: the hash exists and its event time is within the view's TTL; each feature
//!   present in the hash is served from the store (`source: "store"`), with its age (now
//!   minus the hash's event time, never negative); a feature absent from the hash serves
//!   its default.
//! - `missing`: no hash; every feature serves its default.
//! - `expired`: the hash's event time is older than the view's TTL (the key's own expiry
//!   may not have run yet, or a backfill wrote old values); defaults.
//! - `unreadable`: the hash is corrupt (logged); defaults, so one bad key never fails a
//!   whole batch.

use crate::error::ApiError;
use crate::metrics::{ServingMetrics, ViewMetrics};
use freshet_core::store_layout::feature_key;
use freshet_core::{Definitions, Value};
use freshet_store::Hash;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use utoipa::ToSchema;

/// The views and features the service serves, with their metric handles, built once from
/// the definitions.
pub struct Catalog {
    views: Vec<CatalogView>,
}

struct CatalogView {
    name: String,
    ttl_ms: i64,
    features: Vec<(String, Value)>,
    metrics: ViewMetrics,
}

impl Catalog {
    pub fn new(definitions: &Definitions, metrics: &ServingMetrics) -> Self {
        Self {
            views: definitions
                .views
                .iter()
                .map(|v| CatalogView {
                    name: v.name.clone(),
                    ttl_ms: v.ttl.0,
                    features: v
                        .features
                        .iter()
                        .map(|f| (f.name.clone(), f.default.clone()))
                        .collect(),
                    metrics: metrics.view(&v.name),
                })
                .collect(),
        }
    }

    fn view_names(&self) -> String {
        self.views
            .iter()
            .map(|v| v.name.as_str())
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
        let mut chosen: Vec<&CatalogView> = match views {
            None => self.views.iter().collect(),
            Some(names) => {
                let mut chosen = Vec::new();
                for name in names {
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(ApiError::EmptyName("view"));
                    }
                    let view = self.views.iter().find(|v| v.name == name).ok_or_else(|| {
                        ApiError::UnknownView {
                            name: name.to_string(),
                            known: self.view_names(),
                        }
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
                    .any(|v| v.features.iter().any(|(f, _)| f == name))
                {
                    let known: Vec<&str> = chosen
                        .iter()
                        .flat_map(|v| v.features.iter().map(|(f, _)| f.as_str()))
                        .collect();
                    return Err(ApiError::UnknownFeature {
                        name: name.to_string(),
                        views: chosen
                            .iter()
                            .map(|v| v.name.as_str())
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
        let views = chosen
            .drain(..)
            .filter_map(|view| {
                let features: Vec<usize> = (0..view.features.len())
                    .filter(|&i| {
                        wanted
                            .as_ref()
                            .is_none_or(|w| w.contains(&view.features[i].0.as_str()))
                    })
                    .collect();
                (!features.is_empty()).then_some(SelectedView { view, features })
            })
            .collect();
        Ok(Selection { views })
    }
}

/// The views and features one request reads.
pub struct Selection<'c> {
    views: Vec<SelectedView<'c>>,
}

struct SelectedView<'c> {
    view: &'c CatalogView,
    /// Indices into the view's features.
    features: Vec<usize>,
}

impl Selection<'_> {
    pub fn view_names(&self) -> Vec<&str> {
        self.views.iter().map(|v| v.view.name.as_str()).collect()
    }

    /// The Redis keys to read, view-major: key `v * entities.len() + e` is view `v` of
    /// entity `e`.
    pub fn keys(&self, entities: &[String]) -> Vec<String> {
        let mut keys = Vec::with_capacity(self.views.len() * entities.len());
        for selected in &self.views {
            for entity in entities {
                keys.push(feature_key(&selected.view.name, entity));
            }
        }
        keys
    }

    /// Builds each entity's served values from the hashes read at [`Selection::keys`], and
    /// records the per-view metrics (`redis_seconds`: how long the round trip took).
    pub fn assemble(
        &self,
        entities: Vec<String>,
        hashes: &[Hash],
        now_ms: i64,
        redis_seconds: f64,
    ) -> Vec<EntityFeatures> {
        let mut results: Vec<EntityFeatures> = entities
            .into_iter()
            .map(|entity_id| EntityFeatures {
                entity_id,
                views: BTreeMap::new(),
            })
            .collect();
        let n = results.len();
        for (v, selected) in self.views.iter().enumerate() {
            let started = Instant::now();
            let view = selected.view;
            let (mut found, mut missing, mut expired, mut unreadable) = (0, 0, 0, 0);
            for (e, result) in results.iter_mut().enumerate() {
                let hash = &hashes[v * n + e];
                let stored = match freshet_store::decode(hash) {
                    Ok(Some(stored)) if now_ms - stored.event_time_ms > view.ttl_ms => {
                        expired += 1;
                        Err(ViewStatus::Expired)
                    }
                    Ok(Some(stored)) => {
                        found += 1;
                        Ok(stored)
                    }
                    Ok(None) => {
                        missing += 1;
                        Err(ViewStatus::Missing)
                    }
                    Err(error) => {
                        unreadable += 1;
                        tracing::warn!(
                            key = %feature_key(&view.name, &result.entity_id),
                            %error,
                            "unreadable feature values; serving defaults"
                        );
                        Err(ViewStatus::Unreadable)
                    }
                };
                let values = match stored {
                    Ok(mut stored) => {
                        let age_ms = (now_ms - stored.event_time_ms).max(0);
                        view.metrics.age_seconds.observe(age_ms as f64 / 1_000.0);
                        let features = selected
                            .features
                            .iter()
                            .map(|&i| {
                                let (name, default) = &view.features[i];
                                let value = match stored.values.remove(name) {
                                    Some(value) => FeatureValue {
                                        value,
                                        source: ValueSource::Store,
                                        age_ms: Some(age_ms),
                                    },
                                    None => FeatureValue::default_of(default),
                                };
                                (name.clone(), value)
                            })
                            .collect();
                        ViewValues {
                            status: ViewStatus::Found,
                            event_time_ms: Some(stored.event_time_ms),
                            version: Some(stored.version),
                            age_ms: Some(age_ms),
                            features,
                        }
                    }
                    Err(status) => ViewValues {
                        status,
                        event_time_ms: None,
                        version: None,
                        age_ms: None,
                        features: selected
                            .features
                            .iter()
                            .map(|&i| {
                                let (name, default) = &view.features[i];
                                (name.clone(), FeatureValue::default_of(default))
                            })
                            .collect(),
                    },
                };
                result.views.insert(view.name.clone(), values);
            }
            let m = &view.metrics;
            m.found.inc_by(found);
            m.missing.inc_by(missing);
            m.expired.inc_by(expired);
            m.unreadable.inc_by(unreadable);
            m.redis_seconds.observe(redis_seconds);
            m.compute_seconds.observe(started.elapsed().as_secs_f64());
        }
        results
    }
}

/// One entity's served features, per view.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntityFeatures {
    pub entity_id: String,
    /// The selected feature views, by name.
    pub views: BTreeMap<String, ViewValues>,
}

/// One view's served features for one entity.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewValues {
    /// Where the values came from: `found` (the store), `missing` (nothing stored),
    /// `expired` (stored values older than the view's TTL) or `unreadable` (a corrupt
    /// entry). All but `found` serve every feature's default.
    pub status: ViewStatus,
    /// Event time (epoch milliseconds) of the latest event the stored values reflect.
    pub event_time_ms: Option<i64>,
    /// Version of the stored values (grows with every update the processor writes).
    pub version: Option<u64>,
    /// Serving time minus `event_time_ms`, in milliseconds (never negative).
    pub age_ms: Option<i64>,
    /// The selected features, by name.
    pub features: BTreeMap<String, FeatureValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViewStatus {
    Found,
    Missing,
    Expired,
    Unreadable,
}

/// One served feature value.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureValue {
    /// The value: a JSON number, string, boolean, or null.
    #[schema(value_type = Object)]
    pub value: Value,
    /// `store` when the value was read from the store, `default` when it is the feature's
    /// declared default.
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
    Default,
}
