//! Source records through a real schema registry to engine events. Records of writer
//! schemas whose read fields are scalars take the short way (one with fields the reader
//! skips: an array and a nested record), others the general way (an enum, which the short
//! way cannot read); one decoder keeps them apart when they interleave on a topic.

use apache_avro::Schema;
use freshet_avro::DecodeError as WireError;
use freshet_avro::{WireDecoder, WireEncoder};
use freshet_core::Value;
use freshet_engine::event_decoder::{DecodeError, EventDecoder};
use freshet_engine::Event;
use freshet_testkit::Registry;
use serde::Serialize;

const READER: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "long"},
    {"name": "ts", "type": "long"},
    {"name": "kind", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null}
]}"#;

/// Scalars only, and without `amount`: the short way, with the reader's default.
const SCALAR_WRITER: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "long"},
    {"name": "ts", "type": "long"},
    {"name": "kind", "type": "string"}
]}"#;

/// Adds an array and a nested record the reader does not read: still the short way.
const NESTED_WRITER: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "long"},
    {"name": "ts", "type": "long"},
    {"name": "kind", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "device", "type": {"type": "record", "name": "Device", "fields": [
        {"name": "os", "type": "string"}
    ]}, "default": {"os": "unknown"}}
]}"#;

/// Adds an enum the reader does not read: the general way.
const ENUM_WRITER: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "long"},
    {"name": "ts", "type": "long"},
    {"name": "kind", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "channel", "type": {"type": "enum", "name": "Channel", "symbols": ["web", "app"]},
     "default": "web"}
]}"#;

#[derive(Serialize)]
struct Scalar {
    user: i64,
    ts: i64,
    kind: &'static str,
}

#[derive(Serialize)]
struct Device {
    os: &'static str,
}

#[derive(Serialize)]
struct Nested {
    user: i64,
    ts: i64,
    kind: &'static str,
    amount: Option<f64>,
    tags: Vec<&'static str>,
    device: Device,
}

#[derive(Serialize)]
enum Channel {
    #[serde(rename = "app")]
    App,
}

#[derive(Serialize)]
struct WithEnum {
    user: i64,
    ts: i64,
    kind: &'static str,
    amount: Option<f64>,
    channel: Channel,
}

