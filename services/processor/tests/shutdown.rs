//! A SIGTERM is a clean stop at any moment, even while the processor is still starting
//! (before it has joined its group): an orchestrator scaling in right after scaling out
//! must not see a failed exit.

mod common;

use common::*;
use freshet_testkit::TestStack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_while_starting_is_a_clean_stop() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "starting", 0);
    // From 20 ms on: before that the process may not have reached `main` at all.
    for after_ms in [20, 60, 150, 400] {
        let mut processor = deployment.start(&stack);
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        // Asserts the exit status is success: the signal's default action would kill it.
        processor.terminate();
    }
}
