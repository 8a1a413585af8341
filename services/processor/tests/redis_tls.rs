//! Redis over TLS, with ACL users: the processor writes through `rediss://` as a user
//! that may write, and the serving API reads through it as a user that may only read
//! (single lookups, a batch, and the near cache's invalidation connection), each checking
//! the server's certificate against the test's own CA (`--redis-ca-cert`). Every value in
//! Redis equals the oracle's, and serving answers exactly what Redis holds.

mod common;

use common::*;
use freshet_testkit::TestStack;
use freshet_testkit::TlsRedis;
use std::time::Duration;

const WRITER: &str = "pipeline on >pipe-pass-6613 ~* &* +@all";
const READER: &str = "api on >api-pass-2207 ~* +@read +@connection +client";

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_writes_and_serving_reads_over_tls_as_acl_users() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let redis = TlsRedis::start(&[WRITER, READER]);
    // This test's own reads check the server against the same CA.
    freshet_store::tls::set_ca_certificate(&redis.ca_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Recent event times, so serving's TTLs keep every value.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let events = 1_000;
    let config = freshet_producer::simulate::SimConfig {
        start_ms: now - 300_000,
        ..sim(21, 60)
    };
    assert_eq!(produce(&stack, config, events, 0.0).await, events);

    let mut deployment = Deployment::new(dir.path(), "tls", 0);
    deployment.redis_url = Some(redis.url("pipeline", "pipe-pass-6613", 0));
    let ca = redis.ca_path().display().to_string();
    let mut running = deployment.start_with(&stack, &["--redis-ca-cert", &ca]);
    let defs = definitions();
    let expected = oracle(&defs, &input_events(&stack).await);
    let diffs = wait_for_oracle(
        &deployment.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    running.kill();
    let stored = redis_values(&deployment.redis_url(&stack), expected.keys().cloned()).await;

    // The reader may read, not write.
    let mut reader = freshet_store::tls::client(redis.url("api", "api-pass-2207", 0).as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let denied: redis::RedisResult<()> = redis::cmd("SET")
        .arg("freshet-test")
        .arg("x")
        .query_async(&mut reader)
        .await;
    assert!(
        denied.as_ref().is_err_and(|e| e.code() == Some("NOPERM")),
        "{denied:?}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serving_config = freshet_serving::ServingConfig::new(redis.url("api", "api-pass-2207", 0));
    let serving_defs = defs.clone();
    tokio::spawn(async move {
        freshet_serving::serve(
            listener,
            &serving_defs,
            &serving_config,
            freshet_serving::metrics::ServingMetrics::new(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let entities: Vec<String> = expected
        .keys()
        .map(|(_, entity)| entity.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let served_batch: serde_json::Value = loop {
        let response = http
            .post(format!("{base}/features/batch"))
            .json(&serde_json::json!({ "entity_ids": entities }))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 200 => break r.json().await.unwrap(),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut compared = 0;
    for ((view, entity), stored) in &stored {
        let (version, values) = stored.as_ref().expect("every oracle key is stored");
        let single: serde_json::Value = http
            .get(format!("{base}/features/{entity}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let in_batch = served_batch["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["entity_id"] == entity.as_str())
            .unwrap_or_else(|| panic!("{entity} in the batch answer"));
        for served in [&single, in_batch] {
            let answer = &served["views"][view];
            assert_eq!(answer["status"], "found", "{view}/{entity}: {served}");
            assert_eq!(answer["version"], *version, "{view}/{entity}: {served}");
            for (feature, value) in values {
                assert_eq!(
                    answer["features"][feature]["value"],
                    serde_json::to_value(value).unwrap(),
                    "{view}/{entity}/{feature}: {served}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 200, "{compared} values compared");
}
