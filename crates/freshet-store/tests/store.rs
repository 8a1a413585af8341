//! Versioned writes and pipelined reads against a real Redis.

use freshet_core::store_layout::{entity_key, FeatureUpdate, ViewStorage, Writer};
use freshet_core::Value;
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;

fn storage(ttl_ms: i64) -> ViewStorage {
    ViewStorage {
        entity_type: "user".into(),
        ttl_ms,
    }
}

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
    let (minute, forever) = (storage(60_000), storage(0));
    let applied = freshet_store::write_updates(
        &mut conn,
        [(&first, &minute), (&other, &forever)],
        Writer::Processor,
    )
    .await
    .unwrap();
    assert_eq!(applied, 2);
    let applied = freshet_store::write_updates(
        &mut conn,
        [(&newer, &minute), (&older, &minute), (&newer, &minute)],
        Writer::Backfill,
    )
    .await
    .unwrap();
    assert_eq!(applied, 1, "only the newer version applies, once");

    let keys = vec![
        entity_key("user", "1"),
        entity_key("user", "missing"),
        entity_key("user", "2"),
    ];
    let hashes = freshet_store::read_hashes(&mut conn, &keys).await.unwrap();
    assert_eq!(hashes.len(), 3);
    let one = &freshet_store::decode(&hashes[0]).unwrap()["clicks"];
    assert_eq!(one.version, 11);
    assert_eq!(one.event_time_ms, newer.event_time_ms);
    assert_eq!(one.values, newer.values);
    assert!(freshet_store::decode(&hashes[1]).unwrap().is_empty());
    let two = &freshet_store::decode(&hashes[2]).unwrap()["clicks"];
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
    freshet_store::write_updates(
        &mut conn,
        [(&update("1", 42, 3), &storage(0))],
        Writer::Processor,
    )
    .await
    .unwrap();
    let fields: &[&str] = &[
        "clicks:mean",
        "clicks:_version",
        "clicks:absent",
        "clicks:count",
    ];
    let requests = vec![
        (entity_key("user", "1"), fields),
        (entity_key("user", "missing"), fields),
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
    let no_ttl = storage(0);
    freshet_store::write_updates(
        &mut conn,
        updates.iter().map(|u| (u, &no_ttl)),
        Writer::Processor,
    )
    .await
    .unwrap();
    let keys: Vec<String> = updates.iter().map(|u| u.key(&no_ttl)).collect();
    let hashes = freshet_store::read_hashes(&mut conn, &keys).await.unwrap();
    for (u, hash) in updates.iter().zip(&hashes) {
        let stored = &freshet_store::decode(hash).unwrap()["clicks"];
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
    let no_ttl = storage(0);
    freshet_store::write_updates(
        &mut conn,
        updates.iter().map(|u| (u, &no_ttl)),
        Writer::Processor,
    )
    .await
    .unwrap();
    // Present, missing (ids 1,500 and up) and absent fields, in a pipeline whose reply is
    // far larger than one socket read.
    let fields: &[&str] = &[
        "clicks:_version",
        "clicks:count",
        "clicks:absent",
        "clicks:mean",
    ];
    let requests: Vec<(String, &[&str])> = (0..2_000)
        .map(|i| (entity_key("user", &((i * 7) % 2_000).to_string()), fields))
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
        .position(|(key, _)| *key == entity_key("user", "1500"))
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
    freshet_store::write_updates(
        &mut conn,
        [(&update("1", 3, 5), &storage(0))],
        Writer::Processor,
    )
    .await
    .unwrap();
    let _: () = redis::cmd("SET")
        .arg(entity_key("user", "2"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields: &[&str] = &["clicks:count"];
    let requests = vec![
        (entity_key("user", "2"), fields),
        (entity_key("user", "1"), fields),
        (entity_key("user", "3"), fields),
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
    freshet_store::write_updates(
        &mut conn3,
        [(&update("1", 3, 9), &storage(0))],
        Writer::Processor,
    )
    .await
    .unwrap();
    let fields: &[&str] = &["clicks:count"];
    let requests = vec![(entity_key("user", "1"), fields)];

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

fn purchase(entity: &str, version: u64, amount: f64) -> FeatureUpdate {
    FeatureUpdate {
        view: "purchases".into(),
        entity: entity.into(),
        version,
        event_time_ms: 1_700_000_000_000 + version as i64,
        values: BTreeMap::from([("amount".to_string(), Value::Double(amount))]),
    }
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn views_of_one_entity_share_its_hash_without_touching_each_other() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (minute, hour) = (storage(60_000), storage(3_600_000));
    let applied = freshet_store::write_updates(
        &mut conn,
        [
            (&update("1", 10, 3), &minute),
            (&purchase("1", 3, 9.5), &hour),
        ],
        Writer::Processor,
    )
    .await
    .unwrap();
    assert_eq!(applied, 2, "each view's version is its own");
    // An older clicks update is refused; a newer one leaves purchases alone, and its
    // shorter TTL does not shorten the key's.
    let applied = freshet_store::write_updates(
        &mut conn,
        [
            (&update("1", 9, 99), &minute),
            (&update("1", 11, 4), &minute),
        ],
        Writer::Processor,
    )
    .await
    .unwrap();
    assert_eq!(applied, 1);
    let key = entity_key("user", "1");
    let hashes = freshet_store::read_hashes(&mut conn, std::slice::from_ref(&key))
        .await
        .unwrap();
    let views = freshet_store::decode(&hashes[0]).unwrap();
    assert_eq!(views.len(), 2, "{views:?}");
    assert_eq!(views["clicks"].version, 11);
    assert_eq!(views["clicks"].values, update("1", 11, 4).values);
    assert_eq!(views["purchases"].version, 3);
    assert_eq!(views["purchases"].values["amount"], Value::Double(9.5));
    let ttl = pttl(&mut conn, &key).await;
    assert!(
        ttl > 60_000 && ttl <= 3_600_000,
        "the longer TTL stays: {ttl}"
    );
    // A view without TTL makes the key persistent; later writes with a TTL keep it so.
    let forever = storage(0);
    freshet_store::write_updates(
        &mut conn,
        [(&purchase("1", 4, 1.0), &forever)],
        Writer::Processor,
    )
    .await
    .unwrap();
    freshet_store::write_updates(
        &mut conn,
        [(&update("1", 12, 5), &minute)],
        Writer::Processor,
    )
    .await
    .unwrap();
    assert_eq!(pttl(&mut conn, &key).await, -1);
}

#[tokio::test]
async fn a_migration_moves_every_legacy_hash_and_keeps_newer_values() {
    use freshet_core::store_layout::LegacyKey;
    use std::collections::HashMap;
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    async fn legacy(
        conn: &mut redis::aio::MultiplexedConnection,
        view: &str,
        entity: &str,
        fields: &[(&str, &str)],
        ttl_ms: i64,
    ) {
        let key = LegacyKey::key(view, entity);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(&key).arg(fields).ignore();
        if ttl_ms > 0 {
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        let _: () = pipe.query_async(conn).await.unwrap();
    }
    // 1,200 entities with clicks (more than one SCAN step), entity 0 with purchases too.
    for i in 0..1_200 {
        let version = format!("{:020}", 100 + i);
        let count = i.to_string();
        legacy(
            &mut conn,
            "clicks",
            &format!("tenant:{i}"),
            &[
                ("_version", &version),
                ("_event_time", "1700000000000"),
                ("count", &count),
                ("mean", "0.5"),
            ],
            600_000,
        )
        .await;
    }
    legacy(
        &mut conn,
        "purchases",
        "tenant:0",
        &[
            ("_version", "00000000000000000007"),
            ("_event_time", "1"),
            ("amount", "2.5"),
        ],
        3_600_000,
    )
    .await;
    // A processor of this version already wrote a newer clicks value for tenant:1.
    freshet_store::write_updates(
        &mut conn,
        [(&update("tenant:1", 5_000, 77), &storage(600_000))],
        Writer::Processor,
    )
    .await
    .unwrap();
    // A view the definitions do not have, and a corrupt hash: left in place.
    legacy(
        &mut conn,
        "gone",
        "1",
        &[("_version", "1"), ("_event_time", "1")],
        0,
    )
    .await;
    legacy(
        &mut conn,
        "clicks",
        "bad",
        &[("_version", "1"), ("_event_time", "1"), ("count", "{")],
        0,
    )
    .await;

    let views = HashMap::from([
        ("clicks".to_string(), storage(600_000)),
        ("purchases".to_string(), storage(3_600_000)),
    ]);
    let mut steps = 0;
    let mut problems = Vec::new();
    let report = freshet_store::migrate_legacy(
        &mut conn,
        &views,
        |_| steps += 1,
        |key, why| problems.push((key.to_string(), why.to_string())),
    )
    .await
    .unwrap();
    assert_eq!(report.scanned, 1_203);
    assert_eq!(report.moved, 1_200);
    assert_eq!(report.already_newer, 1);
    assert_eq!((report.unknown_view, report.unreadable), (1, 1));
    assert_eq!(report.changed_meanwhile, 0);
    assert!(steps > 1, "progress is reported per step");
    problems.sort();
    assert_eq!(problems.len(), 2);
    assert!(
        problems[0].0 == "fv:clicks:bad" && problems[0].1.contains("`count`"),
        "{problems:?}"
    );
    assert!(problems[1].0 == "fv:gone:1" && problems[1].1.contains("not in the definitions"));

    let keys: Vec<String> = (0..1_200)
        .map(|i| entity_key("user", &format!("tenant:{i}")))
        .collect();
    let hashes = freshet_store::read_hashes(&mut conn, &keys).await.unwrap();
    for (i, hash) in hashes.iter().enumerate() {
        let views = freshet_store::decode(hash).unwrap();
        let clicks = &views["clicks"];
        if i == 1 {
            assert_eq!(clicks.version, 5_000, "the newer value is kept");
            assert_eq!(clicks.values["count"], Value::Long(77));
        } else {
            assert_eq!(clicks.version, 100 + i as u64);
            assert_eq!(clicks.values["count"], Value::Long(i as i64));
            assert_eq!(clicks.values["mean"], Value::Double(0.5));
        }
        assert_eq!(views.contains_key("purchases"), i == 0);
    }
    let ttl = pttl(&mut conn, &keys[0]).await;
    assert!(
        ttl > 600_000 && ttl <= 3_600_000,
        "the legacy expiry is kept: {ttl}"
    );
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("fv:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["fv:clicks:bad", "fv:gone:1"]);

    // Again: nothing more to move, nothing changes.
    let again = freshet_store::migrate_legacy(&mut conn, &views, |_| {}, |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.scanned, again.moved, again.already_newer), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_takes_the_same_writes_and_reads_across_its_nodes() {
    use freshet_store::StoreTarget;
    let cluster = freshet_testkit::TestRedisCluster::start();
    let target = StoreTarget::parse(&cluster.url(), None).unwrap();
    assert!(target.is_cluster());
    let mut conn = target.connect().await.unwrap();
    let hour = storage(3_600_000);
    let updates: Vec<FeatureUpdate> = (0..2_500).map(|i| update(&i.to_string(), 5, i)).collect();
    let applied = conn
        .write_updates(updates.iter().map(|u| (u, &hour)), Writer::Processor)
        .await
        .unwrap();
    assert_eq!(applied, 2_500);
    // Older versions are refused on every node, as on one server.
    let older: Vec<FeatureUpdate> = (0..2_500).map(|i| update(&i.to_string(), 4, -1)).collect();
    let applied = conn
        .write_updates(older.iter().map(|u| (u, &hour)), Writer::Backfill)
        .await
        .unwrap();
    assert_eq!(applied, 0);
    let fields: &[&str] = &["clicks:count", "clicks:_version"];
    let requests: Vec<(String, &[&str])> = (0..2_600)
        .map(|i| (entity_key("user", &i.to_string()), fields))
        .collect();
    let read = conn.read_fields(&requests).await.unwrap();
    for (i, r) in read.iter().enumerate() {
        if i < 2_500 {
            assert_eq!(r.get(0), Some(i.to_string().as_str()), "entity {i}");
            assert_eq!(r.get(1), Some("00000000000000000005"));
        } else {
            assert!(r.is_empty(), "entity {i} was never written");
        }
    }
    let hashes = conn
        .read_hashes(
            &requests[..3]
                .iter()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(
        freshet_store::decode(&hashes[2]).unwrap()["clicks"].values,
        updates[2].values
    );
    // Every node holds some of the entities.
    for (node, mut c) in cluster.node_connections().await {
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert!(
            (600..=1_100).contains(&size),
            "{node}: {size} of 2,500 entities"
        );
    }
    // A key of the wrong type fails its own read only.
    let mut node = redis::cluster::ClusterClient::new(cluster.node_urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(entity_key("user", "7"))
        .arg("not a hash")
        .query_async(&mut node)
        .await
        .unwrap();
    let read = conn.read_fields(&requests[6..9]).await.unwrap();
    assert!(read[1].error().unwrap().contains("WRONGTYPE"), "{read:?}");
    assert_eq!(read[0].get(0), Some("6"));
    assert_eq!(read[2].get(0), Some("8"));
    // A cluster URL must list nodes.
    assert!(StoreTarget::parse("redis+cluster://", None).is_err());
}
