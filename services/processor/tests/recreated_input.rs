//! A checkpoint that resumes from offsets the input topic does not have (the topic was
//! recreated, as the local stack's in-memory broker does on every start) stops the
//! processor with an error that says so and what to do, instead of a processor that
//! waits forever or mixes two topics' offsets in one state.

mod common;

use common::*;
use freshet_testkit::TestStack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_beyond_a_recreated_topic_stops_the_processor_with_the_reason() {
    const EVENTS: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "recreated", 0);
    {
        let stack = TestStack::start();
        stack.create_topic(TOPIC, PARTITIONS).await;
        produce(&stack, sim(5, 50), EVENTS, 0.0).await;
        let mut processor = deployment.start(&stack);
        wait_for_events(&deployment, EVENTS).await;
        processor.terminate();
    }

    // A new broker: the same topic, recreated empty, and records arriving once the
    // processor runs (as in the local stack, whose producer starts last).
    let stack = std::sync::Arc::new(TestStack::start());
    stack.create_topic(TOPIC, PARTITIONS).await;
    let producing = {
        let stack = stack.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            produce(&stack, sim(6, 50), 30, 0.0).await;
        })
    };
    let (status, stderr) = deployment.run_until_exit(&stack, Duration::from_secs(60));
    producing.await.unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("the topic was recreated or truncated")
            && stderr.contains("user_events/")
            && stderr.contains(&deployment.state_dir.display().to_string()),
        "the error names the cause, the offsets and the folder to remove: {stderr}"
    );
}
