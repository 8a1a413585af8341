//! Avro records in the Confluent wire format (magic byte 0, 4-byte schema id, Avro
//! binary), through a schema registry. The format itself and the registry calls are
//! schema_registry_converter's; this crate fixes how Freshet uses them, in one place:
//!
//! - [`WireEncoder`]: encodes with a given schema under a topic's value subject,
//!   registering the schema on first use (or, without auto-registration, with the
//!   subject's latest registered schema).
//! - [`WireDecoder`]: decodes any record whose writer schema is in the registry and
//!   resolves it to one reader schema, so consumers see every compatible version of an
//!   event (v1 and v2) in one shape.
//!
//! Transport (Kafka) is not in here: these types turn values into bytes and back.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    get_bytes_result, BytesResult, SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode the record with the registry's schema for subject {subject}: {reason}")]
    Encode { subject: String, reason: String },
}

/// Encodes values of one topic in the Confluent wire format.
pub struct WireEncoder {
    encoder: AvroEncoder,
    strategy: SubjectNameStrategy,
    subject: String,
}

impl WireEncoder {
    /// `schema`: the writer schema, registered under `{topic}-value` on first use; `None`
    /// to use the subject's latest registered schema and register nothing.
    pub fn new(registry_url: &str, topic: &str, schema: Option<&str>) -> Self {
        let strategy = match schema {
            Some(text) => SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_string(),
                false,
                SuppliedSchema::new(None, SchemaType::Avro, text.to_string()),
            ),
            None => SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false),
        };
        Self {
            encoder: AvroEncoder::new(SrSettings::new(registry_url.to_string())),
            strategy,
            subject: format!("{topic}-value"),
        }
    }

    pub async fn encode(&self, item: &impl Serialize) -> Result<Vec<u8>, EncodeError> {
        self.encoder
            .encode_struct(item, &self.strategy)
            .await
            .map_err(|e| EncodeError::Encode {
                subject: self.subject.clone(),
                reason: describe(&e),
            })
    }
}

fn describe(e: &schema_registry_converter::error::SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// Why a record could not be decoded. Each variant is a reason a dead-letter record can
/// carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record has no value")]
    Empty,
    #[error("not in the Confluent wire format (expected magic byte 0 and a 4-byte schema id)")]
    NotWireFormat,
    #[error("writer schema {id} could not be fetched from the registry: {reason}")]
    UnknownSchema { id: u32, reason: String },
    #[error("writer schema {id} cannot be resolved to the reader schema: {reason}")]
    Incompatible { id: u32, reason: String },
    #[error("the Avro payload does not match writer schema {id}: {reason}")]
    Corrupt { id: u32, reason: String },
}

/// Decodes wire-format records and resolves them to one reader schema.
pub struct WireDecoder {
    decoder: AvroDecoder,
    reader: Schema,
}

/// A decoded record and the id of the schema it was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub writer_schema_id: u32,
    pub value: Value,
}

impl WireDecoder {
    pub fn new(registry_url: &str, reader: Schema) -> Self {
        Self {
            decoder: AvroDecoder::new(SrSettings::new(registry_url.to_string())),
            reader,
        }
    }

    pub fn reader_schema(&self) -> &Schema {
        &self.reader
    }

    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Decoded, DecodeError> {
        let (id, payload) = match get_bytes_result(bytes) {
            BytesResult::Null => return Err(DecodeError::Empty),
            BytesResult::Invalid(_) => return Err(DecodeError::NotWireFormat),
            BytesResult::Valid(id, payload) => (id, payload),
        };
        let writer = self
            .decoder
            .get_schema(id)
            .await
            .map_err(|e| DecodeError::UnknownSchema {
                id,
                reason: describe(&e),
            })?;
        let datum_reader = GenericDatumReader::builder(&writer.parsed)
            .reader_schema(&self.reader)
            .build()
            .map_err(|e| DecodeError::Incompatible {
                id,
                reason: e.to_string(),
            })?;
        let mut slice = payload;
        let value = datum_reader
            .read_value(&mut slice)
            .map_err(|e| DecodeError::Corrupt {
                id,
                reason: e.to_string(),
            })?;
        if !slice.is_empty() {
            return Err(DecodeError::Corrupt {
                id,
                reason: format!("{} bytes left over after the record", slice.len()),
            });
        }
        Ok(Decoded {
            writer_schema_id: id,
            value,
        })
    }
}
