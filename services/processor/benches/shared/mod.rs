//! What the processor's benches share: processor instances started from this build's
//! binary, their progress read from `/metrics`, and a timed catch-up.

#![allow(dead_code)]

use crate::common::scrape_metrics as scrape;
use freshet_testkit::TestStack;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A series' value in a scrape, 0 when it is not there yet.
pub fn metric(scrape: &str, series: &str) -> f64 {
    crate::common::metric(scrape, series).unwrap_or(0.0)
}

/// One processor instance of group `group`, with its own state folder and metrics port.
pub struct Instance {
    pub child: Child,
    pub port: u16,
}

impl Instance {
    pub fn start(
        stack: &TestStack,
        group: &str,
        instance: &str,
        dir: &Path,
        flags: &[&str],
    ) -> Self {
        let port = freshet_localstack::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_freshet-processor"))
            .args(flags)
            .args([
                "--features-dir",
                crate::common::features_dir().to_str().unwrap(),
            ])
            .args(["--brokers", &stack.brokers()])
            .args(["--registry-url", &stack.registry_url()])
            .args(["--redis-url", &stack.redis_url()])
            .args(["--state-dir", dir.join(instance).to_str().unwrap()])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--group-id", group, "--instance-id", instance])
            .args(["--output-topic", &format!("updates_{group}")])
            .args(["--late-events", "drop", "--stack-dir", "/nonexistent"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, port }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn processed(instances: &[Instance]) -> f64 {
    instances
        .iter()
        .map(|i| {
            metric(
                &scrape(i.port),
                "freshet_processor_events_total{topic=\"user_events\"}",
            )
        })
        .sum()
}

/// A catch-up of the whole backlog by `instances` instances of a new group, started
/// together: events per second, timed from the first delivered epoch (whose events are
/// not counted), and the rebalances it took.
pub fn catch_up(
    stack: &TestStack,
    group: &str,
    dir: &Path,
    instances: usize,
    flags: &[&str],
    n: u64,
) -> (f64, Vec<Instance>) {
    let running: Vec<Instance> = (0..instances)
        .map(|i| Instance::start(stack, group, &format!("i{i}"), dir, flags))
        .collect();
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = processed(&running);
        if done > 0.0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= n as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "the catch-up did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (started, uncounted) = first.unwrap();
    assert!(uncounted < n as f64, "raise FRESHET_BENCH_EVENTS");
    (
        (n as f64 - uncounted) / started.elapsed().as_secs_f64(),
        running,
    )
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}
