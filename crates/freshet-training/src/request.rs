//! Which features a training set holds: whole views (`--views`), single features
//! (`--features view:feature`), or, when neither is named, every view.

use crate::TrainingError;
use freshet_core::definitions::Definitions;
use freshet_core::{Value, ValueType};

/// One requested feature of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedFeature {
    pub name: String,
    /// Its position among the view's features (the order of a view's values).
    pub position: usize,
    pub value_type: ValueType,
    pub default: Value,
}

/// One view of the training set and the features asked of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedView {
    pub name: String,
    pub topic: String,
    pub ttl_ms: i64,
    /// Every feature of the view, in definition order (how values are kept).
    pub all_features: Vec<String>,
    /// Their defaults, in the same order: the values of a feature a record lacks.
    pub all_defaults: Vec<Value>,
    /// The features asked for, in the order of the output's columns.
    pub features: Vec<RequestedFeature>,
}

/// Resolves `views` and `features` (`view:feature`) against the definitions; with
/// neither, every view with all its features.
pub fn resolve(
    defs: &Definitions,
    views: &[String],
    features: &[String],
) -> Result<Vec<RequestedView>, TrainingError> {
    let mut out: Vec<RequestedView> = Vec::new();
    let known_views = || defs.view_names().join(", ");
    let view_of = |name: &str| {
        defs.view(name).ok_or_else(|| TrainingError::UnknownView {
            name: name.into(),
            known: known_views(),
        })
    };
    let entry = |out: &mut Vec<RequestedView>, name: &str| -> Result<usize, TrainingError> {
        if let Some(i) = out.iter().position(|v| v.name == name) {
            return Ok(i);
        }
        let view = view_of(name)?;
        let topic = defs
            .sources
            .iter()
            .find(|s| s.name == view.source)
            .map(|s| s.topic.clone())
            .expect("a validated view's source exists");
        out.push(RequestedView {
            name: view.name.clone(),
            topic,
            ttl_ms: view.ttl.0,
            all_features: view.features.iter().map(|f| f.name.clone()).collect(),
            all_defaults: view.features.iter().map(|f| f.default.clone()).collect(),
            features: Vec::new(),
        });
        Ok(out.len() - 1)
    };
    let add = |out: &mut Vec<RequestedView>, view: &str, feature: &str| {
        let i = entry(out, view)?;
        let definition = view_of(view)?;
        let position = definition
            .features
            .iter()
            .position(|f| f.name == feature)
            .ok_or_else(|| TrainingError::UnknownFeature {
                view: view.into(),
                feature: feature.into(),
                known: out[i].all_features.join(", "),
            })?;
        let f = &definition.features[position];
        if !out[i].features.iter().any(|r| r.position == position) {
            out[i].features.push(RequestedFeature {
                name: f.name.clone(),
                position,
                value_type: f.value_type,
                default: f.default.clone(),
            });
        }
        Ok::<(), TrainingError>(())
    };
    let whole_views: Vec<String> = if views.is_empty() && features.is_empty() {
        defs.view_names().iter().map(|v| v.to_string()).collect()
    } else {
        views.to_vec()
    };
    for view in &whole_views {
        for feature in &view_of(view)?.features {
            add(&mut out, view, &feature.name)?;
        }
    }
    for reference in features {
        let (view, feature) = reference
            .split_once(':')
            .filter(|(v, f)| !v.is_empty() && !f.is_empty())
            .ok_or_else(|| TrainingError::BadFeatureReference {
                text: reference.clone(),
            })?;
        add(&mut out, view.trim(), feature.trim())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn defs() -> Definitions {
        freshet_core::load_dir(
            &Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../features"),
        )
        .unwrap()
    }

    #[test]
    fn nothing_named_means_every_view_and_feature() {
        let requested = resolve(&defs(), &[], &[]).unwrap();
        let names: Vec<_> = requested.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["user_click_stats", "user_purchase_stats"]);
        assert_eq!(requested[0].features.len(), 4);
        assert_eq!(requested[1].features.len(), 4);
        assert_eq!(requested[1].ttl_ms, 24 * 3_600_000);
        assert_eq!(requested[0].topic, "user_events");
    }

    #[test]
    fn features_keep_their_order_and_appear_once() {
        let requested = resolve(
            &defs(),
            &[],
            &[
                "user_purchase_stats:events_per_session".into(),
                "user_click_stats:click_count_1m".into(),
                "user_purchase_stats:purchase_count_5m".into(),
                "user_purchase_stats:events_per_session".into(),
            ],
        )
        .unwrap();
        let columns: Vec<(String, Vec<(String, usize)>)> = requested
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.features
                        .iter()
                        .map(|f| (f.name.clone(), f.position))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            vec![
                (
                    "user_purchase_stats".to_string(),
                    vec![
                        ("events_per_session".to_string(), 3),
                        ("purchase_count_5m".to_string(), 0)
                    ]
                ),
                (
                    "user_click_stats".to_string(),
                    vec![("click_count_1m".to_string(), 0)]
                ),
            ]
        );
    }

    #[test]
    fn unknown_names_are_named_with_what_exists() {
        let error = resolve(&defs(), &["nope".into()], &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no feature view named `nope` (views: user_click_stats, user_purchase_stats)"
        );
        let error = resolve(&defs(), &[], &["user_click_stats:nope".into()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "feature view `user_click_stats` has no feature `nope` (features: click_count_1m, \
             view_count_1m, click_count_10m, distinct_items_viewed_10m)"
        );
        let error = resolve(&defs(), &[], &["click_count_1m".into()]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`click_count_1m` is not view:feature"),
            "{error}"
        );
    }
}
