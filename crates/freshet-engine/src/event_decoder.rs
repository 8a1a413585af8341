//! Source records to engine [`Event`]s.
//!
//! The general way decodes a record into Avro `Value`s, resolves them to the reader schema
//! and collects the fields ([`into_event`], which backfill uses too). That cost the reading
//! thread more than a bare consumer spends on a record several times over, so records whose
//! writer schema's read fields are all scalars take a shorter way: they are deserialised
//! straight from the bytes with the writer schema, field by field (fields the reader does
//! not read are skipped), and a [`Plan`] built once per writer schema resolves them to the
//! reader schema (fields the writer lacks take the reader's default; longs read as doubles
//! become doubles). Both ways give the same event; `tests` checks that for every scalar
//! type, missing fields and promotions, and `tests/event_decoder.rs` through a registry.
//! A schema whose sound records the short way cannot read (an enum, say) takes the
//! general way from its first record on.

use crate::{shared_names, EntityId, Event, FastMap, Fields};
use apache_avro::schema::RecordField;
use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use freshet_avro::WireDecoder;
use freshet_core::Value;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::future::Future;
use std::pin::Pin;

/// Why a record is not an event. [`DecodeError::is_transient`] tells the one case that says
/// nothing about the record (the registry could not be asked); every other case is a fact
/// about the record, the reason its dead-letter record carries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not readable as Avro in the wire format: bad magic byte, truncated, not valid for
    /// its writer schema, a schema id the registry does not have, or the registry could
    /// not be asked.
    #[error(transparent)]
    Wire(#[from] freshet_avro::DecodeError),
    #[error("the record is not an Avro record")]
    NotARecord,
    #[error("entity key field `{field}` is {found}, not a string or integer")]
    EntityKey { field: String, found: String },
    #[error("event time field `{field}` is {found}, not an integer")]
    EventTime { field: String, found: String },
}

impl DecodeError {
    /// The registry could not be asked: the record may be sound, and must be read again
    /// later rather than dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::Wire(e) if e.is_transient())
    }
}

/// A decode in progress ([`EventDecoder::decode_now`]).
pub type DecodeFuture<'a> = dyn Future<Output = Result<Event, DecodeError>> + 'a;

/// Decodes one source's records into events.
pub struct EventDecoder {
    wire: WireDecoder,
    entity_field: String,
    time_field: String,
    /// Per writer schema id: its plan, or `None` when its records take the general way.
    plans: FastMap<u32, Option<Plan>>,
}

impl EventDecoder {
    pub fn new(wire: WireDecoder, entity_field: &str, time_field: &str) -> Self {
        Self {
            wire,
            entity_field: entity_field.to_string(),
            time_field: time_field.to_string(),
            plans: FastMap::default(),
        }
    }

    /// The record's event, or why it cannot be one.
    pub async fn decode(&mut self, payload: Option<&[u8]>) -> Result<Event, DecodeError> {
        let known_without_plan = freshet_avro::writer_schema_id(payload)
            .is_some_and(|id| matches!(self.plans.get(&id), Some(None)));
        if known_without_plan {
            return self.decode_generally(payload).await;
        }
        let short_way_failed = match self.wire.decode_as::<Written>(payload).await {
            Ok(written) => {
                let reader = self.wire.reader_schema();
                let plan = self
                    .plans
                    .entry(written.writer_schema_id)
                    .or_insert_with(|| Plan::new(written.writer_schema, reader));
                if let Some(plan) = plan {
                    return event(
                        plan.fields(written.value),
                        &self.entity_field,
                        &self.time_field,
                    );
                }
                false
            }
            // The registry could not be asked: the general way would ask it again.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(_) => true,
        };
        // The general way, which also names what is wrong with a record that failed above.
        let decoded = self.decode_generally(payload).await;
        if let (true, Ok(_), Some(id)) = (
            short_way_failed,
            &decoded,
            freshet_avro::writer_schema_id(payload),
        ) {
            // A sound record the short way could not read: its schema's records all go the
            // general way from now on, rather than each being read twice.
            self.plans.insert(id, None);
        }
        decoded
    }

