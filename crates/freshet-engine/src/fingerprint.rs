//! A view's fingerprint: what its saved state depends on, hashed so that a checkpoint can
//! tell whether the state it holds still fits the view's definition.
//!
//! The fingerprint is SHA-256 over a canonical text written by hand here (one line per
//! item, fixed order, fixed spelling), so it changes only when what defines the state
//! changes: the source topic, the entity key and event-time fields, the watermark delay,
//! each window with its features' aggregations, fields, filters and integral flags, in
//! order. A feature's name, description, default and the view's TTL do not define the
//! state (renaming a feature keeps its windows). The text does not come from `Debug` or
//! serde, and the hash is not `DefaultHasher`: neither is promised to stay the same across
//! Rust releases or refactors, and a changed fingerprint throws the view's state away.
//!
//! Changing this function changes every fingerprint: `tests` pins the fingerprints of the
//! shipped views, so such a change fails loudly, and must come with a way to recognise the
//! old ones (as [`legacy`] does for the fingerprint of earlier releases).

use crate::CompiledView;
use freshet_core::Window;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The version of the canonical text; part of the text, so a new version never collides
/// with an old one.
const CANONICAL_VERSION: &str = "freshet-view-state/1";

/// The view's fingerprint: `sha256:` and 64 hex digits.
pub fn fingerprint(view: &CompiledView) -> String {
    let digest = Sha256::digest(canonical_text(view).as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// What the fingerprint hashes, one item per line.
pub fn canonical_text(view: &CompiledView) -> String {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(CANONICAL_VERSION.to_string());
    line(format!("source {}", quoted(&view.topic)));
    line(format!(
        "entity_key_field {}",
        quoted(&view.entity_key_field)
    ));
    line(format!(
        "event_time_field {}",
        quoted(&view.event_time_field)
    ));
    line(format!("watermark_delay_ms {}", view.watermark_delay_ms));
    for group in &view.groups {
        line(format!("window {}", window_text(group.window)));
        for &i in &group.features {
            let f = &view.features[i];
            line(format!(
                "  feature {} field {} filter {} integral {}",
                f.aggregation.name(),
                f.field.as_deref().map_or("-".to_string(), quoted),
                f.filter
                    .as_ref()
                    .map_or("-".to_string(), |filter| quoted(&filter.to_string())),
                f.integral
            ));
        }
    }
    text
}

fn window_text(window: Window) -> String {
    match window {
        Window::Tumbling { size } => format!("tumbling size_ms {}", size.as_millis()),
        Window::Sliding { size, step } => format!(
            "sliding size_ms {} step_ms {}",
            size.as_millis(),
            step.as_millis()
        ),
        Window::Session { gap } => format!("session gap_ms {}", gap.as_millis()),
    }
}

/// A string with its length in front, so no text of one item can read as another's.
fn quoted(s: &str) -> String {
    format!("{}:{s}", s.len())
}

/// The fingerprint earlier releases stored: `DefaultHasher` over `Debug` text. Only for
/// recognising state written by them, once, on the first start after an upgrade (the
/// checkpoint then stores [`fingerprint`] instead). It can be computed again only while
/// `Debug` of the types below and Rust's `DefaultHasher` stay as they were when that
/// state was written; if they have changed, the state is seen as changed, as it was
/// before this module existed.
pub fn legacy(view: &CompiledView) -> String {
    use std::hash::{Hash, Hasher};
    let text = format!(
        "{}|{}|{}|{}|{:?}|{:?}",
        view.topic,
        view.entity_key_field,
        view.event_time_field,
        view.watermark_delay_ms,
        view.groups
            .iter()
            .map(|g| (g.window, g.features.clone()))
            .collect::<Vec<_>>(),
        view.features
            .iter()
            .map(|f| (
                &f.name,
                f.aggregation,
                &f.field,
                f.filter.as_ref().map(ToString::to_string),
                f.integral
            ))
            .collect::<Vec<_>>()
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_core::load_dir;
    use std::path::Path;

    fn shipped_views() -> Vec<CompiledView> {
        let dir = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        CompiledView::compile_all(&load_dir(&dir).expect("the shipped definitions load"))
    }

    /// Pinned: if this fails, the fingerprint function changed and every deployment would
    /// throw its window state away on the next start. Recognise the old fingerprints
    /// first (see [`legacy`]), then update the literals.
    #[test]
    fn the_shipped_views_keep_their_fingerprints() {
        let got: Vec<(String, String)> = shipped_views()
            .iter()
            .map(|v| (v.name.clone(), fingerprint(v)))
            .collect();
        let want = PINNED
            .iter()
            .map(|(n, f)| (n.to_string(), f.to_string()))
            .collect::<Vec<_>>();
        assert_eq!(got, want);
    }

    const PINNED: &[(&str, &str)] = &[
        (
            "user_click_stats",
            "sha256:d3bc7e8fc753325a7cf7e02d71259e848a789b0e29a557c34ad960833144de4f",
        ),
        (
            "user_purchase_stats",
            "sha256:672c3757f4073b49702299bf0ba937516378b84e2de5ffbf47a96c60cb176f25",
        ),
    ];

    #[test]
    fn the_text_names_every_part_of_the_state_and_nothing_else() {
        let views = shipped_views();
        let mut view = views[0].clone();
        let base = fingerprint(&view);
        // Not part of the state: names and the TTL.
        view.name = "renamed".into();
        view.ttl_ms += 1;
        for f in &mut view.features {
            f.name.push('x');
            f.default = freshet_core::Value::Long(12345);
        }
        assert_eq!(fingerprint(&view), base);
        // Part of it: each of these changes the fingerprint.
        let changed = |edit: &dyn Fn(&mut CompiledView)| {
            let mut v = views[0].clone();
            edit(&mut v);
            fingerprint(&v)
        };
        let variants = [
            changed(&|v| v.topic.push('2')),
            changed(&|v| v.entity_key_field.push('2')),
            changed(&|v| v.event_time_field.push('2')),
            changed(&|v| v.watermark_delay_ms += 1),
            changed(&|v| {
                v.groups[0].window = Window::Session {
                    gap: freshet_core::duration::DurationMs(1),
                }
            }),
            changed(&|v| v.features[0].integral = !v.features[0].integral),
            changed(&|v| v.features[0].field = Some("other".into())),
            changed(&|v| {
                v.features[0].filter = Some(freshet_core::filter::Filter::parse("x == 1").unwrap())
            }),
            changed(&|v| {
                v.features[0].aggregation =
                    if v.features[0].aggregation == freshet_core::definitions::Aggregation::Max {
                        freshet_core::definitions::Aggregation::Min
                    } else {
                        freshet_core::definitions::Aggregation::Max
                    }
            }),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v, &base, "change {i} left the fingerprint as it was");
        }
        let distinct: std::collections::HashSet<&String> = variants.iter().collect();
        assert_eq!(distinct.len(), variants.len());
    }
}
