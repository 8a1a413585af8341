//! Processor throughput as a ratio to a bare rdkafka consumer draining the same pre-filled
//! topic in the same run, and end-to-end freshness at a fixed input rate.
//!
//! The bare consumer and the processor take turns on the backlog: bare, processor, bare,
//! processor, ... bare. Each processor round's ratio is to the mean of the bare drains
//! just before and after it (the machine's speed drifts between minutes), and the median
//! round is the figure.
//!
//! `cargo bench -p freshet-processor`. `FRESHET_BENCH_EVENTS` (default 1000000) sets the
//! backlog, `FRESHET_BENCH_ROUNDS` (default 3) the processor rounds;
//! `FRESHET_BENCH_PROCESSOR_BINS` (comma-separated paths) makes the rounds alternate
//! between those processor binaries (round r runs binary r mod n) and prints each one's
//! median ratio, and measures each one's freshness after the broker alone, so two builds
//! are compared in one run;
//! `FRESHET_BENCH_RATE` (default 10000) and `FRESHET_BENCH_SECONDS` (default 10) the live
//! phase. Freshness is the processor's own histogram (Redis write time minus the
//! update's event time), read as bucket upper bounds.
//!
//! The live phase runs twice, each time on a stack of its own (the test broker's cost per
//! request grows with the records it holds, so a phase after the backlog would measure the
//! backlog): once with a bare rdkafka consumer reading the records as they come (the
//! baseline: read time minus the partition's clock, as the processor's freshness is
//! measured, and minus each record's create time, the broker's own latency) and once with
//! the processor.

#[path = "../tests/common/mod.rs"]
mod common;

