//! Point-in-time training sets against a live pipeline: a seeded stream with late and
//! out-of-order events runs through two processors at once, one publishing each epoch's
//! values (the default) and one publishing every change (`--publish-changes all`); a spine
//! of (user, time) rows spread over the stream is answered from each one's published
//! updates and, recomputed, from the events. Answers from updates must equal an as-of
//! lookup this test computes itself from the published records. The recomputed answers
//! must equal those from every change on every row and feature, and those from epochs
//! wherever that processor published the change (elsewhere it published a later change of
//! the same epoch). Both processors leave the same values in Redis.

mod common;

use common::*;
use freshet_backfill::Input;
use freshet_core::definitions::Definitions;
use freshet_core::Value;
use freshet_producer::event::UserEvent;
use freshet_producer::simulate::Simulator;
use freshet_testkit::TestStack;
use freshet_training::updates::UpdatesTopic;
use freshet_training::{
    Answers, AsOf, History, HistoryStats, RequestedView, Spine, TrainingSetConfig,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;

/// A published update as this test reads it, independently of the training-set crate.
struct Published {
    version: u64,
    event_time: i64,
    values: BTreeMap<String, Value>,
}

/// Every record of the output topic by (view, entity), in the order published.
async fn published_by_key(
    stack: &TestStack,
    topic: &str,
) -> HashMap<(String, String), Vec<Published>> {
    let mut out: HashMap<(String, String), Vec<Published>> = HashMap::new();
    for record in published(stack, topic, PARTITIONS).await {
        let (view, entity, version) = record.key;
        let values = record
            .values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap()))
            .collect();
        out.entry((view, entity)).or_default().push(Published {
            version,
            event_time: record.event_time,
            values,
        });
    }
    out
}

