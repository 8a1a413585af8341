//! The serving API reading a real Redis Cluster (three masters): single and batch
//! lookups answer every entity from its slot's node.

use freshet_core::store_layout::{ViewStorage, Writer};
use freshet_store::StoreTarget;
use freshet_testkit::TestRedisCluster;
use serde_json::json;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_read_every_entity_from_a_redis_cluster() {
    let cluster = TestRedisCluster::start();
    let now = now_ms();
    let updates: Vec<_> = (0..1_000)
        .map(|i| click_update(&i.to_string(), 3, now - 1_000, i))
        .collect();
    let storage = ViewStorage {
        entity_type: "user".into(),
        ttl_ms: HOUR_MS,
    };
    let mut conn = StoreTarget::parse(&cluster.url(), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let written = conn
        .write_updates(updates.iter().map(|u| (u, &storage)), Writer::Processor)
        .await
        .unwrap();
    assert_eq!(written, 1_000);

    let serving = Serving::start(&cluster.url(), 1_000).await;
    let (status, body) = serving.get("/ready").await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    for id in [0, 1, 517, 999] {
        let (status, body) = serving.get(&format!("/features/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let view = &body["views"][CLICKS];
        assert_eq!(view["status"], "found", "{body}");
        assert_eq!(view["features"]["click_count_1m"]["value"], id, "{body}");
        assert_eq!(view["features"]["click_count_1m"]["source"], "store");
        assert_eq!(body["views"][PURCHASES]["status"], "missing");
    }
    let ids: Vec<String> = (0..1_000).rev().map(|i| i.to_string()).collect();
    let (status, body) = serving
        .post("/features/batch", &json!({ "entity_ids": ids }))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1_000);
    for (k, result) in results.iter().enumerate() {
        let expected = 999 - k;
        assert_eq!(result["entity_id"], expected.to_string());
        assert_eq!(
            result["views"][CLICKS]["features"]["click_count_1m"]["value"], expected,
            "{result}"
        );
    }
    // The near cache follows every master: entities cached from all three nodes, then
    // written anew, are served new within the staleness bound (100 ms).
    let source = |body: &serde_json::Value| {
        body["views"][CLICKS]["features"]["click_count_1m"]["source"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while source(&serving.get("/features/0").await.1) != "cache" {
        assert!(
            std::time::Instant::now() < deadline,
            "the near cache never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in 0..30 {
        serving.get(&format!("/features/{id}")).await;
        let (_, body) = serving.get(&format!("/features/{id}")).await;
        assert_eq!(source(&body), "cache", "{body}");
    }
    let newer: Vec<_> = (0..30)
        .map(|i| click_update(&i.to_string(), 4, now, 1_000 + i))
        .collect();
    conn.write_updates(newer.iter().map(|u| (u, &storage)), Writer::Processor)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for id in 0..30 {
        let (_, body) = serving.get(&format!("/features/{id}")).await;
        let view = &body["views"][CLICKS];
        assert_eq!(view["version"], 4, "entity {id}: {body}");
        assert_eq!(view["features"]["click_count_1m"]["value"], 1_000 + id);
    }
    let nodes_holding: usize = {
        let mut nodes = 0;
        for (_, mut c) in cluster.node_connections().await {
            // A node answers for the keys of its own slots (others are MOVED).
            let mut owned = 0;
            for id in 0..30 {
                let exists: redis::RedisResult<i64> = redis::cmd("EXISTS")
                    .arg(format!("fe:user:{id}"))
                    .query_async(&mut c)
                    .await;
                owned += usize::from(exists == Ok(1));
            }
            nodes += usize::from(owned > 0);
        }
        nodes
    };
    assert_eq!(nodes_holding, 3, "the rewritten entities span every master");

    // The cluster gone: a clean 503 that says so, not a 500.
    drop(cluster);
    let (status, body) = serving.get("/features/5").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable");
}
