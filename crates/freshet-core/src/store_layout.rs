//! How feature values are laid out in Redis. Written once here; the processor and backfill
//! write with it and the serving API reads with it.
//!
//! **One hash per entity**, under the key `fe:{entity_type}:{entity_id}` (the view's
//! `entity`, then the id), holding every view of that entity, so a lookup of all of an
//! entity's views is one `HMGET` and Redis does the work of one read:
//!
//! | field                | holds                                                         |
//! |----------------------|---------------------------------------------------------------|
//! | `{view}:{feature}`   | the feature's value as a JSON scalar (`3`, `2.5`, `"x"`, `null`) |
//! | `{view}:_event_time` | epoch milliseconds of the latest event reflected in the view  |
//! | `{view}:_version`    | the view's version, zero-padded to 20 digits                  |
//!
//! View, entity and feature names are identifiers (lowercase letters, digits, `_`, starting
//! with a letter), so fields split unambiguously at their first `:`, feature names never
//! collide with the `_`-prefixed metadata, and the key splits after the entity type even
//! when the id holds `:`. One entity is one key, so in a Redis Cluster all of an entity's
//! views live in one slot and one read on one node serves them.
//!
//! Writes go through [`VERSIONED_WRITE_SCRIPT`], per view: an update is applied only if its
//! version is newer than that view's stored version (or equal, for the live processor over
//! a backfill), and touches only that view's fields, so views written by different
//! writers never overwrite one another. Versions come from the data (window ends, event
//! times, input offsets), never from the clock, so replaying the same input writes the same
//! versions and a replayed or late write can never move a value backwards. Versions are
//! compared as fixed-width decimal strings, which is exact for all of `u64` (Lua numbers
//! would lose precision above 2^53).
//!
//! Expiry: Redis 7.0 expires keys, not fields, so the key's expiry is the longest TTL among
//! the views written to it, extended (never shortened) by each write. A view older than
//! its own TTL may stay in the hash until then; readers treat it as expired by its event
//! time (serving does: status `expired`), which is also what they must do for values a
//! backfill wrote with old event times.
//!
//! The layout before this one (`fv:{view}:{entity_id}`, one hash per view and entity with
//! unprefixed fields) is read by [`LegacyKey`] and [`StoredValues::decode_legacy`] for the
//! migration (`freshet store migrate`), and by nothing else.

use crate::value::Value;
use std::collections::BTreeMap;

/// Prefix of entity hashes.
pub const KEY_PREFIX: &str = "fe";
/// Prefix of the previous layout's per-view hashes.
pub const LEGACY_KEY_PREFIX: &str = "fv";
/// Metadata field suffixes (after `{view}:`).
pub const EVENT_TIME: &str = "_event_time";
pub const VERSION: &str = "_version";

/// The Redis key of one entity's values in every view of its entity type.
pub fn entity_key(entity_type: &str, entity_id: &str) -> String {
    format!("{KEY_PREFIX}:{entity_type}:{entity_id}")
}

/// Splits a key made by [`entity_key`] into entity type and id.
pub fn parse_entity_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?.strip_prefix(':')?;
    rest.split_once(':')
}

/// The hash field of a view's feature (or metadata: [`VERSION`], [`EVENT_TIME`]).
pub fn field(view: &str, name: &str) -> String {
    format!("{view}:{name}")
}

/// Splits a field made by [`field`] into view and name.
pub fn parse_field(field: &str) -> Option<(&str, &str)> {
    field.split_once(':')
}

/// A key of the previous layout: `fv:{view}:{entity_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyKey<'a> {
    pub view: &'a str,
    pub entity_id: &'a str,
}

impl<'a> LegacyKey<'a> {
    pub fn parse(key: &'a str) -> Option<Self> {
        let rest = key.strip_prefix(LEGACY_KEY_PREFIX)?.strip_prefix(':')?;
        let (view, entity_id) = rest.split_once(':')?;
        Some(Self { view, entity_id })
    }

