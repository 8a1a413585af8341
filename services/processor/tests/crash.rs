//! Exactly once, proven by crashing: two processors, one publishing each epoch's values
//! (the default) and one every change (`--publish-changes all`), are killed with SIGKILL
//! at random moments while events stream in and restarted each time. At the end each one's
//! Redis must equal an independent oracle and a crash-free run of the processor (values
//! and versions), and every record on their feature_updates must carry the values a
//! crash-free run gives that version. The one publishing every change must have published
//! each change exactly once: for every (view, entity) and event time, the last change the
//! engine makes there.
//!
//! CI runs 30,000 events and 10 kills. `FRESHET_CRASH_EVENTS=100000 FRESHET_CRASH_KILLS=20`
//! runs the full version.

mod common;

use common::*;
use freshet_engine::{CompiledView, Event, PartitionEngine};
use freshet_testkit::TestStack;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// (view, entity, version) -> (event time, values as JSON text)
type Versioned = BTreeMap<(String, String, u64), (i64, BTreeMap<String, String>)>;

/// Every (view, entity, version) a crash-free run can emit, with its event time and values:
/// the engine run with an epoch after every record, which is the finest cut there is.
fn every_version(
    defs: &freshet_core::Definitions,
    input: &[Vec<freshet_producer::event::UserEvent>],
) -> Versioned {
    let views = Arc::new(CompiledView::compile_all(defs));
    let mut out = Versioned::new();
    for events in input {
        let mut engine = PartitionEngine::new(views.clone(), TOPIC);
        for (offset, e) in events.iter().enumerate() {
            let value = apache_avro::to_value(e).unwrap();
            let event: Event =
                freshet_engine::event_decoder::to_event(&value, "user_id", "timestamp").unwrap();
            engine.process(offset as i64, Some(&event));
            for u in engine.drain_updates() {
                let values = u
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json_string()))
                    .collect();
                out.insert((u.view, u.entity, u.version), (u.event_time_ms, values));
            }
        }
    }
    out
}

/// (view, entity, event time) -> (version, values as JSON text)
type LastAtEachTime = BTreeMap<(String, String, i64), (u64, BTreeMap<String, String>)>;

/// Of each (view, entity) and event time, the largest version: the values that pair has
/// once its partition's clock moves past that time.
fn last_at_each_time<'a>(
    records: impl Iterator<Item = (&'a (String, String, u64), i64, &'a BTreeMap<String, String>)>,
) -> LastAtEachTime {
    let mut out = LastAtEachTime::new();
    for ((view, entity, version), event_time, values) in records {
        let at = out
            .entry((view.clone(), entity.clone(), event_time))
            .or_insert((0, BTreeMap::new()));
        if *version > at.0 {
            *at = (*version, values.clone());
        }
    }
    out
}

/// Starts `deployment`, kills it after a random while, `kills` times.
async fn kill_repeatedly(
    stack: &TestStack,
    deployment: &Deployment,
    flags: &[&str],
    (kills, seed): (u64, u64),
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..kills {
        let mut child = deployment.start_with(stack, flags);
        let wait = Duration::from_millis(rng.random_range(300..1_500));
        tokio::time::sleep(wait).await;
        child.kill();
        eprintln!("{}: kill {} after {wait:?}", deployment.group, i + 1);
    }
}

