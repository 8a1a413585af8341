//! How feature values are laid out in Redis. Written once here; the processor writes with
//! it and the serving API reads with it.
//!
//! One hash per feature view and entity, under the key `fv:{view}:{entity}`:
//!
//! | field          | holds                                                              |
//! |----------------|--------------------------------------------------------------------|
//! | `{feature}`    | the feature's value as a JSON scalar (`3`, `2.5`, `"x"`, `null`)   |
//! | `_event_time`  | epoch milliseconds of the latest event reflected in the hash       |
//! | `_version`     | the update's version, zero-padded to 20 digits                     |
//!
//! Feature names are identifiers starting with a letter, so they never collide with the
//! `_`-prefixed metadata fields. View names contain no `:`, so the key splits unambiguously
//! even when the entity id does. Keys expire after the view's TTL.
//!
//! Writes go through [`VERSIONED_WRITE_SCRIPT`], which applies an update only if its version
//! is newer than the stored one (or equal, for the live processor over a backfill). Versions come from the data (window ends, event times,
//! input offsets), never from the clock, so replaying the same input writes the same
//! versions and a replayed or late write can never move a value backwards. Versions are
//! compared as fixed-width decimal strings, which is exact for all of `u64` (Lua numbers
//! would lose precision above 2^53).

use crate::value::Value;
use std::collections::BTreeMap;

pub const KEY_PREFIX: &str = "fv";
pub const FIELD_EVENT_TIME: &str = "_event_time";
pub const FIELD_VERSION: &str = "_version";

/// The Redis key of one entity's values in one feature view.
pub fn feature_key(view: &str, entity: &str) -> String {
    format!("{KEY_PREFIX}:{view}:{entity}")
}

/// Splits a key made by [`feature_key`] into view and entity.
pub fn parse_feature_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?.strip_prefix(':')?;
    rest.split_once(':')
}

/// A version as stored: fixed-width, so that string order is numeric order.
pub fn encode_version(version: u64) -> String {
    format!("{version:020}")
}

pub fn decode_version(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// Who writes an update. At an equal version the processor's write wins over a
/// backfill's: a backfill from the middle of history computes values from fewer events
/// under the same versions, and the live processor's must replace them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The live processor: applies over an equal version (a replay writes the same values).
    Processor,
    /// A backfill: applies only over an older version.
    Backfill,
}

impl Writer {
    fn as_arg(self) -> &'static str {
        match self {
            Writer::Processor => "processor",
            Writer::Backfill => "backfill",
        }
    }
}

/// Lua script for a versioned write. KEYS[1]: the hash. ARGV: version (encoded), event
/// time (ms), TTL (ms, 0 for none), writer (`processor` or `backfill`), then field/value
/// pairs. Returns 1 when applied, 0 when the stored version was newer, or equal and the
/// writer a backfill (the write is then a no-op).
pub const VERSIONED_WRITE_SCRIPT: &str = r#"
local current = redis.call('HGET', KEYS[1], '_version')
if current and (current > ARGV[1] or (current == ARGV[1] and ARGV[4] ~= 'processor')) then
  return 0
end
redis.call('HSET', KEYS[1], '_version', ARGV[1], '_event_time', ARGV[2], unpack(ARGV, 5))
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"#;

/// One update of one entity's values in one view: what the processor writes.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureUpdate {
    pub view: String,
    pub entity: String,
    pub version: u64,
    pub event_time_ms: i64,
    pub values: BTreeMap<String, Value>,
}

impl FeatureUpdate {
    pub fn key(&self) -> String {
        feature_key(&self.view, &self.entity)
    }

    /// The script's ARGV for this update (see [`VERSIONED_WRITE_SCRIPT`]).
    pub fn script_args(&self, ttl_ms: i64, writer: Writer) -> Vec<String> {
        let mut args = vec![
            encode_version(self.version),
            self.event_time_ms.to_string(),
            ttl_ms.max(0).to_string(),
            writer.as_arg().to_string(),
        ];
        for (name, value) in &self.values {
            args.push(name.clone());
            args.push(value.to_json_string());
        }
        args
    }
}

