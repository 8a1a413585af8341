//! Scale-out, proven against a single instance: processor instances of one deployment
//! share a 6-partition source through the consumer group while it streams in, scaled
//! 1 -> 3 -> 2 -> 1 and SIGKILLed at random moments; partitions move with their state
//! through the changelog. At the end Redis (values and versions) and the latest
//! feature_updates record of every (view, entity) equal a fault-free single instance's on
//! the same input, and no (view, entity, version) was ever published with two different
//! values. A second test loses an instance's disk and restores it from the changelog.
//!
//! CI runs 200,000 events and 5 kills; `FRESHET_SCALING_EVENTS`, `FRESHET_SCALING_KILLS`
//! change them. `FRESHET_TEST_PROCESSOR_LOGS=1` shows the instances' logs.

mod common;

use common::*;
use freshet_testkit::TestStack;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SOURCE_PARTITIONS: i32 = 6;

type Published = BTreeMap<(String, String, u64), BTreeMap<String, String>>;
/// The latest published record of each (view, entity): its version and values.
type Latest = BTreeMap<(String, String), (u64, BTreeMap<String, String>)>;

/// Every (view, entity, version) published on `topic` with its values; fails if one was
/// published twice with different values.
async fn published_once_each(stack: &TestStack, topic: &str) -> Published {
    let mut out = Published::new();
    let mut conflicts = Vec::new();
    for PublishedRecord { key, values, .. } in published(stack, topic, 3).await {
        match out.get(&key) {
            Some(earlier) if *earlier != values => {
                conflicts.push(format!("{key:?}: {earlier:?} and {values:?}"))
            }
            _ => {
                out.insert(key, values);
            }
        }
    }
    assert!(
        conflicts.is_empty(),
        "{} (view, entity, version) published with two different values, first: {:#?}",
        conflicts.len(),
        &conflicts[..conflicts.len().min(5)]
    );
    out
}

/// The record of the largest version of each (view, entity).
fn latest(published: &Published) -> Latest {
    let mut out = BTreeMap::new();
    for ((view, entity, version), values) in published {
        // Keys are sorted by version within a (view, entity): the last one wins.
        out.insert((view.clone(), entity.clone()), (*version, values.clone()));
    }
    out
}

fn assert_same_as_reference(
    what: &str,
    got: &StoredByKey,
    reference: &StoredByKey,
    got_latest: &Latest,
    reference_latest: &Latest,
) {
    let mismatched: Vec<String> = got
        .iter()
        .filter(|(k, v)| reference.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k:?}: {what} {v:?}, single instance {:?}",
                reference.get(k)
            )
        })
        .collect();
    assert!(
        mismatched.is_empty(),
        "Redis after {what} differs from a fault-free single instance in {} of {} keys: {:#?}",
        mismatched.len(),
        got.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    let mismatched: Vec<String> = reference_latest
        .iter()
        .filter(|(k, v)| got_latest.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k:?}: single instance {v:?}, {what} {:?}",
                got_latest.get(k)
            )
        })
        .collect();
    assert!(
        mismatched.is_empty(),
        "the latest feature_updates record differs in {} of {} (view, entity): {:#?}",
        mismatched.len(),
        reference_latest.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    assert_eq!(got_latest.len(), reference_latest.len());
}

/// Runs a fault-free single instance over the whole input and returns what it left.
async fn reference_run(
    stack: &TestStack,
    dir: &std::path::Path,
    expected: &BTreeMap<(String, String), BTreeMap<String, freshet_core::Value>>,
) -> (StoredByKey, Latest) {
    let defs = definitions();
    let single = Deployment::new(dir, "single", 1);
    let mut running = single.start(stack);
    let diffs = wait_for_oracle(
        &single.redis_url(stack),
        expected,
        &defs,
        Duration::from_secs(300),
    )
    .await;
    assert!(diffs.is_empty(), "the single instance: {diffs:#?}");
    running.terminate();
    let redis = redis_values(&single.redis_url(stack), expected.keys().cloned()).await;
    let updates = published_once_each(stack, &single.output_topic).await;
    (redis, latest(&updates))
}

struct Instances<'a> {
    stack: &'a TestStack,
    deployment: &'a Deployment,
    running: BTreeMap<String, (Running, u16)>,
    started: Instant,
}

