//! A schema registry outage during a schema rollout: records written with a schema version
//! the processor has not seen yet arrive while the registry is down. They must wait, not
//! be dead-lettered: once the registry is back, every one counts, and Redis ends equal to
//! a deployment that never saw the outage.

mod common;

use common::*;
use freshet_avro::WireEncoder;
use freshet_producer::event::{UserEvent, SCHEMA_V2};
use freshet_producer::simulate::Simulator;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Version 3 of the event schema: version 2 and an optional `client`.
fn schema_v3() -> String {
    let mut schema: serde_json::Value = serde_json::from_str(SCHEMA_V2).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "client", "type": ["null", "string"], "default": null}
        ));
    schema.to_string()
}

/// An event as version 3 writes it.
#[derive(Serialize)]
struct UserEventV3<'a> {
    user_id: i64,
    action_type: &'a str,
    item_id: i64,
    amount: Option<f64>,
    timestamp: i64,
    session_id: Option<&'a str>,
    client: Option<&'a str>,
}

impl<'a> From<&'a UserEvent> for UserEventV3<'a> {
    fn from(e: &'a UserEvent) -> Self {
        Self {
            user_id: e.user_id,
            action_type: &e.action_type,
            item_id: e.item_id,
            amount: e.amount,
            timestamp: e.timestamp,
            session_id: e.session_id.as_deref(),
            client: Some("ios"),
        }
    }
}

const BEFORE: u64 = 2_000;
const DURING: u64 = 2_000;

async fn wait_for_metric(deployment: &Deployment, series: &str, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = metric(&scrape_metrics(deployment.metrics_port), series);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_of_a_new_schema_wait_out_a_registry_outage_and_none_is_dead_lettered() {
    let mut stack = freshet_testkit::TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<UserEvent> = Simulator::new(sim(11, 150))
        .unwrap()
        .take((BEFORE + DURING) as usize)
        .collect();

    // Version 2 events, read by a running processor.
    produce_events(&stack, events.clone().into_iter(), BEFORE, 0.0, None).await;
    let deployment = Deployment::new(dir.path(), "outage", 0);
    let _processor = deployment.start_with(&stack, &["--late-events", "drop"]);
    wait_for_events(&deployment, BEFORE).await;
    let waiting = "freshet_processor_registry_unavailable";
    let undecodable = "freshet_processor_dead_letters_total{reason=\"undecodable\"}";
    let metrics = scrape_metrics(deployment.metrics_port);
    assert_eq!(metric(&metrics, waiting), Some(0.0));
    assert_eq!(metric(&metrics, undecodable), Some(0.0));

    // Version 3 is registered (the producer resolves its id), then the registry goes down
    // before the processor has seen a record of it.
    let encoder = WireEncoder::new(&stack.registry(), TOPIC, Some(&schema_v3()));
    let ready = encoder.ready().await.unwrap();
    let records: Vec<(String, Vec<u8>)> = events[BEFORE as usize..]
        .iter()
        .map(|e| {
            (
                e.user_id.to_string(),
                ready.encode(&UserEventV3::from(e)).unwrap(),
            )
        })
        .collect();
    stack.registry.stop();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, payload) in &records {
        producer
            .send(
                FutureRecord::to(TOPIC).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // Every partition's first version 3 record waits for the registry; none is counted,
    // none is dead-lettered.
    wait_for_metric(
        &deployment,
        waiting,
        PARTITIONS as f64,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = scrape_metrics(deployment.metrics_port);
    assert_eq!(
        metric(
            &metrics,
            "freshet_processor_events_total{topic=\"user_events\"}"
        ),
        Some(BEFORE as f64),
        "no record after the first waiting one of a partition was processed"
    );
    assert_eq!(metric(&metrics, undecodable), Some(0.0));
    assert_eq!(metric(&metrics, waiting), Some(PARTITIONS as f64));

    // The registry comes back: the partitions go on, and every record counts.
    stack.registry.restart();
    wait_for_events(&deployment, BEFORE + DURING).await;
    wait_for_metric(&deployment, waiting, 0.0, Duration::from_secs(10)).await;
    let metrics = scrape_metrics(deployment.metrics_port);
    assert_eq!(metric(&metrics, undecodable), Some(0.0));
    let dead = read_topic(&stack, &format!("dead_{}", deployment.group), 1);
    assert!(
        dead[0].is_empty(),
        "{} records were dead-lettered",
        dead[0].len()
    );

    // Redis equals the oracle over the whole input, and equals a deployment that read the
    // same topic without an outage, version for version.
    let defs = definitions();
    let input = input_events(&stack).await;
    assert_eq!(
        input.iter().map(Vec::len).sum::<usize>() as u64,
        BEFORE + DURING
    );
    let expected = oracle(&defs, &input);
    let diffs = wait_for_oracle(
        &deployment.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
    let reference = Deployment::new(dir.path(), "reference", 1);
    let _reference = reference.start_with(&stack, &["--late-events", "drop"]);
    wait_for_events(&reference, BEFORE + DURING).await;
    let diffs = wait_for_oracle(
        &reference.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(60),
    )
    .await;
    assert!(diffs.is_empty(), "the reference run: {diffs:?}");
    let with_outage = redis_values(&deployment.redis_url(&stack), expected.keys().cloned()).await;
    let without = redis_values(&reference.redis_url(&stack), expected.keys().cloned()).await;
    assert_eq!(with_outage, without);
}