const EVERY_CHANGE: &[&str] = &["--publish-changes", "all"];

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let events = env_or("FRESHET_CRASH_EVENTS", 30_000);
    let kills = env_or("FRESHET_CRASH_KILLS", 10);
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let crashy = Deployment::new(dir.path(), "crashy", 0);
    let crashy_every = Deployment::new(dir.path(), "crashy-every", 2);

    // Events stream in while the processors are killed and restarted.
    let rate = events as f64 / 8.0;
    let producing = produce(&stack, sim(11, 300), events, rate);
    let (produced, (), ()) = tokio::join!(
        producing,
        kill_repeatedly(&stack, &crashy, &[], (kills, 99)),
        kill_repeatedly(&stack, &crashy_every, EVERY_CHANGE, (kills, 98)),
    );
    assert_eq!(produced, events);

    let defs = definitions();
    let input = input_events(&stack).await;
    assert_eq!(input.iter().map(Vec::len).sum::<usize>() as u64, events);
    let expected = oracle(&defs, &input);
    for (deployment, flags) in [(&crashy, &[][..]), (&crashy_every, EVERY_CHANGE)] {
        let mut last = deployment.start_with(&stack, flags);
        let diffs = wait_for_oracle(
            &deployment.redis_url(&stack),
            &expected,
            &defs,
            Duration::from_secs(180),
        )
        .await;
        assert!(
            diffs.is_empty(),
            "{}: after {kills} kills: {} differences, first: {:#?}",
            deployment.group,
            diffs.len(),
            &diffs[..diffs.len().min(10)]
        );
        last.kill();
    }

    // A crash-free run of the binary over the same input ends with the same Redis, versions
    // included.
    let clean = Deployment::new(dir.path(), "clean", 1);
    let mut reference = clean.start(&stack);
    let diffs = wait_for_oracle(
        &clean.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(180),
    )
    .await;
    assert!(diffs.is_empty(), "the crash-free run: {diffs:#?}");
    reference.kill();
    let clean_redis = redis_values(&clean.redis_url(&stack), expected.keys().cloned()).await;
    let reference_versions = every_version(&defs, &input);
    for deployment in [&crashy, &crashy_every] {
        let crashy_redis =
            redis_values(&deployment.redis_url(&stack), expected.keys().cloned()).await;
        let mismatched: Vec<String> = crashy_redis
            .iter()
            .filter(|(k, v)| clean_redis.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k:?}: after crashes {v:?}, crash-free {:?}",
                    clean_redis.get(k)
                )
            })
            .collect();
        assert!(
            mismatched.is_empty(),
            "{}: Redis after crashes differs from a crash-free run in {} of {} keys: {:#?}",
            deployment.group,
            mismatched.len(),
            crashy_redis.len(),
            &mismatched[..mismatched.len().min(5)]
        );

        // No update on feature_updates disagrees with what a crash-free run gives its
        // version.
        let records = published(&stack, &deployment.output_topic, PARTITIONS).await;
        assert!(!records.is_empty());
        let mut wrong = Vec::new();
        for record in &records {
            match reference_versions.get(&record.key) {
                Some(expected) if *expected == (record.event_time, record.values.clone()) => {}
                other => wrong.push(format!(
                    "{:?}: published {} {:?}, crash-free {other:?}",
                    record.key, record.event_time, record.values
                )),
            }
        }
        assert!(
            wrong.is_empty(),
            "{}: {} of {} updates disagree, first: {:#?}",
            deployment.group,
            wrong.len(),
            records.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    // Every change published, each once: every (view, entity, version) one record, and
    // of each (view, entity) and event time the last change the engine makes there.
    let records = published(&stack, &crashy_every.output_topic, PARTITIONS).await;
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<_> = records
        .iter()
        .filter(|r| !seen.insert(r.key.clone()))
        .map(|r| r.key.clone())
        .collect();
    assert!(
        twice.is_empty(),
        "{} changes published twice after {kills} kills, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let published_last =
        last_at_each_time(records.iter().map(|r| (&r.key, r.event_time, &r.values)));
    let engine_last = last_at_each_time(
        reference_versions
            .iter()
            .map(|(key, (event_time, values))| (key, *event_time, values)),
    );
    let missing: Vec<_> = engine_last
        .iter()
        .filter(|(k, v)| published_last.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k:?}: the engine's {v:?}, published {:?}",
                published_last.get(k)
            )
        })
        .collect();
    assert!(
        missing.is_empty() && published_last.len() == engine_last.len(),
        "of {} changes at an event time, {} are not published as the engine made them, \
         e.g. {:#?}; {} published",
        engine_last.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        published_last.len()
    );
    eprintln!(
        "every change after {kills} kills: {} records, {} (view, entity, event time) changes, \
         each published once",
        records.len(),
        engine_last.len()
    );
}
