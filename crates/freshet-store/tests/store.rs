//! Versioned writes and pipelined reads against a real Redis.

use freshet_core::store_layout::{feature_key, FeatureUpdate, Writer};
use freshet_core::Value;
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;

fn update(entity: &str, version: u64, clicks: i64) -> FeatureUpdate {
    FeatureUpdate {
        view: "clicks".into(),
        entity: entity.into(),
        version,
        event_time_ms: 1_700_000_000_000 + version as i64,
        values: BTreeMap::from([
            ("count".to_string(), Value::Long(clicks)),
            ("mean".to_string(), Value::Double(0.1 + clicks as f64)),
        ]),
    }
}

#[tokio::test]
async fn written_values_read_back_exactly_and_older_versions_never_win() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let first = update("1", 10, 3);
    let newer = update("1", 11, 4);
    let older = update("1", 9, 99);
    let other = update("2", 5, 7);
    let applied = freshet_store::write_updates(
        &mut conn,
        [(&first, 60_000), (&other, 0)],
        Writer::Processor,
    )
    .await
    .unwrap();
    assert_eq!(applied, 2);
    let applied = freshet_store::write_updates(
        &mut conn,
        [(&newer, 60_000), (&older, 60_000), (&newer, 60_000)],
        Writer::Backfill,
    )
    .await
    .unwrap();
    assert_eq!(applied, 1, "only the newer version applies, once");

    let keys = vec![
        feature_key("clicks", "1"),
        feature_key("clicks", "missing"),
        feature_key("clicks", "2"),
    ];
    let hashes = freshet_store::read_hashes(&mut conn, &keys).await.unwrap();
    assert_eq!(hashes.len(), 3);
    let one = freshet_store::decode(&hashes[0]).unwrap().unwrap();
    assert_eq!(one.version, 11);
    assert_eq!(one.event_time_ms, newer.event_time_ms);
    assert_eq!(one.values, newer.values);
    assert_eq!(freshet_store::decode(&hashes[1]).unwrap(), None);
    let two = freshet_store::decode(&hashes[2]).unwrap().unwrap();
    assert_eq!(two.values, other.values);

    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");
    let no_ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[2])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(no_ttl, -1, "a TTL of 0 means the key never expires");
}

#[tokio::test]
async fn chosen_fields_come_back_in_the_order_asked_for() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    freshet_store::write_updates(&mut conn, [(&update("1", 42, 3), 0)], Writer::Processor)
        .await
        .unwrap();
    let fields: &[&str] = &["mean", "_version", "absent", "count"];
    let requests = vec![
        (feature_key("clicks", "1"), fields),
        (feature_key("clicks", "missing"), fields),
    ];
    let read = freshet_store::read_fields(&mut conn, &requests)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].get(0), Some("3.1"));
    assert_eq!(read[0].get(1), Some("00000000000000000042"));
    assert_eq!(read[0].get(2), None);
    assert_eq!(read[0].get(3), Some("3"));
    assert!(!read[0].is_empty());
    assert!(read[1].is_empty());
}

#[tokio::test]
async fn writes_larger_than_one_pipeline_all_land() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let updates: Vec<FeatureUpdate> = (0..2_500).map(|i| update(&i.to_string(), 1, i)).collect();
    freshet_store::write_updates(&mut conn, updates.iter().map(|u| (u, 0)), Writer::Processor)
        .await
        .unwrap();
    let keys: Vec<String> = updates.iter().map(|u| u.key()).collect();
    let hashes = freshet_store::read_hashes(&mut conn, &keys).await.unwrap();
    for (u, hash) in updates.iter().zip(&hashes) {
        let stored = freshet_store::decode(hash).unwrap().unwrap();
        assert_eq!(stored.values, u.values, "entity {}", u.entity);
    }
}
