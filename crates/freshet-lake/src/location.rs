//! Where lake files are: `s3://bucket/key` or a local path, the last part of either
//! possibly a pattern with `*` (`s3://lake/events/2026-12-*.parquet`).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Location {
    /// `s3://bucket/key` is an S3 object (or pattern); anything else a local path.
    pub fn parse(text: &str) -> Result<Self, crate::LakeError> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.contains("://") {
                return Err(crate::LakeError::BadLocation {
                    location: text.into(),
                    reason: "only s3:// URLs and local paths are read".into(),
                });
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() {
            return Err(crate::LakeError::BadLocation {
                location: text.into(),
                reason: "an S3 location is s3://BUCKET/KEY (the key may end in a pattern such as *.parquet)".into(),
            });
        }
        Ok(Location::S3 {
            bucket: bucket.into(),
            key: key.into(),
        })
    }

    /// Whether the name says Parquet (`.parquet`, also as a pattern's end).
    pub fn is_parquet(&self) -> bool {
        self.to_string().to_ascii_lowercase().ends_with(".parquet")
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// The file name (the last part), for choosing a format by extension.
    pub fn file_name(&self) -> String {
        let text = self.to_string();
        text.rsplit('/').next().unwrap_or_default().to_string()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// A key as the prefix to list (everything before the first `*`, cut at its last `/`) and
/// the pattern the listed keys must match (`None`: the key is one object).
pub(crate) fn split_pattern(key: &str) -> (String, Option<glob::Pattern>) {
    match key.find('*') {
        None => (key.to_string(), None),
        Some(star) => {
            let prefix = key[..star]
                .rfind('/')
                .map_or(String::new(), |slash| key[..slash].to_string());
            // A pattern that does not parse matches nothing but itself.
            let pattern = glob::Pattern::new(key)
                .unwrap_or_else(|_| glob::Pattern::new(&glob::Pattern::escape(key)).unwrap());
            (prefix, Some(pattern))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_show_as_written() {
        let s3 = Location::parse("s3://lake/events/2026/*.parquet").unwrap();
        assert_eq!(
            s3,
            Location::S3 {
                bucket: "lake".into(),
                key: "events/2026/*.parquet".into()
            }
        );
        assert_eq!(s3.to_string(), "s3://lake/events/2026/*.parquet");
        assert!(s3.is_parquet() && s3.is_s3());
        assert_eq!(
            Location::parse("data/events.jsonl").unwrap(),
            Location::Local("data/events.jsonl".into())
        );
        for bad in [
            "s3://",
            "s3://bucket",
            "s3://bucket/",
            "gs://b/k",
            "s3:///key",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pattern_lists_from_its_fixed_prefix() {
        let (prefix, pattern) = split_pattern("events/2026-12-*.parquet");
        assert_eq!(prefix, "events");
        let pattern = pattern.unwrap();
        assert!(pattern.matches("events/2026-12-01.parquet"));
        assert!(!pattern.matches("events/2026-11-01.parquet"));
        assert!(!pattern.matches("events/2026-12-01.json"));
        assert_eq!(
            split_pattern("events/one.parquet"),
            ("events/one.parquet".into(), None)
        );
        assert_eq!(split_pattern("*.parquet").0, "");
    }
}
