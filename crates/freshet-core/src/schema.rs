//! The fields of a source's Avro record schema, as the validator and compilers need them.
//!
//! Parsing is done by `apache-avro`; this module only flattens the top-level record into
//! named, typed fields. Nested records, arrays and maps are kept as [`FieldKind::Other`]:
//! they can be carried through but not aggregated or filtered on.

use crate::value::ValueType;
use apache_avro::schema::{Schema, UnionSchema};

/// One top-level field of an event record.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaField {
    pub name: String,
    pub kind: FieldKind,
    /// The Avro type is a union with `null`.
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Scalar(ValueType),
    Other,
}

impl SchemaField {
    pub fn value_type(&self) -> Option<ValueType> {
        match self.kind {
            FieldKind::Scalar(t) => Some(t),
            FieldKind::Other => None,
        }
    }
}

/// An event schema: its full Avro text (what is registered with the schema registry) and
/// its top-level fields.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The record's full name, e.g. `dev.freshet.events.UserEvent`.
    pub full_name: String,
    /// The schema as parsed by apache-avro, for encoding and decoding.
    pub avro: Schema,
    /// The schema's canonical JSON text.
    pub json: String,
    pub fields: Vec<SchemaField>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not a valid Avro schema: {0}")]
    Invalid(String),
    #[error("the schema must be an Avro record, found {0}")]
    NotARecord(String),
}

impl EventSchema {
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let avro = Schema::parse_str(text).map_err(|e| SchemaError::Invalid(e.to_string()))?;
        let Schema::Record(record) = &avro else {
            return Err(SchemaError::NotARecord(format!("{:?}", avro_kind(&avro))));
        };
        let fields = record
            .fields
            .iter()
            .map(|f| {
                let (kind, nullable) = classify(&f.schema);
                SchemaField {
                    name: f.name.clone(),
                    kind,
                    nullable,
                }
            })
            .collect();
        Ok(Self {
            full_name: record.name.fullname(None),
            json: avro.canonical_form(),
            avro,
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<&SchemaField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name.as_str()).collect()
    }
}

fn avro_kind(schema: &Schema) -> String {
    format!("{:?}", apache_avro::schema::SchemaKind::from(schema)).to_lowercase()
}

fn classify(schema: &Schema) -> (FieldKind, bool) {
    match schema {
        Schema::Union(u) => classify_union(u),
        other => (scalar_kind(other), false),
    }
}

fn classify_union(u: &UnionSchema) -> (FieldKind, bool) {
    let variants = u.variants();
    let non_null: Vec<&Schema> = variants
        .iter()
        .filter(|s| !matches!(s, Schema::Null))
        .collect();
    let nullable = non_null.len() < variants.len();
    match non_null.as_slice() {
        [single] => (scalar_kind(single), nullable),
        _ => (FieldKind::Other, nullable),
    }
}

fn scalar_kind(schema: &Schema) -> FieldKind {
    FieldKind::Scalar(match schema {
        Schema::Boolean => ValueType::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => ValueType::Int,
        Schema::Long
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimeMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => ValueType::Long,
        Schema::Float => ValueType::Float,
        Schema::Double => ValueType::Double,
        Schema::String | Schema::Enum(_) | Schema::Uuid(_) => ValueType::String,
        _ => return FieldKind::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
        {"name":"user_id","type":"long"},
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["a","b"]}},
        {"name":"amount","type":["null","double"],"default":null},
        {"name":"tags","type":{"type":"array","items":"string"}}]}"#;

    #[test]
    fn flattens_top_level_fields_with_nullability() {
        let s = EventSchema::parse(EVENT).unwrap();
        assert_eq!(s.full_name, "t.E");
        assert_eq!(s.field_names(), ["user_id", "kind", "amount", "tags"]);
        assert_eq!(
            s.field("user_id").unwrap().value_type(),
            Some(ValueType::Long)
        );
        assert_eq!(
            s.field("kind").unwrap().value_type(),
            Some(ValueType::String)
        );
        let amount = s.field("amount").unwrap();
        assert_eq!(amount.value_type(), Some(ValueType::Double));
        assert!(amount.nullable);
        assert_eq!(s.field("tags").unwrap().kind, FieldKind::Other);
    }

    #[test]
    fn rejects_non_records_and_garbage() {
        assert!(matches!(
            EventSchema::parse(r#""long""#),
            Err(SchemaError::NotARecord(_))
        ));
        assert!(matches!(
            EventSchema::parse("{not json"),
            Err(SchemaError::Invalid(_))
        ));
    }
}
