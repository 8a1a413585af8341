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

/// The values of `read`, field by field, as plain options (for comparing two readers).
fn texts(read: &[freshet_store::RawFields], fields: usize) -> Vec<Vec<Option<String>>> {
    read.iter()
        .map(|r| (0..fields).map(|i| r.get(i).map(str::to_string)).collect())
        .collect()
}

#[tokio::test]
async fn a_batch_connection_reads_what_the_multiplexed_connection_reads() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let updates: Vec<FeatureUpdate> = (0..1_500)
        .map(|i| update(&i.to_string(), 1 + i as u64, i))
        .collect();
    freshet_store::write_updates(&mut conn, updates.iter().map(|u| (u, 0)), Writer::Processor)
        .await
        .unwrap();
    // Present, missing (ids 1,500 and up) and absent fields, in a pipeline whose reply is
    // far larger than one socket read.
    let fields: &[&str] = &["_version", "count", "absent", "mean"];
    let requests: Vec<(String, &[&str])> = (0..2_000)
        .map(|i| {
            (
                feature_key("clicks", &((i * 7) % 2_000).to_string()),
                fields,
            )
        })
        .collect();
    let expected = freshet_store::read_fields(&mut conn, &requests)
        .await
        .unwrap();

    let mut batch = freshet_store::BatchConnection::connect(client.get_connection_info())
        .await
        .unwrap();
    let read = batch.read_fields(&requests).await.unwrap();
    assert_eq!(texts(&read, 4), texts(&expected, 4));
    assert_eq!(read[1].get(1), Some("7"), "entity 7's count");
    assert_eq!(read[1].get(3), Some("7.1"), "entity 7's mean");
    assert_eq!(read[1].get(2), None, "a field the hash does not hold");
    let missing = requests
        .iter()
        .position(|(key, _)| *key == feature_key("clicks", "1500"))
        .unwrap();
    assert!(read[missing].is_empty() && !read[1].is_empty());
    // The connection is reusable, and an empty request is no round trip.
    assert_eq!(
        texts(&batch.read_fields(&requests[..3]).await.unwrap(), 4),
        texts(&expected[..3], 4)
    );
    assert!(batch.read_fields(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_key_redis_answers_with_an_error_fails_only_its_own_read() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    freshet_store::write_updates(&mut conn, [(&update("1", 3, 5), 0)], Writer::Processor)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(feature_key("clicks", "2"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields: &[&str] = &["count"];
    let requests = vec![
        (feature_key("clicks", "2"), fields),
        (feature_key("clicks", "1"), fields),
        (feature_key("clicks", "3"), fields),
    ];
    let mut batch = freshet_store::BatchConnection::connect(client.get_connection_info())
        .await
        .unwrap();
    let by_batch = batch.read_fields(&requests).await.unwrap();
    let by_multiplexed = freshet_store::read_fields(&mut conn, &requests)
        .await
        .unwrap();
    for read in [&by_batch, &by_multiplexed] {
        assert!(read[0].error().unwrap().contains("WRONGTYPE"), "{read:?}");
        assert!(!read[0].is_empty() && read[0].get(0).is_none());
        assert_eq!(read[1].get(0), Some("5"));
        assert_eq!(read[1].error(), None);
        assert!(read[2].is_empty(), "a missing key is no error");
    }
    // The batch connection stays in step: the next read gets its own answer.
    let read = batch.read_fields(&requests[1..2]).await.unwrap();
    assert_eq!(read[0].get(0), Some("5"));
}

#[tokio::test]
async fn a_batch_connection_authenticates_and_selects_the_urls_database() {
    let redis = TestRedis::start();
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut conn = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut conn)
        .await
        .unwrap();
    let base = redis.url().replace("redis://", "redis://:s3cret@");
    let db3 = redis::Client::open(format!("{base}/3")).unwrap();
    let mut conn3 = db3.get_multiplexed_async_connection().await.unwrap();
    freshet_store::write_updates(&mut conn3, [(&update("1", 3, 9), 0)], Writer::Processor)
        .await
        .unwrap();
    let fields: &[&str] = &["count"];
    let requests = vec![(feature_key("clicks", "1"), fields)];

    let mut batch = freshet_store::BatchConnection::connect(db3.get_connection_info())
        .await
        .unwrap();
    let read = batch.read_fields(&requests).await.unwrap();
    assert_eq!(read[0].get(0), Some("9"), "read from database 3");

    let wrong = redis::Client::open(redis.url().replace("redis://", "redis://:wrong@")).unwrap();
    let error = freshet_store::BatchConnection::connect(wrong.get_connection_info())
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(
        matches!(
            &error,
            freshet_store::BatchReadError::Setup {
                command: "AUTH",
                ..
            }
        ),
        "{error}"
    );
}
