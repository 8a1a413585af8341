//! Exactly once, proven by crashing: the processor is killed with SIGKILL at random
//! moments while events stream in and restarted each time. At the end Redis must equal an
//! independent oracle, equal a crash-free run of the processor (values and versions), and
//! every record on feature_updates must carry the values a crash-free run gives that
//! version.
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

type Versioned = BTreeMap<(String, String, u64), BTreeMap<String, String>>;

/// Every (view, entity, version) a crash-free run can emit, with its values: the engine run
/// with an epoch after every record, which is the finest cut there is.
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
                out.insert((u.view, u.entity, u.version), values);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let events = env_or("FRESHET_CRASH_EVENTS", 30_000);
    let kills = env_or("FRESHET_CRASH_KILLS", 10);
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let crashy = Deployment::new(dir.path(), "crashy", 0);

    // Events stream in while the processor is killed and restarted.
    let rate = events as f64 / 8.0;
    let producing = produce(&stack, sim(11, 300), events, rate);
    let killing = async {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for i in 0..kills {
            let mut child = crashy.start(&stack);
            let wait = Duration::from_millis(rng.random_range(300..1_500));
            tokio::time::sleep(wait).await;
            child.kill();
            eprintln!("kill {} after {wait:?}", i + 1);
        }
    };
    let (produced, ()) = tokio::join!(producing, killing);
    assert_eq!(produced, events);

    let mut last = crashy.start(&stack);
    let defs = definitions();
    let input = input_events(&stack).await;
    assert_eq!(input.iter().map(Vec::len).sum::<usize>() as u64, events);
    let expected = oracle(&defs, &input);
    let diffs = wait_for_oracle(
        &crashy.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(180),
    )
    .await;
    assert!(
        diffs.is_empty(),
        "after {kills} kills: {} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
    last.kill();

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
    let crashy_redis = redis_values(&crashy.redis_url(&stack), expected.keys().cloned()).await;
    let clean_redis = redis_values(&clean.redis_url(&stack), expected.keys().cloned()).await;
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
        "Redis after crashes differs from a crash-free run in {} of {} keys: {:#?}",
        mismatched.len(),
        crashy_redis.len(),
        &mismatched[..mismatched.len().min(5)]
    );

    // No update on feature_updates disagrees with what a crash-free run gives its version.
    let reference_versions = every_version(&defs, &input);
    let records = published(&stack, &crashy.output_topic, PARTITIONS).await;
    assert!(!records.is_empty());
    let mut wrong = Vec::new();
    for (key, values) in &records {
        match reference_versions.get(key) {
            Some(expected) if expected == values => {}
            other => wrong.push(format!(
                "{key:?}: published {values:?}, crash-free {other:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} updates disagree, first: {:#?}",
        wrong.len(),
        records.len(),
        &wrong[..wrong.len().min(5)]
    );
}