    pub fn key(view: &str, entity_id: &str) -> String {
        format!("{LEGACY_KEY_PREFIX}:{view}:{entity_id}")
    }
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
    /// A backfill (or a migration): applies only over an older version.
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

/// Where a view's values are stored and for how long: what a writer needs to know of a
/// view besides the update itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStorage {
    /// The view's entity type (its definition's `entity`).
    pub entity_type: String,
    /// The view's TTL in milliseconds (0 for none).
    pub ttl_ms: i64,
}

impl ViewStorage {
    pub fn of(view: &crate::FeatureView) -> Self {
        Self {
            entity_type: view.entity.clone(),
            ttl_ms: view.ttl.0,
        }
    }
}

/// Lua script for a versioned write of one view. KEYS[1]: the entity hash. ARGV: version
/// (encoded), event time (ms), TTL (ms, 0 for none), writer (`processor` or `backfill`),
/// the view's field prefix (`{view}:`), then field/value pairs (fields already prefixed).
/// Returns 1 when applied, 0 when the view's stored version was newer, or equal and the
/// writer a backfill (the write is then a no-op).
///
/// The key's expiry only grows: a write with a longer TTL than the key's remaining time
/// extends it; a view without TTL makes the key persistent.
pub const VERSIONED_WRITE_SCRIPT: &str = r#"
local version_field = ARGV[5] .. '_version'
local current = redis.call('HGET', KEYS[1], version_field)
if current and (current > ARGV[1] or (current == ARGV[1] and ARGV[4] ~= 'processor')) then
  return 0
end
local remaining = redis.call('PTTL', KEYS[1])
redis.call('HSET', KEYS[1], version_field, ARGV[1], ARGV[5] .. '_event_time', ARGV[2], unpack(ARGV, 6))
local ttl = tonumber(ARGV[3])
if ttl <= 0 then
  if remaining >= 0 then redis.call('PERSIST', KEYS[1]) end
elseif remaining == -2 or (remaining >= 0 and remaining < ttl) then
  redis.call('PEXPIRE', KEYS[1], ttl)
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
    /// The entity hash this update goes to.
    pub fn key(&self, storage: &ViewStorage) -> String {
        entity_key(&storage.entity_type, &self.entity)
    }

    /// The script's ARGV for this update (see [`VERSIONED_WRITE_SCRIPT`]).
    pub fn script_args(&self, storage: &ViewStorage, writer: Writer) -> Vec<String> {
        let mut args = Vec::with_capacity(5 + 2 * self.values.len());
        args.extend([
            encode_version(self.version),
            self.event_time_ms.to_string(),
            storage.ttl_ms.max(0).to_string(),
            writer.as_arg().to_string(),
            format!("{}:", self.view),
        ]);
        for (name, value) in &self.values {
            args.push(field(&self.view, name));
            args.push(value.to_json_string());
        }
        args
    }
}

/// One entity's stored values in one view, decoded from the hash.
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
    BadMetadata(String),
}

impl StoredValues {
    /// Decodes one view's fields out of an entity hash (as returned by HGETALL); fields
    /// of other views are skipped. A hash without the view is `Ok(None)`.
    pub fn decode<'a>(
        view: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Self>, DecodeError> {
        Self::decode_fields(
            fields.into_iter().filter_map(|(name, text)| {
                let (owner, name) = parse_field(name)?;
                (owner == view).then_some((name, text))
            }),
            |name| field(view, name),
        )
    }

    /// Every view's values in an entity hash, by view name.
    pub fn decode_all<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<BTreeMap<String, Self>, DecodeError> {
        let mut by_view: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (name, text) in fields {
            let (view, name) = parse_field(name).ok_or_else(|| DecodeError::BadValue {
                field: name.to_string(),
                text: text.to_string(),
            })?;
            by_view.entry(view).or_default().push((name, text));
        }
        let mut out = BTreeMap::new();
        for (view, fields) in by_view {
            if let Some(stored) = Self::decode_fields(fields, |name| field(view, name))? {
                out.insert(view.to_string(), stored);
            }
        }
        Ok(out)
    }

