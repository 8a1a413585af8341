//! Scale-out figures, each beside its baseline from the same run (these machines' speed
//! drifts from minute to minute, so only ratios within one run mean anything):
//!
//! - the changelog's cost: a catch-up of a pre-filled 6-partition topic with the changelog
//!   on, as a ratio to one with it off (`--changelog off`);
//! - restore: an instance with an empty disk taking every partition over from the
//!   changelog, in changelog records per second, beside the catch-up's events per second;
//! - two instances against one on the same backlog (on this 2-core machine they share the
//!   cores with each other, the broker and Redis, so this shows the cost of a group of
//!   two, not a speed-up).
//!
//! Rounds take turns (off, on, restore, two), and the median round of each ratio is the
//! figure. `cargo bench -p freshet-processor --bench scaling`; `FRESHET_BENCH_EVENTS`
//! (default 600000) sets the backlog, `FRESHET_BENCH_ROUNDS` (default 3) the rounds.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{env_or, produce, scrape_metrics as scrape};
use freshet_producer::simulate::SimConfig;
use freshet_testkit::TestStack;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "user_events";
const PARTITIONS: i32 = 6;

/// A series' value in a scrape, 0 when it is not there yet.
fn metric(scrape: &str, series: &str) -> f64 {
    common::metric(scrape, series).unwrap_or(0.0)
}

/// One processor instance of group `group`, with its own state folder and metrics port.
struct Instance {
    child: Child,
    port: u16,
}

impl Instance {
    fn start(stack: &TestStack, group: &str, instance: &str, dir: &Path, flags: &[&str]) -> Self {
        let port = freshet_localstack::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_freshet-processor"))
            .args(flags)
            .args([
                "--features-dir",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../features")
                    .to_str()
                    .unwrap(),
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

fn processed(instances: &[Instance]) -> f64 {
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
fn catch_up(
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

/// An instance with an empty disk joining `group`, whose state is all in the changelog:
/// changelog records per second while restoring, and the records read.
fn restore(stack: &TestStack, group: &str, dir: &Path) -> (f64, f64) {
    let instance = Instance::start(stack, group, "restored", dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let scraped = scrape(instance.port);
        let from_changelog = metric(
            &scraped,
            "freshet_processor_restores_total{from=\"changelog\"}",
        );
        if from_changelog >= PARTITIONS as f64 {
            let records = metric(&scraped, "freshet_processor_restore_records_total");
            let seconds = metric(&scraped, "freshet_processor_restore_seconds_total");
            return (records / seconds, records);
        }
        assert!(Instant::now() < deadline, "the restore did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

#[tokio::main]
async fn main() {
    let n = env_or("FRESHET_BENCH_EVENTS", 600_000);
    let rounds = env_or("FRESHET_BENCH_ROUNDS", 3).max(1);
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let backlog = SimConfig {
        seed: 3,
        start_ms: 1_700_000_000_000,
        events_per_second: 100.0,
        ..SimConfig::default()
    };
    produce(&stack, backlog, n, 0.0).await;
    println!("scale-out: {n} pre-filled events, {PARTITIONS} partitions, shipped definitions");
    let dir = tempfile::tempdir().unwrap();
    let (mut changelog_ratios, mut restore_ratios, mut two_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (off, _) = catch_up(
            &stack,
            &format!("off-{round}"),
            dir.path(),
            1,
            &["--changelog", "off"],
            n,
        );
        let group = format!("on-{round}");
        let (on, running) = catch_up(&stack, &group, dir.path(), 1, &[], n);
        drop(running);
        let (restore_rate, records) =
            restore(&stack, &group, &dir.path().join(format!("restore-{round}")));
        let (two, running) = catch_up(&stack, &format!("two-{round}"), dir.path(), 2, &[], n);
        drop(running);
        println!(
            "  round {round}: changelog off {off:>8.0} events/s, on {on:>8.0} ({:.2}); restore {restore_rate:>8.0} changelog records/s over {records:.0} records ({:.2} of the catch-up's events/s); two instances {two:>8.0} events/s ({:.2} of one)",
            on / off,
            restore_rate / on,
            two / on,
        );
        changelog_ratios.push(on / off);
        restore_ratios.push(restore_rate / on);
        two_ratios.push(two / on);
    }
    println!("  the median round of {rounds}:");
    println!(
        "  changelog on / off        : {:>6.2}  (target >= 0.80)",
        median(&mut changelog_ratios)
    );
    println!(
        "  restore records/s / events/s: {:>6.2}  (changelog records restored per second, to catch-up events per second)",
        median(&mut restore_ratios)
    );
    println!(
        "  two instances / one       : {:>6.2}  (one 2-core machine shared with the broker and Redis)",
        median(&mut two_ratios)
    );
}
