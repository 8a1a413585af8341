//! Compatibility levels and checks, decided by apache-avro's schema resolution rules.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema is checked against every earlier version, not the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// Checks `new` against `existing` (oldest first) under `level`. Returns the reasons it is
/// incompatible; empty means compatible.
///
/// - BACKWARD: consumers using `new` can read data written with the existing schema.
/// - FORWARD: consumers using the existing schema can read data written with `new`.
/// - FULL: both. The transitive forms check every existing version, the others only the
///   latest.
pub fn check(level: CompatibilityLevel, new: &Schema, existing: &[(u32, Schema)]) -> Vec<String> {
    use CompatibilityLevel::*;
    let against: &[(u32, Schema)] = if level.transitive() {
        existing
    } else {
        existing.last().map_or(&[], std::slice::from_ref)
    };
    let (backward, forward) = match level {
        None => return Vec::new(),
        Backward | BackwardTransitive => (true, false),
        Forward | ForwardTransitive => (false, true),
        Full | FullTransitive => (true, true),
    };
    let mut problems = Vec::new();
    for (version, old) in against {
        if backward {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "the new schema cannot read data written with version {version}: {e}"
                ));
            }
        }
        if forward {
            if let Err(e) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "readers using version {version} cannot read data written with the new schema: {e}"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"E","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn adding_a_field_with_a_default_is_fully_compatible() {
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(
            r#"{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}"#,
        );
        for level in CompatibilityLevel::ALL {
            assert!(check(level, &v2, &[(1, v1.clone())]).is_empty(), "{level}");
        }
    }

    #[test]
    fn adding_a_required_field_breaks_backward_but_not_forward() {
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        assert_eq!(
            check(CompatibilityLevel::Backward, &v2, &[(1, v1.clone())]).len(),
            1
        );
        assert!(check(CompatibilityLevel::Forward, &v2, &[(1, v1.clone())]).is_empty());
        assert_eq!(
            check(CompatibilityLevel::Full, &v2, &[(1, v1.clone())]).len(),
            1
        );
        assert!(check(CompatibilityLevel::None, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_version() {
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string","default":"x"}"#);
        // v3 drops the default of b: fine against v2 for BACKWARD (v2 data has b),
        // not against v1 (v1 data lacks b and there is no default).
        let v3 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        let history = [(1, v1), (2, v2)];
        assert!(check(CompatibilityLevel::Backward, &v3, &history).is_empty());
        assert_eq!(
            check(CompatibilityLevel::BackwardTransitive, &v3, &history).len(),
            1
        );
    }

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(
            "full_transitive".parse(),
            Ok(CompatibilityLevel::FullTransitive)
        );
        assert_eq!("sideways".parse::<CompatibilityLevel>(), Err(()));
    }
}