    /// Decodes a hash of the previous layout (unprefixed fields, one view per hash).
    pub fn decode_legacy<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Self>, DecodeError> {
        Self::decode_fields(fields, str::to_string)
    }

    /// Decodes unprefixed fields; `full_name` names a field in errors.
    fn decode_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
        full_name: impl Fn(&str) -> String,
    ) -> Result<Option<Self>, DecodeError> {
        let mut version = None;
        let mut event_time = None;
        let mut values = BTreeMap::new();
        let mut any = false;
        for (name, text) in fields {
            any = true;
            match name {
                VERSION => version = decode_version(text),
                EVENT_TIME => event_time = text.parse::<i64>().ok(),
                _ => {
                    let value =
                        Value::from_json_str(text).ok_or_else(|| DecodeError::BadValue {
                            field: full_name(name),
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
            version: version.ok_or_else(|| DecodeError::BadMetadata(full_name(VERSION)))?,
            event_time_ms: event_time
                .ok_or_else(|| DecodeError::BadMetadata(full_name(EVENT_TIME)))?,
            values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> ViewStorage {
        ViewStorage {
            entity_type: "user".into(),
            ttl_ms: 3_600_000,
        }
    }

    #[test]
    fn keys_and_fields_split_back_even_when_entities_contain_colons() {
        let key = entity_key("user", "tenant:42");
        assert_eq!(key, "fe:user:tenant:42");
        assert_eq!(parse_entity_key(&key), Some(("user", "tenant:42")));
        assert_eq!(parse_entity_key("fv:x:y"), None);
        assert_eq!(
            parse_field(&field("user_click_stats", "_version")),
            Some(("user_click_stats", "_version"))
        );
        let legacy = LegacyKey::key("user_click_stats", "tenant:42");
        assert_eq!(
            LegacyKey::parse(&legacy),
            Some(LegacyKey {
                view: "user_click_stats",
                entity_id: "tenant:42"
            })
        );
        assert_eq!(LegacyKey::parse(&key), None);
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
        assert_eq!(update.key(&storage()), "fe:user:1");
        let args = update.script_args(&storage(), Writer::Processor);
        assert_eq!(
            args[..5],
            [
                "00000000000000000077",
                "1700000000000",
                "3600000",
                "processor",
                "v:"
            ]
        );
        let version_field = field("v", VERSION);
        let time_field = field("v", EVENT_TIME);
        let mut fields: Vec<(&str, &str)> = vec![
            (&version_field, &args[0]),
            (&time_field, &args[1]),
            ("other:_version", "1"),
            ("other:clicks", "{not json, but another view's}"),
        ];
        fields.extend(args[5..].chunks(2).map(|p| (p[0].as_str(), p[1].as_str())));
        let stored = StoredValues::decode("v", fields.clone()).unwrap().unwrap();
        assert_eq!(stored.version, 77);
        assert_eq!(stored.event_time_ms, 1_700_000_000_000);
        assert_eq!(stored.values, update.values);
        assert_eq!(StoredValues::decode("absent", fields.clone()), Ok(None));
        assert!(matches!(
            StoredValues::decode_all(fields),
            Err(DecodeError::BadValue { field, .. }) if field == "other:clicks"
        ));
    }

    #[test]
    fn decoding_reports_corrupt_fields_by_their_full_name() {
        assert_eq!(StoredValues::decode("v", []), Ok(None));
        let err = StoredValues::decode(
            "v",
            [
                ("v:_version", "1"),
                ("v:_event_time", "1"),
                ("v:x", "{oops"),
            ],
        );
        assert_eq!(
            err,
            Err(DecodeError::BadValue {
                field: "v:x".into(),
                text: "{oops".into()
            })
        );
        let err = StoredValues::decode("v", [("v:x", "1")]);
        assert_eq!(err, Err(DecodeError::BadMetadata("v:_version".into())));
        let legacy =
            StoredValues::decode_legacy([("_version", "5"), ("_event_time", "9"), ("x", "2")])
                .unwrap()
                .unwrap();
        assert_eq!(legacy.version, 5);
        assert_eq!(legacy.values["x"], Value::Long(2));
    }
}
