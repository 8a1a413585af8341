//! An epoch's transaction commits only once its checkpoint is durable: the delivery sends
//! the records while the checkpoint syncs and asks before committing. A "no" aborts the
//! transaction, commits none of its input offsets, and leaves the producer able to publish
//! the epoch again.

mod common;

use common::TOPIC;
use freshet_processor::checkpoint::{Outbox, OutboxUpdate};
use freshet_processor::delivery::{transaction_committed, DeliveryError, KafkaSink};
use freshet_testkit::TestStack;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_whose_checkpoint_failed_commits_nothing_and_can_be_sent_again() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, 1).await;
    stack.create_topic("feature_updates", 1).await;
    stack.create_topic("freshet_dead_letters", 1).await;
    let sink = KafkaSink::new(
        &stack.brokers(),
        &stack.registry_url(),
        "transaction-test",
        "feature_updates",
        "freshet_dead_letters",
        None,
    )
    .unwrap();
    let consumer: BaseConsumer =
        freshet_kafka::group_consumer_config(&stack.brokers(), "transaction-test")
            .create()
            .unwrap();
    let group = consumer
        .group_metadata()
        .expect("a group consumer has metadata");
    let outbox = Outbox {
        epoch: 1,
        updates: vec![OutboxUpdate {
            view: "user_click_stats".into(),
            entity: "7".into(),
            version: 5,
            event_time_ms: 1_700_000_000_000,
            values: BTreeMap::from([("click_count_1m".into(), freshet_core::Value::Long(2))]),
            windows: Vec::new(),
        }],
        dead_letters: Vec::new(),
        offsets: vec![(TOPIC.into(), 0, 5)],
    };
    let payloads = sink.encode(&outbox).await.unwrap();

    let mut asked = false;
    let refused = sink.publish_encoded(&outbox, &[], &group, &payloads, || {
        asked = true;
        false
    });
    assert!(asked, "the commit waits for the checkpoint's answer");
    assert!(
        matches!(refused, Err(DeliveryError::NotCheckpointed)),
        "{refused:?}"
    );
    assert!(
        !transaction_committed(&consumer, &outbox).unwrap(),
        "no offsets of an aborted transaction are committed"
    );

    sink.publish_encoded(&outbox, &[], &group, &payloads, || true)
        .expect("the same epoch goes through once its checkpoint is durable");
    assert!(transaction_committed(&consumer, &outbox).unwrap());
}
