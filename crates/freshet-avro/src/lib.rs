//! Avro records in the Confluent wire format (magic byte 0, 4-byte schema id, Avro
//! binary), through a schema registry. The format itself and the registry calls are
//! schema_registry_converter's; this crate fixes how Freshet uses them, in one place:
//!
//! - [`WireEncoder`]: encodes with a given schema under a topic's value subject,
//!   registering the schema on first use (or, without auto-registration, with the
//!   subject's latest registered schema). The schema and its id are resolved once; each
//!   record is then serialised straight from the Rust value by apache-avro's schema-aware
//!   serialiser, which is several times cheaper than going through `Value`s.
//! - [`WireDecoder`]: decodes any record whose writer schema is in the registry and
//!   resolves it to one reader schema, so consumers see every compatible version of an
//!   event (v1 and v2) in one shape.
//!
//! - [`Registry`]: where the registry is and the credentials (basic auth or a bearer
//!   token) every request carries.
//!
//! Transport (Kafka) is not in here: these types turn values into bytes and back.

mod registry;

pub use registry::{Registry, RegistryAuth, RegistryError};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{get_schema_by_subject, SrSettings};
use schema_registry_converter::schema_registry_common::{
    get_bytes_result, BytesResult, SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode the record with the registry's schema for subject {subject}: {reason}")]
    Encode { subject: String, reason: String },
}

/// Encodes values of one topic in the Confluent wire format.
pub struct WireEncoder {
    settings: SrSettings,
    strategy: SubjectNameStrategy,
    subject: String,
    writer: tokio::sync::OnceCell<(u32, GenericDatumWriter<'static>)>,
}

/// The magic byte that starts every record of the Confluent wire format.
const MAGIC_BYTE: u8 = 0;

impl WireEncoder {
    /// `schema`: the writer schema, registered under `{topic}-value` on first use; `None`
    /// to use the subject's latest registered schema and register nothing.
    pub fn new(registry: &Registry, topic: &str, schema: Option<&str>) -> Self {
        let strategy = match schema {
            Some(text) => SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_string(),
                false,
                SuppliedSchema::new(None, SchemaType::Avro, text.to_string()),
            ),
            None => SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false),
        };
        Self {
            settings: registry.settings(ENCODER_REGISTRY_TIMEOUT),
            strategy,
            subject: format!("{topic}-value"),
            writer: tokio::sync::OnceCell::new(),
        }
    }

    /// The schema id and a writer for it, resolved through the registry once. A failure is
    /// not remembered: the next record tries again (the registry may come back).
    async fn writer(&self) -> Result<&(u32, GenericDatumWriter<'static>), EncodeError> {
        self.writer
            .get_or_try_init(|| async {
                let registered = get_schema_by_subject(&self.settings, &self.strategy)
                    .await
                    .map_err(|e| self.error(describe(&e)))?;
                let schema = Schema::parse_str(&registered.schema).map_err(|e| {
                    self.error(format!("the registered schema does not parse: {e}"))
                })?;
                // The writer borrows its schema for as long as the encoder lives; an encoder
                // lives as long as its producer, so the schema is kept for the process.
                let schema: &'static Schema = Box::leak(Box::new(schema));
                let writer = GenericDatumWriter::builder(schema)
                    .build()
                    .map_err(|e| self.error(e.to_string()))?;
                Ok((registered.id, writer))
            })
            .await
    }

    fn error(&self, reason: String) -> EncodeError {
        EncodeError::Encode {
            subject: self.subject.clone(),
            reason,
        }
    }

    pub async fn encode(&self, item: &impl Serialize) -> Result<Vec<u8>, EncodeError> {
        self.ready().await?.encode(item)
    }

    /// The encoder with its schema resolved, for encoding many records without awaiting
    /// per record.
    pub async fn ready(&self) -> Result<ReadyEncoder<'_>, EncodeError> {
        let (id, writer) = self.writer().await?;
        Ok(ReadyEncoder {
            id: *id,
            writer,
            encoder: self,
        })
    }
}

/// A [`WireEncoder`] whose schema is resolved: encoding no longer touches the registry.
pub struct ReadyEncoder<'a> {
    id: u32,
    writer: &'a GenericDatumWriter<'static>,
    encoder: &'a WireEncoder,
}