use apache_avro::reader::datum::GenericDatumReader;
use common::{env_or, produce};
use freshet_producer::simulate::SimConfig;
use freshet_testkit::TestStack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "user_events";
const WARM_UP_SECONDS: u64 = 3;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn bare_consumer(brokers: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bare")
        .set("enable.auto.commit", "false")
        // As the processor's input consumer: the test broker holds a fetch this long.
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// When a span began: the whole machine's busy CPU seconds (every core, every process)
/// and the wall clock.
#[derive(Clone, Copy)]
struct CpuClock {
    busy: f64,
    at: Instant,
}

impl CpuClock {
    fn now() -> Self {
        Self {
            busy: freshet_testkit::cpu::machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    /// Machine CPU microseconds per event since `self`, and the share of the cores busy.
    fn per_event(&self, events: f64) -> (f64, f64) {
        let busy = freshet_testkit::cpu::machine_busy_seconds() - self.busy;
        (
            1e6 * busy / events.max(1.0),
            busy / (cores() * self.at.elapsed().as_secs_f64()),
        )
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// A bare drain of the backlog: events per second, and the machine's CPU per event
/// (broker included) with the share of the cores busy, from first record to last.
struct BareDrain {
    rate: f64,
    cpu_us: f64,
    busy: f64,
}

fn bare_drain(brokers: &str, n: u64) -> BareDrain {
    let consumer = bare_consumer(brokers);
    let mut seen = 0;
    let mut started = None;
    while seen < n {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(CpuClock::now);
            seen += 1;
        }
    }
    let started = started.unwrap();
    let (cpu_us, busy) = started.per_event(n as f64 - 1.0);
    BareDrain {
        rate: n as f64 / started.at.elapsed().as_secs_f64(),
        cpu_us,
        busy,
    }
}

/// How long after the last record is produced the baselines wait for the rest to be read.
const GRACE: Duration = Duration::from_secs(10);

/// What the broker alone gives, in seconds: p50 and p99 of two latencies, after the
/// warm-up, of records produced at `rate` and read by a bare consumer as they come.
struct BrokerLatency {
    /// Read time minus the partition's clock (the largest event time read from it so far),
    /// taken when each record is read: what the processor's freshness measures (the Redis
    /// write time minus the clock at the update), so the baseline to compare it with.
    from_clock: (f64, f64),
    /// Read time minus the record's create time (set by the producer when it sends): the
    /// broker's own latency, leaving out how far sending lags behind the events' times.
    from_create_time: (f64, f64),
    /// Records still unread [`GRACE`] after the end (they count as infinitely late: over
    /// long runs the test broker can fall behind for good).
    unread: u64,
}

async fn broker_latency(rate: u64, seconds: u64) -> BrokerLatency {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, 3).await;
    let total = rate * (WARM_UP_SECONDS + seconds);
    let brokers = stack.brokers();
    let measure_from = now_ms() + 1_000 * WARM_UP_SECONDS as i64;
    let deadline = Instant::now() + Duration::from_secs(WARM_UP_SECONDS + seconds) + GRACE;
    let reader = std::thread::spawn(move || {
        let schema = apache_avro::Schema::parse_str(freshet_producer::event::SCHEMA_V2).unwrap();
        let schema = GenericDatumReader::builder(&schema).build().unwrap();
        let consumer = bare_consumer(&brokers);
        let (mut from_clock, mut from_create_time) = (Vec::new(), Vec::new());
        let mut clocks = [i64::MIN; 3];
        let mut seen = 0;
        while seen < total && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                seen += 1;
                let now = now_ms();
                let clock = &mut clocks[m.partition() as usize];
                *clock = (*clock).max(event_time(m.payload().unwrap(), &schema));
                let created = m.timestamp().to_millis().unwrap_or(0);
                if created >= measure_from {
                    from_clock.push((now - *clock) as f64 / 1_000.0);
                    from_create_time.push((now - created) as f64 / 1_000.0);
                }
            }
        }
        let unread = total - seen;
        for latencies in [&mut from_clock, &mut from_create_time] {
            latencies.extend((0..unread).map(|_| f64::INFINITY));
            latencies.sort_by(f64::total_cmp);
        }
        (from_clock, from_create_time, unread)
    });
    produce(&stack, live_events(rate), total, rate as f64).await;
    let (from_clock, from_create_time, unread) =
        tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
    let quantiles = |latencies: &[f64]| {
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        (at(0.50), at(0.99))
    };
    BrokerLatency {
        from_clock: quantiles(&from_clock),
        from_create_time: quantiles(&from_create_time),
        unread,
    }
}

/// The event time of a record the producer wrote (Confluent's framing, a magic byte and a
/// four-byte schema id, then Avro of the v2 schema).
fn event_time(payload: &[u8], schema: &GenericDatumReader<'_>) -> i64 {
    let decoded = schema.read_value(&mut &payload[5..]).unwrap();
    let apache_avro::types::Value::Record(fields) = decoded else {
        panic!("not a record: {decoded:?}");
    };
    match fields.into_iter().find(|(name, _)| name == "timestamp") {
        Some((_, apache_avro::types::Value::Long(t)))
        | Some((_, apache_avro::types::Value::TimestampMillis(t))) => t,
        other => panic!("no timestamp: {other:?}"),
    }
}

fn live_events(rate: u64) -> SimConfig {
    SimConfig {
        seed: 2,
        start_ms: now_ms(),
        events_per_second: rate as f64,
        late_fraction: 0.0,
        ..SimConfig::default()
    }
}

fn scrape(port: u16) -> String {
    common::scrape_metrics(port)
}

/// Whether the processor answers on its metrics port (it listens once it has started).
fn metric(scrape: &str, series: &str) -> f64 {
    common::metric(scrape, series).unwrap_or(0.0)
}

/// Epochs delivered and the seconds spent in each delivery step (checkpoint, kafka, redis).
fn delivery_steps(scrape: &str) -> (f64, [f64; 3]) {
    let sum = |step: &str| {
        metric(
            scrape,
            &format!("freshet_processor_delivery_step_seconds_sum{{step=\"{step}\"}}"),
        )
    };
    (
        metric(scrape, "freshet_processor_epoch_duration_seconds_count"),
        [sum("checkpoint"), sum("kafka"), sum("redis")],
    )
}

/// The buckets of one histogram series, `series` being its `_bucket` name and the labels
/// before `le` (e.g. `freshet_processor_freshness_seconds_bucket{`): (upper bound,
/// cumulative count).
fn buckets(scrape: &str, series: &str) -> Vec<(f64, f64)> {
    let start = format!("{series}le=\"");
    scrape
        .lines()
        .filter(|l| l.starts_with(&start))
        .map(|l| {
            let le = l[start.len()..].split('"').next().unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (bound, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

const FRESHNESS: &str = "freshet_processor_freshness_seconds_bucket{";

fn step_series(step: &str) -> String {
    format!("freshet_processor_delivery_step_seconds_bucket{{step=\"{step}\",")
}

/// The `q` quantile of the observations between two scrapes: the upper bound of the bucket
/// it falls in, and an estimate interpolated linearly inside that bucket (as Prometheus'
/// `histogram_quantile` does).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(b, c)| {
            (
                *b,
                c - before.iter().find(|(bb, _)| bb == b).map_or(0.0, |x| x.1),
            )
        })
        .collect();
    let total = deltas.last().map_or(0.0, |x| x.1);
    let rank = q * total;
    let Some(i) = deltas.iter().position(|(_, c)| *c >= rank) else {
        return (f64::INFINITY, f64::INFINITY);
    };
    let (upper, count) = deltas[i];
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { deltas[i - 1] };
    if upper.is_infinite() || count <= below {
        return (upper, upper);
    }
    (
        upper,
        lower + (upper - lower) * (rank - below) / (count - below),
    )
}

/// The processor binaries the catch-up rounds take turns with.
fn processor_binaries() -> Vec<String> {
    match std::env::var("FRESHET_BENCH_PROCESSOR_BINS") {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').map(|s| s.trim().to_string()).collect()
        }
        _ => vec![env!("CARGO_BIN_EXE_freshet-processor").to_string()],
    }
}

fn start_processor_binary(binary: &str, stack: &TestStack, dir: &Path, port: u16) -> Child {
    Command::new(binary)
        .args(["--features-dir", common::features_dir().to_str().unwrap()])
        .args([
            "--brokers",
            &stack.brokers(),
            "--registry-url",
            &stack.registry_url(),
            "--redis-url",
            &stack.redis_url(),
        ])
        .args([
            "--state-dir",
            dir.to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        // A group of its own: in a group that already committed offsets, a processor
        // resumes where the last round ended.
        .args(["--group-id", &format!("bench-{port}")])
        .args(["--late-events", "drop", "--stack-dir", "/nonexistent"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// One processor catch-up of the pre-filled topic, on a fresh checkpoint and an empty
/// Redis (a version already there would make every write a no-op).
struct CatchUp {
    /// Events per second, timed from the first delivered epoch.
    rate: f64,
    /// The first epoch's events, not counted.
    uncounted: f64,
    /// The machine's CPU microseconds per event (broker, Redis and all), the processor's
    /// own, and the share of the cores busy, over the timed span.
    cpu_us: f64,
    process_cpu_us: f64,
    busy: f64,
    /// Epochs and where the processing thread waited, printed lines.
    details: String,
}

fn catch_up(binary: &str, stack: &TestStack, n: u64) -> CatchUp {
    let mut redis = redis::Client::open(stack.redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut redis).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = freshet_localstack::free_port();
    let mut processor = start_processor_binary(binary, stack, dir.path(), port);
    // The processor counts an epoch's events once the epoch is delivered, so the clock
    // starts at the first count seen, and the events counted then are not the run's: timed
    // from there, n events in all would credit the first epoch's (up to 100,000 records)
    // to no time at all.
    let mut first_count = None;
    loop {
        let scraped = scrape(port);
        let processed = metric(
            &scraped,
            "freshet_processor_events_total{topic=\"user_events\"}",
        );
        if processed > 0.0 && first_count.is_none() {
            first_count = Some((
                (
                    CpuClock::now(),
                    freshet_testkit::cpu::process_seconds(processor.id()),
                ),
                processed,
                scraped,
            ));
        }
        if processed >= n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ((started, process_started), uncounted, at_start) = first_count.unwrap();
    assert!(
        uncounted < n as f64,
        "the whole backlog fit in the first epoch; raise FRESHET_BENCH_EVENTS"
    );
    let catch_up_seconds = started.at.elapsed().as_secs_f64();
    let rate = (n as f64 - uncounted) / catch_up_seconds;
    let (cpu_us, busy) = started.per_event(n as f64 - uncounted);
    let process_cpu_us = 1e6
        * (freshet_testkit::cpu::process_seconds(processor.id()) - process_started)
        / (n as f64 - uncounted);
    let catch_up = scrape(port);
    let _ = processor.kill();
    let _ = processor.wait();
    let epochs = metric(&catch_up, "freshet_processor_epoch_duration_seconds_count");
    let epoch_seconds = metric(&catch_up, "freshet_processor_epoch_duration_seconds_sum");
    let (_, catch_up_steps) = delivery_steps(&catch_up);
    let step_ms = |i: usize| 1_000.0 * catch_up_steps[i] / epochs.max(1.0);
    // Over the timed span only (not the start-up's wait for the first records).
    let waited = |on: &str| {
        let series = format!("freshet_processor_processing_wait_seconds_total{{on=\"{on}\"}}");
        metric(&catch_up, &series) - metric(&at_start, &series)
    };
    let details = format!(
        "  catch-up: {epochs:.0} epochs, {:.0} records each; per epoch {:.1} ms to checkpoint and deliver: checkpoint {:.1}, Kafka transaction {:.1}, Redis {:.1}\n  catch-up: the processing thread waited {:.0}% of the time for input records and {:.0}% for delivery",
        n as f64 / epochs.max(1.0),
        1_000.0 * epoch_seconds / epochs.max(1.0),
        step_ms(0),
        step_ms(1),
        step_ms(2),
        100.0 * waited("input") / catch_up_seconds,
        100.0 * waited("delivery") / catch_up_seconds,
    );
    CatchUp {
        rate,
        uncounted,
        cpu_us,
        process_cpu_us,
        busy,
        details,
    }
}

#[tokio::main]
async fn main() {
    let n = env_or("FRESHET_BENCH_EVENTS", 1_000_000);
    let rate = env_or("FRESHET_BENCH_RATE", 10_000);
    let seconds = env_or("FRESHET_BENCH_SECONDS", 10);
    let stack = TestStack::start();
    stack.create_topic(TOPIC, 3).await;
    let backlog = SimConfig {
        seed: 1,
        start_ms: 1_700_000_000_000,
        events_per_second: 100.0,
        ..SimConfig::default()
    };
    produce(&stack, backlog, n, 0.0).await;
    println!("processor throughput: {n} pre-filled events, 3 partitions, shipped definitions (2 views, 8 features)");

    // Rounds of the bare consumer and the processor, taking turns: this machine's speed
    // drifts by a third from minute to minute, and a baseline taken once moved the ratio
    // by as much as any change to the processor did. Each processor round is timed
    // against the mean of the bare drains just before and just after it, and the median
    // round is the figure.
    let rounds = env_or("FRESHET_BENCH_ROUNDS", 3).max(1) as usize;
    let binaries = processor_binaries();
    let mut bare = vec![bare_drain(&stack.brokers(), n)];
    let mut results = Vec::new();
    let mut by_binary: Vec<Vec<f64>> = vec![Vec::new(); binaries.len()];
    for round in 0..rounds {
        let binary = &binaries[round % binaries.len()];
        let result = catch_up(binary, &stack, n);
        bare.push(bare_drain(&stack.brokers(), n));
        let (before, after) = (&bare[round], &bare[round + 1]);
        let baseline = (before.rate + after.rate) / 2.0;
        let bare_cpu_us = (before.cpu_us + after.cpu_us) / 2.0;
        println!(
            "  round {}: bare consumer {baseline:>9.0} events/s (mean of {:.0} before and {:.0} after), processor {:>9.0} events/s, ratio {:.2}",
            round + 1,
            before.rate,
            after.rate,
            result.rate,
            result.rate / baseline,
        );
        println!(
            "    machine CPU per event (every process, the broker's too): bare consumer {bare_cpu_us:.2} µs (cores {:.0}% and {:.0}% busy), processor {:.2} µs (its own process {:.2} µs; cores {:.0}% busy): {:.2} times the bare consumer's work",
            100.0 * before.busy,
            100.0 * after.busy,
            result.cpu_us,
            result.process_cpu_us,
            100.0 * result.busy,
            result.cpu_us / bare_cpu_us,
        );
        if binaries.len() > 1 {
            println!("    (binary {}: {binary})", round % binaries.len() + 1);
        }
        by_binary[round % binaries.len()].push(result.rate / baseline);
        results.push((result.rate / baseline, baseline, bare_cpu_us, result));
    }
    if binaries.len() > 1 {
        println!("  alternating binaries, the median round of each:");
        for (i, (binary, ratios)) in binaries.iter().zip(&mut by_binary).enumerate() {
            ratios.sort_by(f64::total_cmp);
            let median = ratios
                .get(ratios.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(f64::NAN);
            println!(
                "  binary {}: ratio {median:.2} over {} rounds ({})  {binary}",
                i + 1,
                ratios.len(),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The lower of the two middle rounds when their number is even.
    let (ratio, baseline, bare_cpu_us, median) = &results[(results.len() - 1) / 2];
    println!("  the median round of {rounds}:");
    println!("  bare rdkafka consumer : {baseline:>10.0} events/s  (mean of the drains before and after the processor)");
    println!("  freshet processor     : {:>10.0} events/s  (decode, aggregate, checkpoint, Kafka transaction, Redis; timed from its first delivered epoch, whose {:.0} events are not counted)", median.rate, median.uncounted);
    println!(
        "  ratio processor / bare: {ratio:>10.2}  (aim >= 0.80; rounds: {})",
        results
            .iter()
            .map(|r| format!("{:.2}", r.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // What the aim leaves: at 0.8 of the bare rate with every core busy, each event may
    // cost the whole machine (broker, Redis and all) at most this much CPU.
    let cores = cores();
    println!(
        "  machine CPU per event: processor {:.2} µs (its own process {:.2}), bare consumer {bare_cpu_us:.2} µs; the aim of 0.8 ({:.0} events/s) on {cores:.0} cores leaves at most {:.2} µs per event with every core busy",
        median.cpu_us,
        median.process_cpu_us,
        0.8 * baseline,
        cores * 1e6 / (0.8 * baseline),
    );
    println!("{}", median.details);

    drop(stack);

    // Freshness: live events whose event time is now, at a fixed rate, measured after a
    // warm-up, on fresh stacks: first the broker alone, then each processor binary.
    let broker = broker_latency(rate, seconds).await;
    let ((broker_p50, broker_p99), (created_p50, created_p99)) =
        (broker.from_clock, broker.from_create_time);
    println!(
        "  broker alone at {rate} events/s (producer to a bare consumer, same warm-up), from the partition's clock as the processor's freshness: p50 {broker_p50:.3} s, p99 {broker_p99:.3} s; from each record's create time: p50 {created_p50:.3} s, p99 {created_p99:.3} s{}",
        if broker.unread > 0 {
            format!(
                " ({} records still unread {} s after the last was produced; counted as infinitely late)",
                broker.unread,
                GRACE.as_secs()
            )
        } else {
            String::new()
        }
    );
    for (i, binary) in binaries.iter().enumerate() {
        if binaries.len() > 1 {
            println!("  freshness of binary {}: {binary}", i + 1);
        }
        let (p50, p99) = freshness(binary, rate, seconds).await;
        println!(
            "  the processor's own share: p50 {:.3} s, p99 {:.3} s over the broker alone (from the clock); freshness p99 / broker-alone p99: {:.1}",
            p50 - broker_p50,
            p99 - broker_p99,
            p99 / broker_p99.max(1e-9)
        );
    }
}

/// Feeds `rate` live events per second to a fresh stack with `binary` processing them and
/// prints where their freshness goes; returns its p50 and p99 (seconds).
async fn freshness(binary: &str, rate: u64, seconds: u64) -> (f64, f64) {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let port = freshet_localstack::free_port();
    let mut processor = start_processor_binary(binary, &stack, dir.path(), port);
    // Ready once it owns its partitions: joining the consumer group takes a few seconds,
    // which would otherwise count as the first events' staleness.
    while metric(&scrape(port), "freshet_processor_assigned_partitions") < 3.0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let producing = Instant::now();
    let total = rate * (WARM_UP_SECONDS + seconds);
    let measure_from = async {
        tokio::time::sleep(Duration::from_secs(WARM_UP_SECONDS)).await;
        scrape(port)
    };
    let (_, warm) = tokio::join!(
        produce(&stack, live_events(rate), total, rate as f64),
        measure_from
    );
    let (before, steps_before) = (buckets(&warm, FRESHNESS), delivery_steps(&warm));
    let produced_in = producing.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live_scrape = scrape(port);
    let after = buckets(&live_scrape, FRESHNESS);
    let steps_after = delivery_steps(&live_scrape);
    println!(
        "  the producer sent {total} events in {produced_in:.1} s ({} s expected; event times assume the rate, so a producer falling behind would count as staleness)",
        WARM_UP_SECONDS + seconds
    );
    let epochs = steps_after.0 - steps_before.0;
    let per_epoch = |i: usize| 1_000.0 * (steps_after.1[i] - steps_before.1[i]) / epochs.max(1.0);
    println!(
        "  live: {epochs:.0} epochs, {:.0} records each; per epoch checkpoint {:.1} ms, Kafka transaction {:.1} ms, Redis {:.1} ms",
        (rate * seconds) as f64 / epochs.max(1.0),
        per_epoch(0),
        per_epoch(1),
        per_epoch(2)
    );
    let step_p99: Vec<String> = ["checkpoint", "kafka", "redis"]
        .iter()
        .map(|step| {
            let series = step_series(step);
            let p99 = quantile(
                &buckets(&warm, &series),
                &buckets(&live_scrape, &series),
                0.99,
            );
            format!("{step} ~{:.1} ms", 1_000.0 * p99.1)
        })
        .collect();
    println!("  live p99 per step: {}", step_p99.join(", "));
    let (p50, p99) = (
        quantile(&before, &after, 0.50),
        quantile(&before, &after, 0.99),
    );
    println!(
        "  freshness at {rate} events/s for {seconds} s after a {WARM_UP_SECONDS} s warm-up: p50 ~{:.3} s (<= {:.3}), p99 ~{:.3} s (<= {:.3})  (aim p99 < 0.050 s; interpolated in histogram buckets, bucket bound in brackets)",
        p50.1, p50.0, p99.1, p99.0
    );
    let _ = processor.kill();
    let _ = processor.wait();
    (p50.1, p99.1)
}
