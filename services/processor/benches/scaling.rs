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
mod shared;

use common::{env_or, produce, scrape_metrics as scrape};
use freshet_producer::simulate::SimConfig;
use freshet_testkit::TestStack;
use shared::{catch_up, median, metric, Instance};
use std::path::Path;
use std::time::{Duration, Instant};

const TOPIC: &str = "user_events";
const PARTITIONS: i32 = 6;

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