impl ReadyEncoder<'_> {
    pub fn encode(&self, item: &impl Serialize) -> Result<Vec<u8>, EncodeError> {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(MAGIC_BYTE);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        self.writer
            .write_ser(&mut bytes, item)
            .map_err(|e| self.encoder.error(e.to_string()))?;
        Ok(bytes)
    }
}

/// The error's text, with what to do about it when the registry refused the credentials.
fn describe(e: &schema_registry_converter::error::SRCError) -> String {
    let text = match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    };
    match answered_status(e).and_then(registry::refusal_hint) {
        Some(hint) => format!("{text}: {hint}"),
        None => text,
    }
}

/// Why a record could not be decoded. Every variant but [`DecodeError::RegistryUnavailable`]
/// is a fact about the record, a reason a dead-letter record can carry; that one is about
/// the registry, and the record may decode once it answers ([`DecodeError::is_transient`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record has no value")]
    Empty,
    #[error("not in the Confluent wire format (expected magic byte 0 and a 4-byte schema id)")]
    NotWireFormat,
    /// The registry answered that it has no schema with this id (404), or answered with
    /// something that is not a usable schema.
    #[error("writer schema {id} could not be fetched from the registry: {reason}")]
    UnknownSchema { id: u32, reason: String },
    /// The registry could not be asked: unreachable, timed out, or it answered with an
    /// error of its own (5xx, 429, 401/403). Nothing is known about the record yet.
    #[error(
        "the schema registry is unavailable; writer schema {id} could not be fetched: {reason}"
    )]
    RegistryUnavailable { id: u32, reason: String },
    #[error("writer schema {id} cannot be resolved to the reader schema: {reason}")]
    Incompatible { id: u32, reason: String },
    #[error("the Avro payload does not match writer schema {id}: {reason}")]
    Corrupt { id: u32, reason: String },
}

impl DecodeError {
    /// The registry could not be asked: the same record may decode later, so it must not be
    /// treated as bad.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable { .. })
    }
}

/// How long one registry request may take (connect and answer); schema_registry_converter's
/// default is 30 s, for which a reader would stand still.
const REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// An encoder asks once, before its first record: schema_registry_converter's default.
const ENCODER_REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP status the registry answered with, when the error says.
fn answered_status(e: &schema_registry_converter::error::SRCError) -> Option<u16> {
    let text = e.error.as_str();
    let at = text.find("failed with status ")? + "failed with status ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// A failed writer-schema fetch as a [`DecodeError`]: a registry that answered 404 does not
/// have the schema (the record is bad); anything that says nothing about the schema (no
/// connection, a timeout, 5xx, 429, 401/403) means the registry could not be asked.
fn fetch_error(id: u32, e: &schema_registry_converter::error::SRCError) -> DecodeError {
    let reason = describe(e);
    let transient = match answered_status(e) {
        Some(404) | Some(422) => false,
        Some(_) => true,
        // No answer at all (connection refused, timeout) is retriable; an answer that did
        // not parse as a schema is the registry's word.
        None => e.retriable,
    };
    if transient {
        DecodeError::RegistryUnavailable { id, reason }
    } else {
        DecodeError::UnknownSchema { id, reason }
    }
}

/// Decodes wire-format records and resolves them to one reader schema.
pub struct WireDecoder {
    decoder: AvroDecoder,
    reader: &'static Schema,
    /// The readers of each writer schema id, built once: building a resolving reader
    /// compares the two schemas, which costs more than decoding a small record.
    readers: std::sync::RwLock<std::collections::HashMap<u32, &'static WriterReaders>>,
}

/// The ways to read records written with one writer schema.
struct WriterReaders {
    writer: &'static Schema,
    /// Resolves to the reader schema; building it also proved the two compatible.
    resolving: GenericDatumReader<'static>,
    /// Reads with the writer schema alone, for serde.
    plain: GenericDatumReader<'static>,
}

/// A record deserialised with its writer schema (see [`WireDecoder::decode_as`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WriterDecoded<T> {
    pub writer_schema_id: u32,
    pub writer_schema: &'static Schema,
    pub value: T,
}

/// A decoded record and the id of the schema it was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub writer_schema_id: u32,
    pub value: Value,
}