/// The spine's answers from a deployment's published updates, after checking each one
/// against an as-of lookup computed here from the records themselves; with the records.
async fn answered_from_updates(
    stack: &TestStack,
    deployment: &Deployment,
    (defs, views, spine): (&Definitions, &[RequestedView], &Spine),
) -> (Answers, HashMap<(String, String), Vec<Published>>) {
    let updates = History::Updates(UpdatesTopic {
        brokers: stack.brokers(),
        registry: stack.registry(),
        topic: deployment.output_topic.clone(),
    });
    let stop = AtomicBool::new(false);
    let (answers, stats) =
        freshet_training::answer(defs, views, spine, &updates, &mut |_| {}, &stop)
            .await
            .unwrap();
    let HistoryStats::Updates(stats) = stats else {
        panic!()
    };
    assert_eq!(stats.unreadable, 0);
    let published = published_by_key(stack, &deployment.output_topic).await;
    let mut mismatches = Vec::new();
    let mut found = 0;
    for (v, view) in views.iter().enumerate() {
        for row in 0..spine.rows() {
            let (entity, time) = (&spine.entities[row], spine.times[row]);
            let expected = published
                .get(&(view.name.clone(), entity.clone()))
                .and_then(|updates| {
                    updates
                        .iter()
                        .filter(|u| u.event_time <= time)
                        .max_by_key(|u| (u.event_time, u.version))
                });
            let actual = answers.per_view[v][row].as_ref();
            let same = match (expected, actual) {
                (None, None) => true,
                (Some(e), Some(a)) => {
                    found += 1;
                    e.version == a.version
                        && e.event_time == a.event_time
                        && view
                            .all_features
                            .iter()
                            .zip(a.values.iter())
                            .all(|(name, value)| e.values.get(name) == Some(value))
                }
                _ => false,
            };
            if !same {
                mismatches.push(format!(
                    "{} {entity} at {time}: expected {:?}, got {actual:?}",
                    view.name,
                    expected.map(|e| (e.version, e.event_time, &e.values))
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}: {} of {} answers differ from the as-of lookup, e.g. {:?}",
        deployment.output_topic,
        mismatches.len(),
        spine.rows() * views.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(
        found > spine.rows(),
        "most rows find a value ({found} of {})",
        spine.rows() * views.len()
    );
    (answers, published)
}

#[tokio::test(flavor = "multi_thread")]
async fn training_sets_from_updates_and_from_events_give_what_was_served() {
    let events_count = env_or("FRESHET_TEST_TRAINING_EVENTS", 20_000);
    let spine_rows = env_or("FRESHET_TEST_TRAINING_ROWS", 10_000) as usize;
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let defs = definitions();

    // Live: both processors compute the views while the stream arrives at a steady rate,
    // so their epochs are cut as in production.
    let epochs = Deployment::new(dir.path(), "epochs", 0);
    let every = Deployment::new(dir.path(), "every", 1);
    let mut epochs_processor = epochs.start(&stack);
    let mut every_processor = every.start_with(&stack, &["--publish-changes", "all"]);
    let events: Vec<UserEvent> = Simulator::new(sim(23, 300))
        .unwrap()
        .take(events_count as usize)
        .collect();
    produce_events(&stack, events.iter().cloned(), events_count, 5_000.0, None).await;
    wait_for_events(&epochs, events_count).await;
    wait_for_events(&every, events_count).await;
    // A clean stop delivers every epoch.
    epochs_processor.terminate();
    every_processor.terminate();

    // Redis gets each epoch's last values either way: both hold the values every event
    // leaves.
    let expected = oracle(&defs, &input_events(&stack).await);
    for deployment in [&epochs, &every] {
        let redis = redis_values(&deployment.redis_url(&stack), expected.keys().cloned()).await;
        let diffs = differences(&expected, &redis, &defs);
        assert!(
            diffs.is_empty(),
            "{}: {} values in Redis differ from the oracle, e.g. {:?}",
            deployment.group,
            diffs.len(),
            &diffs[..diffs.len().min(5)]
        );
    }

    // The spine: users with events and some without, at times from before the first
    // event to past the click view's TTL after the last.
    let first = events.iter().map(|e| e.timestamp).min().unwrap();
    let last = events.iter().map(|e| e.timestamp).max().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let spine_path = dir.path().join("spine.csv");
    let mut spine_text = String::from("user_id,event_timestamp,label\n");
    for i in 0..spine_rows {
        let user = if i.is_multiple_of(50) {
            1_000_000 + i as i64
        } else {
            rng.random_range(1..=300)
        };
        // Most rows within the stream, some after it, up to past the click view's TTL.
        let time = if rng.random_bool(0.85) {
            rng.random_range(first - 60_000..last)
        } else {
            rng.random_range(last..last + 120 * 60_000)
        };
        spine_text.push_str(&format!("{user},{time},{}\n", i % 2));
    }
    std::fs::write(&spine_path, spine_text).unwrap();
    let spine = freshet_training::spine::read(&spine_path, "user_id", "event_timestamp").unwrap();
    assert_eq!(spine.rows(), spine_rows);
    let views = freshet_training::request::resolve(&defs, &[], &[]).unwrap();
    let stop = AtomicBool::new(false);

    // From the published updates of each.
    let (from_epochs, epochs_published) =
        answered_from_updates(&stack, &epochs, (&defs, &views, &spine)).await;
    let (from_every, every_published) =
        answered_from_updates(&stack, &every, (&defs, &views, &spine)).await;
    // Every change: each pair's records in the order of its changes, one per version,
    // the last one what Redis holds.
    for ((view, entity), records) in &every_published {
        assert!(
            records
                .windows(2)
                .all(|w| w[0].version < w[1].version && w[0].event_time <= w[1].event_time),
            "{view} {entity}: records out of order"
        );
        if let Some(values) = expected.get(&(view.clone(), entity.clone())) {
            let last = &records.last().unwrap().values;
            assert!(
                values
                    .iter()
                    .all(|(name, v)| last.get(name).is_some_and(|l| close(l, v))),
                "{view} {entity}: the last published {last:?}, the oracle {values:?}"
            );
        }
    }
    let count = |published: &HashMap<(String, String), Vec<Published>>| -> usize {
        published.values().map(Vec::len).sum()
    };
    let (epoch_records, every_records) = (count(&epochs_published), count(&every_published));
    assert!(
        every_records > epoch_records,
        "every change ({every_records} records) is more than each epoch's ({epoch_records})"
    );

    // Recomputed from the events by the engine.
    let recomputed = History::Events(Input::Kafka {
        brokers: stack.brokers(),
        registry: stack.registry(),
    });
    let (from_events, stats) =
        freshet_training::answer(&defs, &views, &spine, &recomputed, &mut |_| {}, &stop)
            .await
            .unwrap();
    let HistoryStats::Events(stats) = stats else {
        panic!()
    };
    assert_eq!(stats.read, events_count, "every event replayed");
    assert!(stats.late > 0, "the stream has late events");

    // With every change published, recomputing gives exactly what the topic holds.
    let mut different = Vec::new();
    for (v, view) in views.iter().enumerate() {
        for row in 0..spine.rows() {
            let (u, e) = (&from_every.per_view[v][row], &from_events.per_view[v][row]);
            if u != e {
                different.push(format!(
                    "{} {} at {}: from updates {u:?}, recomputed {e:?}",
                    view.name, spine.entities[row], spine.times[row]
                ));
            }
        }
    }
    assert!(
        different.is_empty(),
        "{} of {} answers from every change differ from the recomputed ones, e.g. {:?}",
        different.len(),
        spine.rows() * views.len(),
        &different[..different.len().min(5)]
    );

    // With each epoch's values published, they differ only where a later change of the
    // same epoch was published instead.
    let versions: HashMap<&(String, String), HashSet<u64>> = epochs_published
        .iter()
        .map(|(k, updates)| (k, updates.iter().map(|u| u.version).collect()))
        .collect();
    let (mut equal, mut later_epoch, mut unexplained) = (0, 0, Vec::new());
    for (v, view) in views.iter().enumerate() {
        for row in 0..spine.rows() {
            let key = (view.name.clone(), spine.entities[row].clone());
            let (u, e): (Option<&AsOf>, Option<&AsOf>) = (
                from_epochs.per_view[v][row].as_ref(),
                from_events.per_view[v][row].as_ref(),
            );
            if u == e {
                equal += 1;
                continue;
            }
            // The only allowed difference: the recomputed change was never published,
            // because the processor published a later change of the same epoch, so the
            // topic still shows the change before it.
            let unpublished = e.is_some_and(|e| {
                !versions.get(&key).is_some_and(|vs| vs.contains(&e.version))
                    && u.is_none_or(|u| u.version < e.version && u.event_time <= e.event_time)
            });
            if unpublished {
                later_epoch += 1;
            } else {
                unexplained.push(format!(
                    "{} {} at {}: from updates {u:?}, recomputed {e:?}",
                    view.name, spine.entities[row], spine.times[row]
                ));
            }
        }
    }
    println!(
        "training set of {} rows x {} views: every change published in {every_records} \
         records, all answers equal to the recomputed ones; each epoch's values in \
         {epoch_records} records, {equal} answers equal, {later_epoch} differ only by a \
         change published with a later one of its epoch",
        spine.rows(),
        views.len()
    );
    assert!(
        unexplained.is_empty(),
        "{} answers differ otherwise, e.g. {:?}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(5)]
    );
    // Here event time runs about 1,000 times faster than the clock (the stream's 70
    // minutes are produced in seconds), so an epoch spans minutes of event time and many
    // rows fall between two changes of one epoch; live, an epoch spans at most 250 ms.
    assert!(
        equal * 4 > spine.rows() * views.len(),
        "a good share of the answers is equal ({equal})"
    );

    // The whole command's path: a Parquet file with a row per spine row.
    let out = dir.path().join("set.parquet");
    let report = freshet_training::build(
        &defs,
        &TrainingSetConfig {
            spine: spine_path,
            out: out.clone(),
            entity_column: None,
            time_column: "event_timestamp".into(),
            views: Vec::new(),
            features: Vec::new(),
            history: History::Updates(UpdatesTopic {
                brokers: stack.brokers(),
                registry: stack.registry(),
                topic: every.output_topic.clone(),
            }),
        },
        &mut |_| {},
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, spine_rows);
    for (v, (name, tally)) in report.views.iter().enumerate() {
        let answered = from_every.per_view[v]
            .iter()
            .filter(|a| a.is_some())
            .count() as u64;
        assert_eq!(tally.found + tally.expired, answered, "{name}");
        assert_eq!(tally.missing, (spine_rows as u64) - answered, "{name}");
    }
    assert!(report.views[0].1.expired > 0, "rows past the TTL expire");
    let file = std::fs::File::open(&out).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(
        reader.metadata().file_metadata().num_rows(),
        spine_rows as i64
    );
}
