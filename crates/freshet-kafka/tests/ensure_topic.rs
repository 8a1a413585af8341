//! Topics are created with the partitions asked for, once.

use freshet_testkit::TestStack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

fn partitions(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    metadata.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_created_with_the_partitions_asked_for_and_only_once() {
    let stack = TestStack::start();
    // A metadata look-up from an admin client would let tansu auto-create the topic with
    // its default of 4 partitions; ensure_topic must not look before it creates.
    assert!(freshet_kafka::ensure_topic(&stack.brokers(), "fresh", 3)
        .await
        .unwrap());
    assert_eq!(partitions(&stack.brokers(), "fresh"), 3);
    assert!(!freshet_kafka::ensure_topic(&stack.brokers(), "fresh", 5)
        .await
        .unwrap());
    assert_eq!(
        partitions(&stack.brokers(), "fresh"),
        3,
        "an existing topic is left alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_a_clear_error() {
    let port = freshet_localstack::free_port();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        freshet_kafka::ensure_topic(&format!("127.0.0.1:{port}"), "t", 1),
    )
    .await
    .expect("gives up within its timeout")
    .unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