/// One entity's stored values in one view, decoded from the hash: what serving reads.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValues {
    pub version: u64,
    pub event_time_ms: i64,
    pub values: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("hash field `{field}` holds {text:?}, which is not a JSON scalar")]
    BadValue { field: String, text: String },
    #[error("hash field `{0}` is missing or malformed")]
    BadMetadata(&'static str),
}

impl StoredValues {
    /// Decodes the fields of a hash (as returned by HGETALL). An empty hash (missing key)
    /// is `Ok(None)`.
    pub fn decode<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Self>, DecodeError> {
        let mut version = None;
        let mut event_time = None;
        let mut values = BTreeMap::new();
        let mut any = false;
        for (name, text) in fields {
            any = true;
            match name {
                FIELD_VERSION => version = decode_version(text),
                FIELD_EVENT_TIME => event_time = text.parse::<i64>().ok(),
                _ => {
                    let value =
                        Value::from_json_str(text).ok_or_else(|| DecodeError::BadValue {
                            field: name.to_string(),
                            text: text.to_string(),
                        })?;
                    values.insert(name.to_string(), value);
                }
            }
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(Self {
            version: version.ok_or(DecodeError::BadMetadata(FIELD_VERSION))?,
            event_time_ms: event_time.ok_or(DecodeError::BadMetadata(FIELD_EVENT_TIME))?,
            values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_even_when_entities_contain_colons() {
        let key = feature_key("user_click_stats", "tenant:42");
        assert_eq!(key, "fv:user_click_stats:tenant:42");
        assert_eq!(
            parse_feature_key(&key),
            Some(("user_click_stats", "tenant:42"))
        );
        assert_eq!(parse_feature_key("other:x:y"), None);
    }

    #[test]
    fn encoded_versions_sort_as_numbers() {
        let mut versions = [9u64, 10, 1_000_000_000_000_000_000, 0, u64::MAX];
        let mut encoded: Vec<_> = versions.iter().map(|v| encode_version(*v)).collect();
        encoded.sort();
        versions.sort();
        let decoded: Vec<_> = encoded.iter().map(|e| decode_version(e).unwrap()).collect();
        assert_eq!(decoded, versions);
    }

    #[test]
    fn update_arguments_decode_back_to_the_same_values() {
        let update = FeatureUpdate {
            view: "v".into(),
            entity: "1".into(),
            version: 77,
            event_time_ms: 1_700_000_000_000,
            values: BTreeMap::from([
                ("clicks".to_string(), Value::Long(3)),
                ("mean_amount".to_string(), Value::Double(12.25)),
                ("last_item".to_string(), Value::Null),
            ]),
        };
        let args = update.script_args(3_600_000, Writer::Processor);
        assert_eq!(
            args[..4],
            [
                "00000000000000000077",
                "1700000000000",
                "3600000",
                "processor"
            ]
        );
        let mut fields: Vec<(&str, &str)> =
            vec![(FIELD_VERSION, &args[0]), (FIELD_EVENT_TIME, &args[1])];
        fields.extend(args[4..].chunks(2).map(|p| (p[0].as_str(), p[1].as_str())));
        let stored = StoredValues::decode(fields).unwrap().unwrap();
        assert_eq!(stored.version, 77);
        assert_eq!(stored.event_time_ms, 1_700_000_000_000);
        assert_eq!(stored.values, update.values);
    }

    #[test]
    fn decoding_reports_corrupt_fields() {
        assert_eq!(StoredValues::decode([]), Ok(None));
        let err = StoredValues::decode([("_version", "1"), ("_event_time", "1"), ("x", "{oops")]);
        assert!(matches!(err, Err(DecodeError::BadValue { .. })));
        let err = StoredValues::decode([("x", "1")]);
        assert_eq!(err, Err(DecodeError::BadMetadata(FIELD_VERSION)));
    }
}
