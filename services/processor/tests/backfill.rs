//! Backfill through the live processor's engine: from Kafka history it gives exactly the
//! live values under the live versions, from a file of the same events the same values;
//! beside a running processor it never moves a value back.

mod common;

use common::*;
use freshet_backfill::{self as backfill, BackfillConfig, Input};
use freshet_core::store_layout::{decode_version, parse_field, KEY_PREFIX, VERSION};
use freshet_core::Value;
use freshet_producer::event::UserEvent;
use freshet_producer::simulate::Simulator;
use freshet_testkit::TestStack;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn all_views() -> Vec<String> {
    definitions().views.iter().map(|v| v.name.clone()).collect()
}

async fn flush(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

async fn run_backfill(
    input: Input,
    from_ms: Option<i64>,
    redis_url: Option<&str>,
) -> (backfill::Computed, Option<backfill::WriteReport>) {
    let config = BackfillConfig {
        views: all_views(),
        input,
        from_ms,
        to_ms: None,
    };
    let mut reports = 0;
    let computed = backfill::compute(
        &definitions(),
        &config,
        &mut |_| reports += 1,
        &AtomicBool::new(false),
    )
    .await
    .unwrap();
    assert!(reports > 0, "progress was reported");
    let written = match redis_url {
        Some(url) => Some(backfill::write(url, &computed).await.unwrap()),
        None => None,
    };
    (computed, written)
}

fn values_only(stored: &StoredByKey) -> BTreeMap<(String, String), BTreeMap<String, Value>> {
    stored
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().expect("a stored value").1))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_from_kafka_and_from_a_file_gives_exactly_the_live_values() {
    const EVENTS: u64 = 6_000;
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<UserEvent> = Simulator::new(sim(11, 150))
        .unwrap()
        .take(EVENTS as usize)
        .collect();
    let file = dir.path().join("events.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for e in &events {
        serde_json::to_writer(&mut out, e).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    drop(out);

    // Live: the processor computes every view from the topic.
    let deployment = Deployment::new(dir.path(), "live", 0);
    let redis_url = deployment.redis_url(&stack);
    let mut processor = deployment.start(&stack);
    produce_events(&stack, events.iter().cloned(), EVENTS, 0.0, None).await;
    let defs = definitions();
    let expected = oracle(&defs, &input_events(&stack).await);
    let diffs = wait_for_oracle(&redis_url, &expected, &defs, Duration::from_secs(90)).await;
    assert!(diffs.is_empty(), "live values: {diffs:?}");
    processor.kill();
    let live = redis_values(&redis_url, expected.keys().cloned()).await;
    assert!(live.values().all(Option::is_some));

    // From Kafka: the same values under the same versions.
    flush(&redis_url).await;
    let kafka = Input::Kafka {
        brokers: stack.brokers(),
        registry: stack.registry(),
    };
    let (computed, written) = run_backfill(kafka, None, Some(&redis_url)).await;
    assert_eq!(computed.stats.read, EVENTS);
    assert_eq!(computed.stats.unreadable, 0);
    let late_from_kafka = computed.stats.late;
    assert!(late_from_kafka > 0, "the simulation sends late events");
    assert_eq!(written.unwrap().written, computed.updates.len());
    assert_eq!(computed.updates.len(), expected.len());
    let from_kafka = redis_values(&redis_url, expected.keys().cloned()).await;
    assert_eq!(from_kafka, live, "values and versions as live");

    // Again over what it wrote: nothing to change.
    let kafka = Input::Kafka {
        brokers: stack.brokers(),
        registry: stack.registry(),
    };
    let (_, again) = run_backfill(kafka, None, Some(&redis_url)).await;
    assert_eq!(
        again.unwrap().written,
        0,
        "a re-run finds every version stored"
    );

    // From the file of the same events: the same values, under version 0.
    flush(&redis_url).await;
    let from_file = Input::File {
        path: file.clone(),
        partitions: PARTITIONS,
    };
    let (computed, _) = run_backfill(from_file, None, Some(&redis_url)).await;
    assert_eq!(computed.stats.read, EVENTS);
    assert_eq!(
        computed.stats.late, late_from_kafka,
        "the same events are late"
    );
    let stored = redis_values(&redis_url, expected.keys().cloned()).await;
    assert!(stored
        .values()
        .all(|v| v.as_ref().is_some_and(|(version, _)| *version == 0)));
    assert_eq!(
        values_only(&stored),
        values_only(&live),
        "file values as live"
    );

    // A file value never replaces one from Kafka history.
    let kafka = Input::Kafka {
        brokers: stack.brokers(),
        registry: stack.registry(),
    };
    run_backfill(kafka, None, Some(&redis_url)).await;
    let from_file = Input::File {
        path: file,
        partitions: PARTITIONS,
    };
    let (_, written) = run_backfill(from_file, None, Some(&redis_url)).await;
    assert_eq!(written.unwrap().written, 0);
    assert_eq!(
        redis_values(&redis_url, expected.keys().cloned()).await,
        live
    );

    // A start time leaves out what came before it.
    let middle = events[events.len() / 2].timestamp;
    let kafka = Input::Kafka {
        brokers: stack.brokers(),
        registry: stack.registry(),
    };
    let (computed, _) = run_backfill(kafka, Some(middle), None).await;
    let before = events.iter().filter(|e| e.timestamp < middle).count() as u64;
    assert_eq!(computed.stats.outside_range, before);
    assert_eq!(computed.stats.used, EVENTS - before);
}

/// The version of every view of every entity hash in Redis, by `key view`.
async fn versions(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{KEY_PREFIX}:*"))
        .query_async(conn)
        .await
        .unwrap();
    if keys.is_empty() {
        return BTreeMap::new();
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("HGETALL").arg(key);
    }
    let found: Vec<HashMap<String, String>> = pipe.query_async(conn).await.unwrap();
    let mut out = BTreeMap::new();
    for (key, hash) in keys.into_iter().zip(found) {
        for (field, text) in hash {
            if let (Some((view, VERSION)), Some(version)) =
                (parse_field(&field), decode_version(&text))
            {
                out.insert(format!("{key} {view}"), version);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_beside_the_live_processor_never_moves_a_value_back() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "live", 0);
    let redis_url = deployment.redis_url(&stack);
    let _processor = deployment.start(&stack);
    let events: Vec<UserEvent> = Simulator::new(sim(21, 120)).unwrap().take(9_000).collect();
    produce_events(&stack, events[..3_000].iter().cloned(), 3_000, 0.0, None).await;
    // The live processor is ahead of the backfill from the start (it joins its group
    // first: a few seconds).
    wait_for_events(&deployment, 3_000).await;

    // Watch every key's version while the rest of the stream arrives and the backfill runs.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let url = redis_url.clone();
        tokio::spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut highest: BTreeMap<String, u64> = BTreeMap::new();
            let mut backwards = Vec::new();
            let mut rounds = 0;
            while watching.load(Ordering::Relaxed) {
                for (key, version) in versions(&mut conn).await {
                    let seen = highest.entry(key.clone()).or_insert(version);
                    if version < *seen {
                        backwards.push(format!("{key}: {} -> {version}", *seen));
                    }
                    *seen = (*seen).max(version);
                }
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (rounds, backwards)
        })
    };
    let live_stack = &stack;
    let producing = produce_events(
        live_stack,
        events[3_000..].iter().cloned(),
        6_000,
        3_000.0,
        None,
    );
    // The backfill starts in the middle of history: its values miss the events before, so
    // they differ from the live ones, and only the versioned write keeps them out.
    let middle = events[1_500].timestamp;
    let backfilling = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kafka = Input::Kafka {
            brokers: stack.brokers(),
            registry: stack.registry(),
        };
        run_backfill(kafka, Some(middle), Some(&redis_url)).await
    };
    let (_, (computed, written)) = tokio::join!(producing, backfilling);
    let written = written.unwrap();

    let defs = definitions();
    let expected = oracle(&defs, &input_events(&stack).await);
    let diffs = wait_for_oracle(&redis_url, &expected, &defs, Duration::from_secs(90)).await;
    watching.store(false, Ordering::Relaxed);
    let (rounds, backwards) = watcher.await.unwrap();
    assert!(rounds > 10, "the watcher looked often: {rounds}");
    assert!(backwards.is_empty(), "versions moved back: {backwards:?}");
    assert!(
        written.kept_newer > 0,
        "the live processor was ahead for some entities: {written:?}"
    );
    let partial_differs = computed.updates.iter().any(|u| {
        expected
            .get(&(u.view.clone(), u.entity.clone()))
            .is_some_and(|e| e.iter().any(|(f, v)| !close(v, &u.values[f])))
    });
    assert!(
        partial_differs,
        "the partial backfill computed values other than the final live ones"
    );
    assert!(
        diffs.is_empty(),
        "after the backfill Redis holds the live values: {diffs:?}"
    );
}
