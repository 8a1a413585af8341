//! A schema registry that needs basic auth (Freshet's, with a users file): the processor
//! reads the events' writer schemas and registers its output schema with a writer's
//! credentials and computes every feature; without credentials it stops at start, saying
//! the registry refused it and which flag to set, and never echoes a password.

mod common;

use common::*;
use freshet_testkit::TestStack;
use std::time::Duration;

const PASSWORD: &str = "pipe-pass-3391";

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_works_with_registry_credentials_and_stops_clearly_without() {
    let stack = TestStack::start_with_registry_users(&[("pipeline", "write", PASSWORD)]);
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();

    // Without credentials, or with a wrong password: a clear stop at start.
    for flags in [vec![], vec!["--registry-basic-auth", "pipeline:wrong-7781"]] {
        let refused = Deployment::new(dir.path(), "refused", 1);
        let (status, stderr) = refused.run_until_exit_with(&stack, &flags, Duration::from_secs(60));
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the schema registry at {} refused the request with HTTP 401",
                stack.registry_url()
            )) && stderr.contains("--registry-basic-auth USER:PASSWORD"),
            "{stderr}"
        );
        assert!(!stderr.contains("wrong-7781"), "{stderr}");
    }

    let produced = produce(&stack, sim(5, 100), 2_000, 0.0).await;
    assert_eq!(produced, 2_000);
    let deployment = Deployment::new(dir.path(), "secured", 0);
    let password_flag = format!("pipeline:{PASSWORD}");
    let mut running = deployment.start_with(&stack, &["--registry-basic-auth", &password_flag]);
    let defs = definitions();
    let input = input_events(&stack).await;
    let expected = oracle(&defs, &input);
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
    // Its output records decode through the secured registry, with the schema it registered.
    let updates = published(&stack, &deployment.output_topic, PARTITIONS).await;
    let entities: std::collections::BTreeSet<_> =
        updates.iter().map(|record| record.key.1.clone()).collect();
    assert_eq!(
        entities.len(),
        expected
            .keys()
            .map(|(_, e)| e)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    running.kill();
}
