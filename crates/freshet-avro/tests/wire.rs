//! Records written by the encoder are the Confluent wire format as schema_registry_converter
//! reads it, and resolve from an older writer schema to a newer reader schema.

use apache_avro::types::Value;
use apache_avro::Schema;
use freshet_avro::{DecodeError, WireDecoder, WireEncoder};
use freshet_testkit::Registry;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde::Serialize;

const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"},{"name":"kind","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"},{"name":"kind","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;

#[derive(Serialize)]
struct E1 {
    id: i64,
    kind: &'static str,
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_records_decode_with_the_converter_and_resolve_to_a_newer_reader() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let encoder = WireEncoder::new(&registry.url().into(), "t", Some(V1));
    let bytes = encoder
        .encode(&E1 {
            id: 7,
            kind: "click",
        })
        .await
        .unwrap();
    assert_eq!(bytes[0], 0, "magic byte");

    let converter = AvroDecoder::new(SrSettings::new(registry.url()));
    let decoded = converter.decode(Some(&bytes)).await.unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("id".into(), Value::Long(7)),
            ("kind".into(), Value::String("click".into()))
        ])
    );

    let decoder = WireDecoder::new(&registry.url().into(), Schema::parse_str(V2).unwrap());
    let resolved = decoder.decode(Some(&bytes)).await.unwrap();
    assert_eq!(
        resolved.value,
        Value::Record(vec![
            ("id".into(), Value::Long(7)),
            ("kind".into(), Value::String("click".into())),
            ("note".into(), Value::Union(0, Box::new(Value::Null))),
        ])
    );

    assert_eq!(decoder.decode(None).await, Err(DecodeError::Empty));
    assert_eq!(
        decoder.decode(Some(b"{\"json\":1}")).await,
        Err(DecodeError::NotWireFormat)
    );
    assert!(matches!(
        decoder.decode(Some(&[0, 0, 0, 0, 99, 2])).await,
        Err(DecodeError::UnknownSchema { id: 99, .. })
    ));
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() - 2);
    assert!(matches!(
        decoder.decode(Some(&truncated)).await,
        Err(DecodeError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_registration_an_unknown_subject_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let encoder = WireEncoder::new(&registry.url().into(), "missing", None);
    let err = encoder
        .encode(&E1 { id: 1, kind: "x" })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing-value"), "{err}");
}
