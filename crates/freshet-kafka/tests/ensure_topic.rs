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

#[tokio::test(flavor = "multi_thread")]
async fn partition_for_key_agrees_with_the_partitions_librdkafka_chooses() {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::Message as _;
    let stack = TestStack::start();
    stack.create_topic("keyed", 5).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .create()
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("{}", i * 7919)).collect();
    for key in &keys {
        producer
            .send(
                FutureRecord::to("keyed").key(key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..5 {
        tpl.add_partition_offset("keyed", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < keys.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            seen.insert(key, m.partition());
        }
    }
    assert_eq!(seen.len(), keys.len(), "every record read back");
    let used: std::collections::BTreeSet<i32> = seen.values().copied().collect();
    assert_eq!(used.len(), 5, "the keys spread over every partition");
    for (key, partition) in &seen {
        assert_eq!(
            freshet_kafka::partition_for_key(key.as_bytes(), 5),
            *partition,
            "key {key}"
        );
    }
}
