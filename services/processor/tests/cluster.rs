//! The processor and backfill against a real Redis Cluster (three masters from
//! `redis-server` processes): the same values as the oracle, each entity's views in one
//! hash on its slot's node.

mod common;

use common::*;
use freshet_backfill::{self as backfill, BackfillConfig, Input};
use freshet_testkit::{TestRedisCluster, TestStack};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_and_a_backfill_write_every_value_to_a_redis_cluster() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let cluster = TestRedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut deployment = Deployment::new(dir.path(), "cluster", 0);
    deployment.redis_url = Some(cluster.url());
    let mut processor = deployment.start(&stack);
    produce(&stack, sim(17, 120), 4_000, 0.0).await;
    let defs = definitions();
    let expected = oracle(&defs, &input_events(&stack).await);
    assert!(
        expected.len() > 100,
        "{} (view, entity) pairs",
        expected.len()
    );
    let diffs = wait_for_oracle(&cluster.url(), &expected, &defs, Duration::from_secs(90)).await;
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    processor.kill();
    let live = redis_values(&cluster.url(), expected.keys().cloned()).await;

    // The entities are spread over all three nodes.
    for (node, mut conn) in cluster.node_connections().await {
        let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(keys > 10, "{node} holds {keys} entities");
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }

    // A backfill of the same history into the emptied cluster: the same values and versions.
    let config = BackfillConfig {
        views: defs.views.iter().map(|v| v.name.clone()).collect(),
        input: Input::Kafka {
            brokers: stack.brokers(),
            registry: stack.registry(),
        },
        from_ms: None,
        to_ms: None,
    };
    let computed = backfill::compute(&defs, &config, &mut |_| {}, &AtomicBool::new(false))
        .await
        .unwrap();
    let report = backfill::write(&cluster.url(), &computed).await.unwrap();
    assert_eq!(report.written, expected.len());
    let backfilled = redis_values(&cluster.url(), expected.keys().cloned()).await;
    assert_eq!(
        backfilled, live,
        "values and versions as the live processor wrote them"
    );
    // Again: every value is kept (the cluster holds the same versions).
    let again = backfill::write(&cluster.url(), &computed).await.unwrap();
    assert_eq!((again.written, again.kept_newer), (0, expected.len()));
}
