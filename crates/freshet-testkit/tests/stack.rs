//! The testkit's servers are real: a record goes through the broker and a feature hash
//! through Redis, laid out by the core crate.

use freshet_core::store_layout::{
    entity_key, FeatureUpdate, StoredValues, ViewStorage, Writer, VERSIONED_WRITE_SCRIPT,
};
use freshet_core::Value;
use freshet_testkit::TestStack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_produced_record_is_consumed_back_from_the_broker() {
    let stack = TestStack::start();
    stack.create_topic("events", 2).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to("events")
                .key("user-7")
                .payload("clicked item 42"),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let (partition, offset) = (delivery.partition, delivery.offset);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", "testkit")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("events", partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        assert!(Instant::now() < deadline, "record not consumed within 20 s");
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            break result.expect("a record, not an error");
        }
    };
    assert_eq!(message.key(), Some(&b"user-7"[..]));
    assert_eq!(message.payload(), Some(&b"clicked item 42"[..]));
    assert_eq!(message.offset(), offset);
}

#[tokio::test(flavor = "multi_thread")]
async fn feature_hashes_round_trip_through_redis_with_the_core_layout() {
    let stack = TestStack::start();
    let client = redis::Client::open(stack.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let script = redis::Script::new(VERSIONED_WRITE_SCRIPT);

    let update = |version: u64, clicks: i64| FeatureUpdate {
        view: "user_click_stats".into(),
        entity: "42".into(),
        version,
        event_time_ms: 1_700_000_000_000 + version as i64,
        values: BTreeMap::from([
            ("click_count_1m".to_string(), Value::Long(clicks)),
            ("ratio".to_string(), Value::Double(0.25)),
        ]),
    };
    let writer = conn.clone();
    let write_as = |u: FeatureUpdate, who: Writer| {
        let mut conn = writer.clone();
        let script = script.clone();
        async move {
            let storage = ViewStorage {
                entity_type: "user".into(),
                ttl_ms: 3_600_000,
            };
            let mut invocation = script.key(u.key(&storage));
            for arg in u.script_args(&storage, who) {
                invocation.arg(arg);
            }
            invocation.invoke_async::<i64>(&mut conn).await.unwrap()
        }
    };
    let write = |u: FeatureUpdate| write_as(u, Writer::Processor);
    assert_eq!(
        write_as(update(10, 99), Writer::Backfill).await,
        1,
        "a backfill fills an empty key"
    );
    assert_eq!(
        write_as(update(10, 98), Writer::Backfill).await,
        0,
        "a backfill never replaces an equal version"
    );
    assert_eq!(
        write(update(10, 3)).await,
        1,
        "the processor's value wins at an equal version"
    );
    assert_eq!(write(update(9, 99)).await, 0, "an older version is refused");
    assert_eq!(
        write_as(update(9, 99), Writer::Backfill).await,
        0,
        "also from a backfill"
    );

    let key = entity_key("user", "42");
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields = hash.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let stored = StoredValues::decode("user_click_stats", fields)
        .unwrap()
        .expect("the hash exists");
    assert_eq!(stored.version, 10);
    assert_eq!(stored.event_time_ms, 1_700_000_000_010);
    assert_eq!(stored.values["click_count_1m"], Value::Long(3));
    assert_eq!(stored.values["ratio"], Value::Double(0.25));

    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "TTL follows the view's ttl: {ttl}"
    );

    assert_eq!(write(update(11, 4)).await, 1, "a newer version applies");
    let clicks: String = redis::cmd("HGET")
        .arg(&key)
        .arg("user_click_stats:click_count_1m")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(clicks, "4");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_redis_comes_back_at_the_same_address() {
    let mut stack = TestStack::start();
    let address = stack.redis.address();
    stack.redis.stop();
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "redis is down"
    );
    let logs = stack.logs_dir().to_path_buf();
    stack.redis.restart(&logs);
    let client = redis::Client::open(stack.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}