impl WireDecoder {
    /// The reader schema and the resolving readers are kept for the life of the process
    /// (decoders live as long as their consumer; writer schemas are few).
    pub fn new(registry: &Registry, reader: Schema) -> Self {
        Self {
            decoder: AvroDecoder::new(registry.settings(REGISTRY_TIMEOUT)),
            reader: Box::leak(Box::new(reader)),
            readers: Default::default(),
        }
    }

    pub fn reader_schema(&self) -> &Schema {
        self.reader
    }

    async fn readers(&self, id: u32) -> Result<&'static WriterReaders, DecodeError> {
        if let Some(readers) = self.readers.read().expect("never poisoned").get(&id) {
            return Ok(readers);
        }
        let writer = self.decoder.get_schema(id).await.map_err(|e| {
            let error = fetch_error(id, &e);
            if error.is_transient() {
                // schema_registry_converter caches errors it does not call retriable (a
                // 500, say) for good: forget them, so the next try asks again.
                self.decoder.remove_errors_from_cache();
            }
            error
        })?;
        let writer: &'static Schema = Box::leak(Box::new(writer.parsed.clone()));
        let incompatible = |e: apache_avro::Error| DecodeError::Incompatible {
            id,
            reason: e.to_string(),
        };
        let resolving = GenericDatumReader::builder(writer)
            .reader_schema(self.reader)
            .build()
            .map_err(incompatible)?;
        let plain = GenericDatumReader::builder(writer)
            .build()
            .map_err(incompatible)?;
        let readers: &'static WriterReaders = Box::leak(Box::new(WriterReaders {
            writer,
            resolving,
            plain,
        }));
        self.readers
            .write()
            .expect("never poisoned")
            .insert(id, readers);
        Ok(readers)
    }

    /// Deserialises a record straight into `T` with its writer schema, which is several
    /// times cheaper than building and resolving Avro `Value`s. The writer schema must be
    /// compatible with the reader schema (checked once per writer schema, as in
    /// [`Self::decode`]), but `T` sees the record as written, field by field in the
    /// writer's order: resolving it to the reader schema (fields the writer lacks, numeric
    /// promotions) is up to the caller, who gets the writer schema for that.
    pub async fn decode_as<T: DeserializeOwned>(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<WriterDecoded<T>, DecodeError> {
        let (id, readers, value) = self
            .read(bytes, |readers, payload| readers.plain.read_deser(payload))
            .await?;
        Ok(WriterDecoded {
            writer_schema_id: id,
            writer_schema: readers.writer,
            value,
        })
    }

    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Decoded, DecodeError> {
        let (id, _, value) = self
            .read(bytes, |readers, payload| {
                readers.resolving.read_value(payload)
            })
            .await?;
        Ok(Decoded {
            writer_schema_id: id,
            value,
        })
    }

    /// Reads a wire-format record with `read`, which must use its payload up exactly.
    async fn read<T>(
        &self,
        bytes: Option<&[u8]>,
        read: impl FnOnce(&WriterReaders, &mut &[u8]) -> Result<T, apache_avro::Error>,
    ) -> Result<(u32, &'static WriterReaders, T), DecodeError> {
        let (id, mut payload) = wire_parts(bytes)?;
        let readers = self.readers(id).await?;
        let corrupt = |reason| DecodeError::Corrupt { id, reason };
        let value = read(readers, &mut payload).map_err(|e| corrupt(e.to_string()))?;
        if !payload.is_empty() {
            return Err(corrupt(format!(
                "{} bytes left over after the record",
                payload.len()
            )));
        }
        Ok((id, readers, value))
    }
}

/// The id of the writer schema a wire-format record names, if it is one.
pub fn writer_schema_id(bytes: Option<&[u8]>) -> Option<u32> {
    wire_parts(bytes).ok().map(|(id, _)| id)
}

/// The schema id and the Avro payload of a wire-format record.
fn wire_parts(bytes: Option<&[u8]>) -> Result<(u32, &[u8]), DecodeError> {
    match get_bytes_result(bytes) {
        BytesResult::Null => Err(DecodeError::Empty),
        BytesResult::Invalid(_) => Err(DecodeError::NotWireFormat),
        BytesResult::Valid(id, payload) => Ok((id, payload)),
    }
}
