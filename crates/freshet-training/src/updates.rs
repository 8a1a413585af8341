//! History from the `feature_updates` topic: what the processor really published, read
//! back and looked up as of each spine row's time.

use crate::asof::{Answers, AsOf};
use crate::request::RequestedView;
use crate::spine::Spine;
use crate::{Progress, Stage, TrainingError};
use freshet_avro::WireDecoder;
use freshet_core::update_record::FEATURE_UPDATE_SCHEMA;
use freshet_core::Value;
use freshet_kafka::QuietEof;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the broker may send nothing while partitions are still open.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Where the published updates are.
#[derive(Debug, Clone)]
pub struct UpdatesTopic {
    pub brokers: String,
    pub registry: freshet_avro::Registry,
    pub topic: String,
}

/// What the topic held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Records read.
    pub read: u64,
    /// Updates of a requested view and a spine entity.
    pub used: u64,
    /// Records that are not feature updates (skipped, counted).
    pub unreadable: u64,
}

/// A record of the topic (`freshet_core::update_record`), deserialised straight from its
/// bytes with the schema it was written with (several times cheaper than Avro values,
/// which counted when every change is published). apache-avro matches the structs to the
/// records by name, and reads every field: it cannot skip one.
#[derive(serde::Deserialize)]
#[serde(rename = "FeatureUpdate")]
struct PublishedUpdate {
    view: String,
    entity: String,
    version: i64,
    event_time: i64,
    /// Feature name to its value as a JSON scalar.
    values: HashMap<String, String>,
    /// Read, not used.
    #[serde(default, rename = "windows")]
    _windows: Vec<PublishedWindow>,
}

#[derive(serde::Deserialize)]
#[serde(rename = "ServedWindow")]
struct PublishedWindow {
    #[serde(rename = "group")]
    _group: String,
    #[serde(rename = "start")]
    _start: i64,
    #[serde(rename = "end")]
    _end: i64,
}

/// Every published update of the requested views for the spine's entities: per entity,
/// per requested view, sorted by (event time, version), each version once.
pub struct History {
    per_entity: HashMap<String, Vec<Vec<AsOf>>>,
}

impl History {
    /// Keeps the updates of `entities` only.
    pub fn new<'a>(views: usize, entities: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            per_entity: entities
                .into_iter()
                .map(|e| (e.to_string(), vec![Vec::new(); views]))
                .collect(),
        }
    }

    /// Adds one update; false when its entity is not kept.
    pub fn add(&mut self, view: usize, entity: &str, update: AsOf) -> bool {
        match self.per_entity.get_mut(entity) {
            Some(views) => {
                views[view].push(update);
                true
            }
            None => false,
        }
    }

    /// Orders each (view, entity)'s updates; an update published twice (an epoch whose
    /// transaction was aborted and published again) is kept once.
    pub fn seal(&mut self) {
        for views in self.per_entity.values_mut() {
            for updates in views {
                updates.sort_by_key(|u| (u.event_time, u.version));
                updates.dedup_by_key(|u| (u.event_time, u.version));
            }
        }
    }

    /// The as-of lookup for every spine row.
    pub fn answer(&self, spine: &Spine, views: usize) -> Answers {
        let mut answers = Answers::unanswered(views, spine.rows());
        for (row, (entity, &time)) in spine.entities.iter().zip(&spine.times).enumerate() {
            let Some(per_view) = self.per_entity.get(entity) else {
                continue;
            };
            for (v, updates) in per_view.iter().enumerate() {
                let after = updates.partition_point(|u| u.event_time <= time);
                if after > 0 {
                    answers.per_view[v][row] = Some(updates[after - 1].clone());
                }
            }
        }
        answers
    }
}