    /// [`decode`](Self::decode) from a plain thread: the event at once when its first poll
    /// is ready, as it is for a record whose writer schema is known (no I/O); otherwise
    /// `block_on` runs the decode to its end (a writer schema fetched from the registry).
    /// Call it inside a runtime's context, so a first poll that starts I/O finds its
    /// reactor. Blocking on every record cost a reading thread a tenth of its time in
    /// entering and leaving the runtime.
    pub fn decode_now(
        &mut self,
        payload: Option<&[u8]>,
        block_on: impl FnOnce(Pin<&mut DecodeFuture<'_>>) -> Result<Event, DecodeError>,
    ) -> Result<Event, DecodeError> {
        let mut future: Pin<&mut DecodeFuture<'_>> = std::pin::pin!(self.decode(payload));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => block_on(future),
        }
    }

    async fn decode_generally(&self, payload: Option<&[u8]>) -> Result<Event, DecodeError> {
        let decoded = self.wire.decode(payload).await?;
        into_event(decoded.value, &self.entity_field, &self.time_field)
    }
}

/// Where a reader field's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum FieldSource {
    /// The writer's field at this position; `to_double` when the reader reads its longs
    /// as doubles.
    Written { at: usize, to_double: bool },
    /// The writer lacks the field: the reader's default.
    Default(Value),
}

/// How records of one writer schema become the reader schema's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The reader's field names, shared by the plans of all writer schemas.
    names: &'static [String],
    sources: Vec<FieldSource>,
    /// The writer's fields are the reader's, in the same order and needing no promotion
    /// (records written with the reader schema itself): the written values are the
    /// fields as they are, without a second list built and the first one freed.
    as_written: bool,
}