impl Instances<'_> {
    fn log(&self, what: &str) {
        eprintln!(
            "[{:>5.1}s] {what}; running: {:?}",
            self.started.elapsed().as_secs_f64(),
            self.running.keys().collect::<Vec<_>>()
        );
    }

    fn start(&mut self, name: &str) {
        let port = freshet_localstack::free_port();
        let running = self.deployment.start_instance(self.stack, name, port);
        self.running.insert(name.to_string(), (running, port));
        self.log(&format!("started {name}"));
    }

    fn stop(&mut self, name: &str) {
        let (mut running, _) = self.running.remove(name).expect("running");
        running.terminate();
        self.log(&format!("stopped {name} (SIGTERM)"));
    }

    fn kill_and_restart(&mut self, rng: &mut impl Rng) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        let name = names[rng.random_range(0..names.len())].clone();
        let (mut running, _) = self.running.remove(&name).expect("running");
        running.kill();
        self.log(&format!("killed {name} (SIGKILL)"));
        self.start(&name);
    }

    /// Partitions each running instance says it owns.
    fn owned(&self) -> BTreeMap<String, f64> {
        self.running
            .iter()
            .map(|(name, (_, port))| {
                let scrape = scrape_metrics(*port);
                (
                    name.clone(),
                    metric(&scrape, "freshet_processor_assigned_partitions").unwrap_or(-1.0),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_scaled_1_3_2_1_and_killed_end_equal_to_one_fault_free_instance() {
    let events = env_or("FRESHET_SCALING_EVENTS", 200_000);
    let kills = env_or("FRESHET_SCALING_KILLS", 5) as usize;
    let stack = std::sync::Arc::new(TestStack::start());
    stack.create_topic(TOPIC, SOURCE_PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let scaled = Deployment::new(dir.path(), "scaled", 0);

    // About 50 s of input, while the deployment changes shape every few seconds (a task
    // of its own, so stopping an instance does not hold it up).
    let rate = events as f64 / 50.0;
    let producing = {
        let stack = stack.clone();
        tokio::spawn(async move { produce(&stack, sim(23, 2_000), events, rate).await })
    };
    let mut instances = Instances {
        stack: &stack,
        deployment: &scaled,
        running: BTreeMap::new(),
        started: Instant::now(),
    };
    let reshaping = async {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // (second, what): the shape changes and, at random moments between them, kills.
        let mut plan: Vec<(f64, &str)> = vec![
            (0.0, "start a"),
            (12.0, "start b"),
            (12.5, "start c"),
            (32.0, "stop c"),
            (47.0, "stop b"),
        ];
        for _ in 0..kills {
            plan.push((rng.random_range(4.0..55.0), "kill"));
        }
        plan.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, what) in plan {
            let wait = Duration::from_secs_f64(at).saturating_sub(instances.started.elapsed());
            tokio::time::sleep(wait).await;
            match what {
                "kill" => instances.kill_and_restart(&mut rng),
                other => {
                    let (verb, name) = other.split_once(' ').unwrap();
                    match verb {
                        "start" => instances.start(name),
                        _ => instances.stop(name),
                    }
                }
            }
            instances.log(&format!("owned partitions {:?}", instances.owned()));
        }
        instances
    };
    let (produced, mut instances) = tokio::join!(producing, reshaping);
    assert_eq!(produced.unwrap(), events);

    let defs = definitions();
    let input = input_events_of(&stack, SOURCE_PARTITIONS).await;
    assert_eq!(input.iter().map(Vec::len).sum::<usize>() as u64, events);
    let expected = oracle(&defs, &input);
    let diffs = wait_for_oracle(
        &scaled.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(300),
    )
    .await;
    assert!(
        diffs.is_empty(),
        "after scaling and {kills} kills: {} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
    // The last instance owns every partition, and partitions did move with state.
    let (_, (_, port)) = instances.running.iter().next().expect("one instance left");
    let scrape = scrape_metrics(*port);
    assert_eq!(
        metric(&scrape, "freshet_processor_assigned_partitions"),
        Some(SOURCE_PARTITIONS as f64)
    );
    let names: Vec<String> = instances.running.keys().cloned().collect();
    for name in names {
        instances.stop(&name);
    }
    let scaled_redis = redis_values(&scaled.redis_url(&stack), expected.keys().cloned()).await;
    let scaled_latest = latest(&published_once_each(&stack, &scaled.output_topic).await);

    let (single_redis, single_latest) = reference_run(&stack, dir.path(), &expected).await;
    assert_same_as_reference(
        "scaling and kills",
        &scaled_redis,
        &single_redis,
        &scaled_latest,
        &single_latest,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_whose_disk_is_lost_restores_from_the_changelog() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, SOURCE_PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let lossy = Deployment::new(dir.path(), "lossy", 0);
    let port = freshet_localstack::free_port();

    // Half the input, processed; the instance stops and its disk is lost.
    let mut simulator = freshet_producer::simulate::Simulator::new(sim(31, 500)).unwrap();
    let first: Vec<_> = simulator.by_ref().take(20_000).collect();
    let second: Vec<_> = simulator.take(20_000).collect();
    produce_events(&stack, first.into_iter(), 20_000, 0.0, None).await;
    let mut running = lossy.start_instance(&stack, "a", port);
    let processed = "freshet_processor_events_total{topic=\"user_events\"}";
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&scrape_metrics(port), processed) != Some(20_000.0) {
        assert!(
            Instant::now() < deadline,
            "the first half was not processed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.terminate();
    std::fs::remove_dir_all(lossy.instance_dir("a")).unwrap();

    // It comes back on an empty disk, restores from the changelog, and goes on.
    produce_events(&stack, second.into_iter(), 20_000, 0.0, None).await;
    let mut running = lossy.start_instance(&stack, "a", port);
    let defs = definitions();
    let input = input_events_of(&stack, SOURCE_PARTITIONS).await;
    let expected = oracle(&defs, &input);
    let diffs = wait_for_oracle(
        &lossy.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(180),
    )
    .await;
    assert!(diffs.is_empty(), "after the disk loss: {diffs:#?}");
    let scrape = scrape_metrics(port);
    assert_eq!(
        metric(
            &scrape,
            "freshet_processor_restores_total{from=\"changelog\"}"
        ),
        Some(SOURCE_PARTITIONS as f64),
        "every partition came from the changelog"
    );
    assert!(metric(&scrape, "freshet_processor_restore_records_total").unwrap() > 0.0);
    assert_eq!(
        metric(
            &scrape,
            "freshet_processor_events_total{topic=\"user_events\"}"
        ),
        Some(20_000.0),
        "only the second half was processed again"
    );
    running.terminate();
    let lossy_redis = redis_values(&lossy.redis_url(&stack), expected.keys().cloned()).await;
    let lossy_latest = latest(&published_once_each(&stack, &lossy.output_topic).await);

    let (single_redis, single_latest) = reference_run(&stack, dir.path(), &expected).await;
    assert_same_as_reference(
        "the disk loss",
        &lossy_redis,
        &single_redis,
        &lossy_latest,
        &single_latest,
    );
}

/// Waits up to a minute until `check` holds.
async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` to a running instance.
fn signal(running: &Running, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(running.id() as i32), signal).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_instance_whose_partitions_moved_on_changes_nothing_when_it_wakes() {
    let stack = std::sync::Arc::new(TestStack::start());
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let zombie = Deployment::new(dir.path(), "zombie", 0);
    let (port_a, port_b) = (
        freshet_localstack::free_port(),
        freshet_localstack::free_port(),
    );
    let owned = |port| {
        metric(
            &scrape_metrics(port),
            "freshet_processor_assigned_partitions",
        )
    };
    // Events keep coming while instance a is paused in the middle of its work (a long GC
    // pause, a stalled VM), loses its partitions to b, and wakes up.
    let events = 30_000;
    let producing = {
        let stack = stack.clone();
        tokio::spawn(
            async move { produce(&stack, sim(41, 300), events, events as f64 / 30.0).await },
        )
    };
    let pausing = async {
        let a = zombie.start_instance(&stack, "a", port_a);
        wait_until("a owns every partition and processes", || {
            let scrape = scrape_metrics(port_a);
            let processed = metric(
                &scrape,
                "freshet_processor_events_total{topic=\"user_events\"}",
            );
            metric(&scrape, "freshet_processor_assigned_partitions") == Some(PARTITIONS as f64)
                && processed.is_some_and(|n| n >= 2_000.0)
        })
        .await;
        signal(&a, nix::sys::signal::Signal::SIGSTOP);
        let b = zombie.start_instance(&stack, "b", port_b);
        wait_until("b owns every partition once a's session expired", || {
            owned(port_b) == Some(PARTITIONS as f64)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(&a, nix::sys::signal::Signal::SIGCONT);
        (a, b)
    };
    let (produced, (mut a, mut b)) = tokio::join!(producing, pausing);
    assert_eq!(produced.unwrap(), events);

    let defs = definitions();
    let input = input_events(&stack).await;
    let expected = oracle(&defs, &input);
    let diffs = wait_for_oracle(
        &zombie.redis_url(&stack),
        &expected,
        &defs,
        Duration::from_secs(180),
    )
    .await;
    assert!(diffs.is_empty(), "after the pause: {diffs:#?}");
    a.kill();
    b.terminate();
    let zombie_redis = redis_values(&zombie.redis_url(&stack), expected.keys().cloned()).await;
    let zombie_latest = latest(&published_once_each(&stack, &zombie.output_topic).await);
    let (single_redis, single_latest) = reference_run(&stack, dir.path(), &expected).await;
    assert_same_as_reference(
        "a paused instance",
        &zombie_redis,
        &single_redis,
        &zombie_latest,
        &single_latest,
    );
}