/// Reads the topic from its beginning to each partition's end (as of the read) and keeps
/// the updates of `views` for the spine's entities.
pub async fn read(
    source: &UpdatesTopic,
    views: &[RequestedView],
    spine: &Spine,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<(History, UpdateStats), TrainingError> {
    let kafka_error = |context: &str| {
        let (brokers, context) = (source.brokers.clone(), context.to_string());
        move |e: KafkaError| TrainingError::Kafka {
            brokers,
            context,
            reason: e.to_string(),
        }
    };
    let mut config = freshet_kafka::client_config();
    config
        .set("bootstrap.servers", &source.brokers)
        .set("group.id", "freshet-training-set")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietEof> = freshet_kafka::keep_fetching(&mut config)
        .create_with_context(QuietEof)
        .map_err(kafka_error("cannot create a consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(&source.topic), Duration::from_secs(10))
        .map_err(kafka_error("cannot read the topic's partitions"))?;
    let partitions = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len() as i32);
    if partitions == 0 {
        return Err(TrainingError::NoTopic {
            topic: source.topic.clone(),
            brokers: source.brokers.clone(),
        });
    }
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for p in 0..partitions {
        assignment
            .add_partition_offset(&source.topic, p, Offset::Beginning)
            .map_err(kafka_error("cannot assign partitions"))?;
        // A hint for progress only: brokers like tansu cannot tell a partition's end.
        if let Ok((low, high)) =
            consumer.fetch_watermarks(&source.topic, p, Duration::from_secs(10))
        {
            total += (high - low).max(0) as u64;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_error("cannot assign partitions"))?;

    let schema = apache_avro::Schema::parse_str(FEATURE_UPDATE_SCHEMA)
        .expect("the feature update schema parses");
    let decoder = WireDecoder::new(&source.registry, schema);
    let view_index: HashMap<&str, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut history = History::new(views.len(), spine.entities.iter().map(String::as_str));
    let mut stats = UpdateStats::default();
    let mut open = vec![true; partitions as usize];
    let (mut last_record, mut last_progress) = (Instant::now(), Instant::now());
    let report = |stats: &UpdateStats, progress: &mut dyn FnMut(Progress)| {
        progress(Progress {
            stage: Stage::ReadingUpdates,
            done: stats.read,
            total: (total >= stats.read).then_some(total),
        })
    };
    while open.iter().any(|&o| o) {
        if stop.load(Ordering::Relaxed) {
            return Err(TrainingError::Interrupted);
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            report(&stats, progress);
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => message,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(o) = open.get_mut(p as usize) {
                    *o = false;
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(topic = %source.topic, error = %e, "consumer error");
                continue;
            }
            None => {
                if last_record.elapsed() > STALL_TIMEOUT {
                    return Err(TrainingError::Stalled {
                        topic: source.topic.clone(),
                        read: stats.read,
                    });
                }
                continue;
            }
        };
        last_record = Instant::now();
        stats.read += 1;
        let record = match decoder
            .decode_as::<PublishedUpdate>(message.payload())
            .await
            .map_err(|e| (e.is_transient(), e.to_string()))
            .and_then(|d| {
                let u = d.value;
                if u.view.is_empty() || u.version < 0 {
                    return Err((false, "no view or version".to_string()));
                }
                Ok(u)
            }) {
            Ok(record) => record,
            Err((true, reason)) => {
                return Err(TrainingError::Registry {
                    url: source.registry.to_string(),
                    reason,
                })
            }
            Err((false, e)) => {
                stats.unreadable += 1;
                if stats.unreadable <= 10 {
                    tracing::warn!(
                        topic = %source.topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        error = %e,
                        "not a feature update; skipped"
                    );
                }
                continue;
            }
        };
        let Some(&v) = view_index.get(record.view.as_str()) else {
            continue;
        };
        if !history.per_entity.contains_key(&record.entity) {
            continue;
        }
        let mut values = BTreeMap::new();
        for (name, text) in record.values {
            let value = Value::from_json_str(&text).unwrap_or(Value::String(text));
            values.insert(name, value);
        }
        let update = AsOf::from_map(
            &views[v],
            record.event_time,
            record.version.max(0) as u64,
            values,
        );
        if history.add(v, &record.entity, update) {
            stats.used += 1;
        }
    }
    report(&stats, progress);
    history.seal();
    Ok((history, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_record_with_a_window_deserialises_into_its_fields() {
        use apache_avro::types::Value as Avro;
        let schema = apache_avro::Schema::parse_str(FEATURE_UPDATE_SCHEMA).unwrap();
        let record = Avro::Record(vec![
            ("view".into(), Avro::String("v".into())),
            ("entity".into(), Avro::String("7".into())),
            ("version".into(), Avro::Long(3)),
            ("event_time".into(), Avro::Long(9)),
            (
                "values".into(),
                Avro::Map([("f".to_string(), Avro::String("2".into()))].into()),
            ),
            (
                "windows".into(),
                Avro::Array(vec![Avro::Record(vec![
                    ("group".into(), Avro::String("tumble_1m".into())),
                    ("start".into(), Avro::Long(0)),
                    ("end".into(), Avro::Long(60_000)),
                ])]),
            ),
        ]);
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap();
        let u: PublishedUpdate = reader.read_deser(&mut &bytes[..]).unwrap();
        assert_eq!(
            (u.view.as_str(), u.entity.as_str(), u.version, u.event_time),
            ("v", "7", 3, 9)
        );
        assert_eq!(
            u.values,
            HashMap::from([("f".to_string(), "2".to_string())])
        );
    }
}
