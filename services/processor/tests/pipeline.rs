//! The processor end to end with real servers: a seeded stream in, Redis and the
//! feature_updates topic out, checked against an independent oracle.

mod common;

use apache_avro::Schema;
use common::*;
use freshet_avro::WireDecoder;
use freshet_processor::delivery::FEATURE_UPDATE_SCHEMA;
use freshet_testkit::TestStack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn redis_equals_an_independent_oracle_after_a_seeded_stream() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "main", 0);
    let mut processor = deployment.start(&stack);
    produce(&stack, sim(3, 200), 10_000, 0.0).await;

    let defs = definitions();
    let input = input_events(&stack).await;
    let expected = oracle(&defs, &input);
    let mut homes: std::collections::BTreeMap<i64, std::collections::BTreeSet<usize>> =
        Default::default();
    for (p, events) in input.iter().enumerate() {
        for e in events {
            homes.entry(e.user_id).or_default().insert(p);
        }
    }
    let split: Vec<_> = homes.iter().filter(|(_, ps)| ps.len() > 1).collect();
    assert!(split.is_empty(), "users in several partitions: {split:?}");
    assert!(
        expected.len() > 200,
        "the stream touches many (view, entity) pairs: {}",
        expected.len()
    );
    let interesting = expected
        .values()
        .filter(|v| {
            v.values().any(|x| {
                !matches!(x, freshet_core::Value::Long(0) | freshet_core::Value::Null)
                    && *x != freshet_core::Value::Double(0.0)
            })
        })
        .count();
    assert!(
        interesting > 50,
        "many non-default values to compare: {interesting}"
    );
    let diffs = wait_for_oracle(
        &deployment.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(90),
    )
    .await;
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );

    // The metrics count what happened.
    let metrics = scrape_metrics(deployment.metrics_port);
    assert_eq!(
        metric(
            &metrics,
            "freshet_processor_events_total{topic=\"user_events\"}"
        ),
        Some(10_000.0)
    );
    assert!(
        metric(
            &metrics,
            "freshet_processor_updates_total{view=\"user_click_stats\"}"
        )
        .unwrap_or(0.0)
            >= 200.0
    );
    let late_events = metric(
        &metrics,
        "freshet_processor_late_events_total{topic=\"user_events\"}",
    );
    assert!(late_events.unwrap_or(0.0) > 0.0);
    assert!(
        metric(&metrics, "freshet_processor_epoch_duration_seconds_count").unwrap_or(0.0) > 0.0
    );
    // Every epoch went through each delivery step once.
    let epochs = metric(
        &metrics,
        "freshet_processor_epochs_total{delivery=\"normal\"}",
    );
    assert!(epochs.unwrap_or(0.0) > 0.0);
    for step in ["checkpoint", "kafka", "redis"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("freshet_processor_delivery_step_seconds_count{{step=\"{step}\"}}")
            ),
            epochs,
            "{step}"
        );
    }
    // SIGTERM finishes the epoch and exits cleanly.
    processor.terminate();

    // Every feature_updates record decodes, and the last per (view, entity) is Redis's value.
    let decoder = WireDecoder::new(
        &stack.registry(),
        Schema::parse_str(FEATURE_UPDATE_SCHEMA).unwrap(),
    );
    let mut latest: std::collections::BTreeMap<(String, String), (i64, apache_avro::types::Value)> =
        Default::default();
    let mut count = 0;
    for partition in read_topic(&stack, &deployment.output_topic, PARTITIONS) {
        for (_, key, payload) in partition {
            let value = decoder.decode(Some(&payload)).await.unwrap().value;
            let apache_avro::types::Value::Record(fields) = &value else {
                panic!()
            };
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
            let (
                apache_avro::types::Value::String(view),
                apache_avro::types::Value::String(entity),
                apache_avro::types::Value::Long(version),
            ) = (get("view"), get("entity"), get("version"))
            else {
                panic!("bad record {value:?}")
            };
            assert_eq!(String::from_utf8(key).unwrap(), format!("{view}:{entity}"));
            count += 1;
            let slot = latest
                .entry((view, entity))
                .or_insert((version, value.clone()));
            if version >= slot.0 {
                *slot = (version, value);
            }
        }
    }
    assert!(
        count >= expected.len(),
        "at least one update per (view, entity): {count}"
    );
    let redis = redis_values(&deployment.redis_url(&stack), expected.keys().cloned()).await;
    for (key, stored) in &redis {
        if let Some((version, _)) = stored {
            assert_eq!(
                latest.get(key).map(|(v, _)| *v as u64),
                Some(*version),
                "{key:?}: topic and Redis agree on the latest version"
            );
        }
    }

    // Late events went to the dead-letter topic, each with its record's key and bytes.
    let dead = read_topic(&stack, &format!("dead_{}", deployment.group), 1);
    assert!(!dead[0].is_empty(), "the simulation sends some late events");
    assert_eq!(
        Some(dead[0].len() as f64),
        late_events,
        "one per late event"
    );
    let input: std::collections::HashSet<(Vec<u8>, Vec<u8>)> =
        read_topic(&stack, TOPIC, PARTITIONS)
            .into_iter()
            .flatten()
            .map(|(_, key, payload)| (key, payload))
            .collect();
    for (offset, key, payload) in &dead[0] {
        assert!(
            !payload.is_empty() && input.contains(&(key.clone(), payload.clone())),
            "dead letter at offset {offset} is not an input record as read"
        );
    }
}
