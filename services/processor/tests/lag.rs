//! Consumer lag is what is left to process: large while the processor works through a
//! backlog, zero once it has caught up. (It comes from fetch responses; the broker's
//! ListOffsets answer cannot be trusted on tansu.)

mod common;

use common::*;
use freshet_testkit::TestStack;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn lag_shows_the_backlog_and_falls_to_zero_once_caught_up() {
    const EVENTS: u64 = 20_000;
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    produce(&stack, sim(4, 300), EVENTS, 0.0).await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "lagging", 0);
    // Tiny epochs (2,000 transactions for the backlog), so working through it takes
    // several of the one-second statistics intervals the lag comes from, however fast
    // the engine gets: with 100 records per epoch it was sometimes done within one.
    let _processor = deployment.start_with(&stack, &["--epoch-max-records", "10"]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut highest: f64 = 0.0;
    let mut caught_up_at = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no catch-up; highest lag {highest}"
        );
        let scrape = scrape_metrics(deployment.metrics_port);
        let lag = freshet_testkit::metrics::sum(&scrape, "freshet_processor_consumer_lag");
        let done = metric(
            &scrape,
            "freshet_processor_events_total{topic=\"user_events\"}",
        );
        if let Some(lag) = lag {
            highest = highest.max(lag);
            if done == Some(EVENTS as f64) {
                let since = *caught_up_at.get_or_insert_with(Instant::now);
                // Statistics arrive every second: give them two rounds after the end.
                if since.elapsed() > Duration::from_secs(3) {
                    assert_eq!(lag, 0.0, "nothing is left once every event is processed");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        highest > 1_000.0,
        "the backlog showed as lag while it was worked through: highest {highest}"
    );
}