impl Plan {
    /// `None` unless both schemas are records, the reader's fields and the writer's fields
    /// it reads are all scalars (or unions of them): the kinds whose resolution the plan
    /// knows. Writer fields the reader does not read may be of any kind; they are skipped.
    /// Other schemas take the general way.
    pub fn new(writer: &Schema, reader: &Schema) -> Option<Plan> {
        let (Schema::Record(writer), Schema::Record(reader)) = (writer, reader) else {
            return None;
        };
        let read = |w: &&RecordField| reader.fields.iter().any(|f| answers_to(f, &w.name));
        if !writer
            .fields
            .iter()
            .filter(read)
            .all(|f| is_scalar(&f.schema))
            || !reader.fields.iter().all(|f| is_scalar(&f.schema))
        {
            return None;
        }
        let sources = reader
            .fields
            .iter()
            .map(|field| {
                let written = writer
                    .fields
                    .iter()
                    .position(|w| answers_to(field, &w.name));
                Some(match written {
                    Some(at) => FieldSource::Written {
                        at,
                        to_double: reads_longs_as_doubles(&field.schema),
                    },
                    None => FieldSource::Default(default_value(field)?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        // A long is promoted only where the writer can write one.
        let as_written = writer.fields.len() == sources.len()
            && sources.iter().enumerate().all(|(i, source)| match source {
                FieldSource::Written { at, to_double } => {
                    *at == i && !(*to_double && writes_integers(&writer.fields[i].schema))
                }
                FieldSource::Default(_) => false,
            });
        Some(Plan {
            names: shared_names(
                &reader
                    .fields
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>(),
            ),
            sources,
            as_written,
        })
    }

    fn fields(&self, Written(mut written): Written) -> Fields {
        if self.as_written {
            return Fields::with_shared_names(self.names, written);
        }
        let values = self
            .sources
            .iter()
            .map(|source| match source {
                FieldSource::Written { at, to_double } => {
                    match std::mem::replace(&mut written[*at], Value::Null) {
                        Value::Long(n) if *to_double => Value::Double(n as f64),
                        value => value,
                    }
                }
                FieldSource::Default(value) => value.clone(),
            })
            .collect();
        Fields::with_shared_names(self.names, values)
    }
}

/// Whether a reader field reads the writer field named `name`: by name only, as
/// apache-avro's resolution does (it does not apply the reader's aliases).
fn answers_to(field: &RecordField, name: &str) -> bool {
    field.name == name
}

/// The kinds of field the plan reads as the general way's `scalar` does.
fn is_scalar(schema: &Schema) -> bool {
    match schema {
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::String
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => true,
        Schema::Union(union) => union.variants().iter().all(is_scalar),
        _ => false,
    }
}

/// Whether a field of this schema can hold an integer.
fn writes_integers(schema: &Schema) -> bool {
    match schema {
        Schema::Union(union) => union.variants().iter().any(is_integral),
        other => is_integral(other),
    }
}

fn is_floating(schema: &Schema) -> bool {
    matches!(schema, Schema::Float | Schema::Double)
}

fn is_integral(schema: &Schema) -> bool {
    matches!(
        schema,
        Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
    )
}

/// A reader field that takes floating-point numbers but no integers resolves a written
/// integer to a double.
fn reads_longs_as_doubles(schema: &Schema) -> bool {
    let variants: &[Schema] = match schema {
        Schema::Union(union) => union.variants(),
        other => std::slice::from_ref(other),
    };
    variants.iter().any(is_floating) && !variants.iter().any(is_integral)
}

/// The reader's default for a field the writer lacks, typed by the field's schema (a
/// union's default is of its first branch); `None` without one.
fn default_value(field: &RecordField) -> Option<Value> {
    let json = field.default.as_ref()?;
    let schema = match &field.schema {
        Schema::Union(union) => union.variants().first()?,
        other => other,
    };
    Some(match (schema, json) {
        (_, serde_json::Value::Null) => Value::Null,
        (Schema::Boolean, serde_json::Value::Bool(b)) => Value::Bool(*b),
        (s, serde_json::Value::Number(n)) if is_integral(s) => Value::Long(n.as_i64()?),
        (s, serde_json::Value::Number(n)) if is_floating(s) => Value::Double(n.as_f64()?),
        (Schema::String, serde_json::Value::String(text)) => Value::String(text.clone()),
        _ => return None,
    })
}

/// The fields of a decoded record as scalar values.
fn scalar(v: AvroValue) -> Value {
    match v {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(b) => Value::Bool(b),
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => Value::Long(i as i64),
        AvroValue::Long(i)
        | AvroValue::TimeMicros(i)
        | AvroValue::TimestampMillis(i)
        | AvroValue::TimestampMicros(i)
        | AvroValue::LocalTimestampMillis(i)
        | AvroValue::LocalTimestampMicros(i) => Value::Long(i),
        AvroValue::Float(f) => Value::Double(f as f64),
        AvroValue::Double(f) => Value::Double(f),
        AvroValue::String(s) | AvroValue::Enum(_, s) => Value::String(s),
        AvroValue::Union(_, inner) => scalar(*inner),
        _ => Value::Null,
    }
}

/// Turns a decoded record into an event, or says why it cannot be one.
pub fn to_event(
    value: &AvroValue,
    entity_field: &str,
    time_field: &str,
) -> Result<Event, DecodeError> {
    into_event(value.clone(), entity_field, time_field)
}

/// [`to_event`], taking the record apart instead of copying it: the general way.
pub fn into_event(
    value: AvroValue,
    entity_field: &str,
    time_field: &str,
) -> Result<Event, DecodeError> {
    let AvroValue::Record(fields) = value else {
        return Err(DecodeError::NotARecord);
    };
    let fields: Fields = fields.into_iter().map(|(k, v)| (k, scalar(v))).collect();
    event(fields, entity_field, time_field)
}

/// An event from a record's fields (either way): its entity and event time checked.
fn event(fields: Fields, entity_field: &str, time_field: &str) -> Result<Event, DecodeError> {
    let entity = match fields.get(entity_field) {
        Some(Value::String(s)) => EntityId::from(s.as_str()),
        Some(Value::Long(i)) => EntityId::from(itoa::Buffer::new().format(*i)),
        other => {
            return Err(DecodeError::EntityKey {
                field: entity_field.to_string(),
                found: format!("{other:?}"),
            })
        }
    };
    let time = match fields.get(time_field) {
        Some(Value::Long(t)) => *t,
        other => {
            return Err(DecodeError::EventTime {
                field: time_field.to_string(),
                found: format!("{other:?}"),
            })
        }
    };
    Ok(Event {
        entity,
        time,
        fields,
    })
}

/// A record's top-level fields as written, in the writer's order; anything but a scalar
/// reads as null (plans only exist for schemas without such fields).
#[derive(Debug, Default)]
pub struct Written(Vec<Value>);

impl<'de> de::Deserialize<'de> for Written {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Written;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an Avro record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Written, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while map.next_key::<FieldName>()?.is_some() {
            values.push(map.next_value::<WrittenScalar>()?.0);
        }
        Ok(Written(values))
    }
}

/// A field's name, skipped: fields are taken by position.
struct FieldName;

impl<'de> de::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl<'de> Visitor<'de> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, _: &str) -> Result<FieldName, E> {
        Ok(FieldName)
    }
}

struct WrittenScalar(Value);

impl<'de> de::Deserialize<'de> for WrittenScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ScalarVisitor)
            .map(WrittenScalar)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an Avro value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Long(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Null, Value::Long))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Double(v))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Value, E> {
        Ok(Value::Double(v as f64))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // A nested record's keys are field names, which apache-avro hands out only as
        // identifiers (skipping them as `IgnoredAny` failed every record of such a schema).
        while map.next_key::<FieldName>()?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::reader::datum::GenericDatumReader;

    const READER: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "user", "type": "long"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "action", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": null},
        {"name": "weight", "type": "double"},
        {"name": "flag", "type": "boolean", "default": true},
        {"name": "count", "type": "long", "default": 7},
        {"name": "ratio", "type": "float", "default": 1},
        {"name": "label", "type": ["string", "null"], "default": "none"},
        {"name": "renamed", "type": "int", "aliases": ["old_name"], "default": 0}
    ]}"#;

    /// Lacks `flag`, `count`, `ratio` and `label`; writes `weight` as an int, `user` as an
    /// int, and `renamed` under an alias; has a field the reader does not know.
    const WRITER: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "extra", "type": ["null", "string"]},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user", "type": "int"},
        {"name": "old_name", "type": "int"},
        {"name": "amount", "type": ["null", "double"]},
        {"name": "action", "type": "string"},
        {"name": "weight", "type": "int"}
    ]}"#;

    fn written(extra: Option<&str>, amount: Option<f64>) -> AvroValue {
        let union = |v: Option<AvroValue>| match v {
            None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            Some(v) => AvroValue::Union(1, Box::new(v)),
        };
        AvroValue::Record(vec![
            (
                "extra".into(),
                union(extra.map(|e| AvroValue::String(e.into()))),
            ),
            ("ts".into(), AvroValue::TimestampMillis(1_700_000_000_123)),
            ("user".into(), AvroValue::Int(42)),
            ("old_name".into(), AvroValue::Int(-3)),
            ("amount".into(), union(amount.map(AvroValue::Double))),
            ("action".into(), AvroValue::String("click".into())),
            ("weight".into(), AvroValue::Int(5)),
        ])
    }

    fn encode(schema: &Schema, record: AvroValue) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap()
    }

    /// The event both ways; the general one resolves through apache-avro.
    fn both_ways(
        writer: &Schema,
        reader: &Schema,
        record: AvroValue,
        (entity_field, time_field): (&str, &str),
    ) -> (Event, Event) {
        let bytes = encode(writer, record);
        let general = GenericDatumReader::builder(writer)
            .reader_schema(reader)
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap();
        let general = into_event(general, entity_field, time_field).unwrap();
        let plain: Written = GenericDatumReader::builder(writer)
            .build()
            .unwrap()
            .read_deser(&mut bytes.as_slice())
            .unwrap();
        let plan = Plan::new(writer, reader).expect("scalar fields have a plan");
        let short = event(plan.fields(plain), entity_field, time_field).unwrap();
        (general, short)
    }

    #[test]
    fn the_short_way_gives_the_event_the_general_way_gives() {
        let writer = Schema::parse_str(WRITER).unwrap();
        let reader = Schema::parse_str(READER).unwrap();
        for (extra, amount) in [(None, None), (Some("x"), Some(12.5))] {
            let (general, short) =
                both_ways(&writer, &reader, written(extra, amount), ("user", "ts"));
            assert_eq!(short, general);
        }
        let (_, short) = both_ways(&writer, &reader, written(None, Some(2.0)), ("user", "ts"));
        assert_eq!(short.entity, "42");
        assert_eq!(short.time, 1_700_000_000_123);
        let field = |name| short.fields.get(name).cloned();
        assert_eq!(
            field("weight"),
            Some(Value::Double(5.0)),
            "int read as double"
        );
        assert_eq!(field("count"), Some(Value::Long(7)), "the reader's default");
        assert_eq!(field("ratio"), Some(Value::Double(1.0)));
        assert_eq!(field("label"), Some(Value::String("none".into())));
        assert_eq!(field("flag"), Some(Value::Bool(true)));
        assert_eq!(
            field("renamed"),
            Some(Value::Long(0)),
            "aliases are not applied, as in the general way"
        );
        assert_eq!(field("amount"), Some(Value::Double(2.0)));
        assert_eq!(field("extra"), None, "not a reader field");
    }

    #[test]
    fn the_shipped_event_schemas_take_the_short_way_with_the_same_events() {
        let v1 = Schema::parse_str(include_str!("../../../features/schemas/user_event.v1.avsc"))
            .unwrap();
        let v2 = Schema::parse_str(include_str!("../../../features/schemas/user_event.v2.avsc"))
            .unwrap();
        let record = |session: Option<&str>| {
            let mut fields = vec![
                ("user_id".to_string(), AvroValue::Long(9)),
                ("action_type".to_string(), AvroValue::String("view".into())),
                ("item_id".to_string(), AvroValue::Long(77)),
                (
                    "amount".to_string(),
                    AvroValue::Union(0, Box::new(AvroValue::Null)),
                ),
                ("timestamp".to_string(), AvroValue::Long(1_000)),
            ];
            if let Some(s) = session {
                fields.push((
                    "session_id".to_string(),
                    AvroValue::Union(1, Box::new(AvroValue::String(s.into()))),
                ));
            }
            AvroValue::Record(fields)
        };
        let mut names = Vec::new();
        assert!(
            Plan::new(&v2, &v2).unwrap().as_written,
            "records written with the reader schema are taken as written"
        );
        assert!(
            !Plan::new(&v1, &v2).unwrap().as_written,
            "v1 lacks session_id"
        );
        for (writer, session) in [(&v1, None), (&v2, Some("s-1"))] {
            let (general, short) =
                both_ways(writer, &v2, record(session), ("user_id", "timestamp"));
            assert_eq!(short, general);
            assert_eq!(
                short.fields.get("session_id"),
                Some(&session.map_or(Value::Null, |s| Value::String(s.into())))
            );
            names.push(short.fields.names().as_ptr());
        }
        assert_eq!(
            names[0], names[1],
            "v1 and v2 events share the reader's one list of names, so the engine locates \
             fields once, not each time the writer schema changes"
        );
    }

    #[test]
    fn other_than_scalar_fields_take_the_general_way_unless_the_reader_skips_them() {
        let reader = Schema::parse_str(READER).unwrap();
        let nested = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [
                {"name": "user", "type": "long"},
                {"name": "tags", "type": {"type": "array", "items": "string"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            Plan::new(&reader, &nested),
            None,
            "the reader reads an array"
        );
        let reads_tags = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [
                {"name": "user", "type": "long"},
                {"name": "tags", "type": ["null", "string"], "default": null}
            ]}"#,
        )
        .unwrap();
        assert_eq!(Plan::new(&nested, &reads_tags), None, "a read array");
        let skips_tags = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [{"name": "user", "type": "long"}]}"#,
        )
        .unwrap();
        assert!(Plan::new(&nested, &skips_tags).is_some(), "an unread array");
    }

    #[test]
    fn written_values_are_kept_as_they_are_only_when_no_field_needs_resolving() {
        let schema = |fields: &str| {
            Schema::parse_str(&format!(
                r#"{{"type": "record", "name": "E", "fields": [{fields}]}}"#
            ))
            .unwrap()
        };
        let long = r#"{"name": "n", "type": "long"}"#;
        let double = r#"{"name": "n", "type": ["null", "double"], "default": null}"#;
        let as_written = |w: &str, r: &str| Plan::new(&schema(w), &schema(r)).unwrap().as_written;
        assert!(as_written(double, double), "the reader schema itself");
        assert!(
            !as_written(long, double),
            "a long the reader reads as a double"
        );
        let plan = Plan::new(&schema(long), &schema(double)).unwrap();
        let fields = plan.fields(Written(vec![Value::Long(3)]));
        assert_eq!(fields.get("n"), Some(&Value::Double(3.0)));
        let two = format!("{long}, {}", r#"{"name": "m", "type": "string"}"#);
        assert!(
            !as_written(&two, long),
            "a written field the reader does not read"
        );
    }

    #[test]
    fn a_field_the_writer_lacks_without_a_reader_default_has_no_plan() {
        let reader = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [
                {"name": "user", "type": "long"},
                {"name": "ts", "type": "long"}
            ]}"#,
        )
        .unwrap();
        let writer = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [{"name": "user", "type": "long"}]}"#,
        )
        .unwrap();
        assert_eq!(Plan::new(&writer, &reader), None);
    }
}
