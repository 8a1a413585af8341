//! A SIGTERM is a clean stop at any moment, even while the processor is still starting
//! (before it has joined its group): an orchestrator scaling in right after scaling out
//! must not see a failed exit.

mod common;

use common::*;
use freshet_testkit::TestStack;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_while_starting_is_a_clean_stop() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "starting", 0);
    // Timed from when the process catches SIGTERM: how long loading a binary takes after
    // the fork is the machine's (under CI's load, more than 20 ms), and no program handles
    // a signal before its handler exists.
    for after_ms in [0, 20, 60, 150, 400] {
        let mut processor = deployment.start(&stack);
        wait_until_it_catches_sigterm(processor.id());
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        // Asserts the exit status is success: the signal's default action would kill it.
        processor.terminate();
    }
}

/// Waits until the processor catches SIGTERM (its handler is installed: bit 15 of
/// `SigCgt` in `/proc/{pid}/status`, read once the process runs the processor's binary).
fn wait_until_it_catches_sigterm(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().ends_with("freshet-processor") {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let caught = status
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
                .unwrap();
            if caught & (1 << (15 - 1)) != 0 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the processor did not catch SIGTERM within 30 s of its start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
