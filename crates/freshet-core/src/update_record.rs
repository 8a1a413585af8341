//! The records of the `feature_updates` topic: every value the processor serves, as it
//! publishes it, for anyone downstream (training sets read them back as history).

/// The Avro schema of records on the feature_updates topic. `values` holds each feature's
/// value as a JSON scalar (`3`, `2.5`, `null`), as Redis does.
pub const FEATURE_UPDATE_SCHEMA: &str = r#"{
  "type": "record", "name": "FeatureUpdate", "namespace": "dev.freshet.updates",
  "doc": "The values of one entity's features in one view, as of a version.",
  "fields": [
    {"name": "view", "type": "string"},
    {"name": "entity", "type": "string"},
    {"name": "version", "type": "long", "doc": "Offset + 1 of the input record that last changed these values."},
    {"name": "event_time", "type": "long", "doc": "The partition's largest event time at that record, epoch ms."},
    {"name": "values", "type": {"type": "map", "values": "string"}, "doc": "Feature name to its value as a JSON scalar."},
    {"name": "windows", "type": {"type": "array", "items": {"type": "record", "name": "ServedWindow",
      "fields": [{"name": "group", "type": "string"}, {"name": "start", "type": "long"}, {"name": "end", "type": "long"}]}}}
  ]
}"#;