fn field(event: &Event, name: &str) -> Option<Value> {
    event.fields.get(name).cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_of_three_writer_schemas_interleave_into_the_right_events() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let scalar = WireEncoder::new(&registry.url().into(), "events", Some(SCALAR_WRITER));
    let nested = WireEncoder::new(&registry.url().into(), "events", Some(NESTED_WRITER));
    let with_enum = WireEncoder::new(&registry.url().into(), "events", Some(ENUM_WRITER));
    let mut decoder = EventDecoder::new(
        WireDecoder::new(&registry.url().into(), Schema::parse_str(READER).unwrap()),
        "user",
        "ts",
    );

    // Twice round, so each writer schema is met both before and after its way is known.
    for round in 0..2i64 {
        let bytes = scalar
            .encode(&Scalar {
                user: 7 + round,
                ts: 1_000 + round,
                kind: "click",
            })
            .await
            .unwrap();
        let event = decoder.decode(Some(&bytes)).await.unwrap();
        assert_eq!(event.entity, (7 + round).to_string());
        assert_eq!(event.time, 1_000 + round);
        assert_eq!(field(&event, "kind"), Some(Value::String("click".into())));
        assert_eq!(
            field(&event, "amount"),
            Some(Value::Null),
            "the reader's default for a field the writer lacks"
        );

        let bytes = nested
            .encode(&Nested {
                user: 9,
                ts: 2_000 + round,
                kind: "purchase",
                amount: Some(12.5),
                tags: vec!["a", "b"],
                device: Device { os: "linux" },
            })
            .await
            .unwrap();
        let event = decoder.decode(Some(&bytes)).await.unwrap();
        assert_eq!(event.entity, "9");
        assert_eq!(event.time, 2_000 + round);
        assert_eq!(
            field(&event, "kind"),
            Some(Value::String("purchase".into()))
        );
        assert_eq!(field(&event, "amount"), Some(Value::Double(12.5)));
        assert_eq!(field(&event, "tags"), None, "not a reader field");
        assert_eq!(field(&event, "device"), None, "not a reader field");

        let bytes = with_enum
            .encode(&WithEnum {
                user: 11,
                ts: 3_000 + round,
                kind: "view",
                amount: Some(-1.5),
                channel: Channel::App,
            })
            .await
            .unwrap();
        let event = decoder.decode(Some(&bytes)).await.unwrap();
        assert_eq!(event.entity, "11");
        assert_eq!(event.time, 3_000 + round);
        assert_eq!(field(&event, "kind"), Some(Value::String("view".into())));
        assert_eq!(field(&event, "amount"), Some(Value::Double(-1.5)));
        assert_eq!(field(&event, "channel"), None, "not a reader field");
    }

    // A damaged record of either writer schema is refused with the reason, not misread.
    let scalar_record = scalar
        .encode(&Scalar {
            user: 1,
            ts: 1,
            kind: "view",
        })
        .await
        .unwrap();
    let nested_record = nested
        .encode(&Nested {
            user: 1,
            ts: 1,
            kind: "view",
            amount: None,
            tags: vec![],
            device: Device { os: "x" },
        })
        .await
        .unwrap();
    let enum_record = with_enum
        .encode(&WithEnum {
            user: 1,
            ts: 1,
            kind: "view",
            amount: None,
            channel: Channel::App,
        })
        .await
        .unwrap();
    for mut bytes in [scalar_record, nested_record, enum_record] {
        bytes.truncate(bytes.len() - 2);
        let error = decoder.decode(Some(&bytes)).await.unwrap_err();
        assert!(
            matches!(&error, DecodeError::Wire(WireError::Corrupt { .. })),
            "the reason names the damage: {error:?}"
        );
        assert!(error.to_string().contains("does not match writer schema"));
        assert!(!error.is_transient());
    }
    let error = decoder.decode(Some(b"not avro")).await.unwrap_err();
    assert_eq!(error, DecodeError::Wire(WireError::NotWireFormat));
    assert!(error.to_string().contains("wire format"), "{error}");
}

/// A registry that cannot be asked says nothing about a record: transient, to be retried.
/// One that answers that it lacks the schema (404) condemns the record.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_is_transient_and_an_unknown_schema_id_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let scalar = WireEncoder::new(&registry.url().into(), "events", Some(SCALAR_WRITER));
    let record = |user| Scalar {
        user,
        ts: 5,
        kind: "view",
    };
    let bytes = scalar.encode(&record(3)).await.unwrap();
    let mut decoder = EventDecoder::new(
        WireDecoder::new(&registry.url().into(), Schema::parse_str(READER).unwrap()),
        "user",
        "ts",
    );

    // An id the registry never gave out: 404, the record is bad.
    let mut unknown = bytes.clone();
    unknown[1..5].copy_from_slice(&4242u32.to_be_bytes());
    let error = decoder.decode(Some(&unknown)).await.unwrap_err();
    assert!(
        matches!(
            &error,
            DecodeError::Wire(WireError::UnknownSchema { id: 4242, .. })
        ),
        "{error:?}"
    );
    assert!(!error.is_transient());

    // The registry is down before the decoder has seen the schema: transient, every time.
    registry.stop();
    for _ in 0..2 {
        let error = decoder.decode(Some(&bytes)).await.unwrap_err();
        assert!(
            matches!(
                &error,
                DecodeError::Wire(WireError::RegistryUnavailable { .. })
            ),
            "{error:?}"
        );
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("unavailable"), "{error}");
    }

    // Back: the same record decodes (the failure was not remembered).
    registry.restart();
    let event = decoder.decode(Some(&bytes)).await.unwrap();
    assert_eq!(event.entity, "3");
    // Known schemas need no registry: down again, records of it still decode.
    registry.stop();
    let more = scalar.encode(&record(4)).await.unwrap();
    assert_eq!(decoder.decode(Some(&more)).await.unwrap().entity, "4");
}
