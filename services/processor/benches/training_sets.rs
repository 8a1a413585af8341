//! Training-set figures, each beside its baseline from the same run:
//!
//! - recomputation (`--from events`): events per second through the engine, as a ratio to
//!   the processor's catch-up rate on the same events (a new group reading the same
//!   backlog, timed from its first delivered epoch);
//! - the join (`--from updates`): a spine of 1,000,000 rows with all eight features, from
//!   reading the spine to the written Parquet file, in seconds and rows per second, beside
//!   a plain copy of the same spine (read and written with the same libraries) as the
//!   baseline.
//!
//! - publishing every change (`--publish-changes all`, what makes `--from updates` equal
//!   `--from events` row for row): the processor's catch-up rate as a ratio to its default
//!   (each epoch's values) on the same events, the records each publishes, and the join of
//!   the whole spine from that topic beside the join from the default one.
//!
//! Rounds take turns and the median round of each figure is printed.
//! `cargo bench -p freshet-processor --bench training_sets`; `FRESHET_BENCH_EVENTS`
//! (default 1000000: a shorter catch-up is over in a few epochs) sets the backlog, `FRESHET_BENCH_SPINE_ROWS` (default 1000000) the
//! spine, `FRESHET_BENCH_ROUNDS` (default 3) the rounds.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use common::{definitions, env_or, produce};
use freshet_backfill::Input;
use freshet_producer::simulate::SimConfig;
use freshet_testkit::TestStack;
use freshet_training::updates::UpdatesTopic;
use freshet_training::{History, HistoryStats, TrainingSetConfig};
use rand::{Rng, SeedableRng};
use shared::{catch_up, median};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

const TOPIC: &str = "user_events";
const PARTITIONS: i32 = 3;

/// A Parquet spine of `rows` (user_id, event_timestamp, label) rows over `users` users
/// and the times `first..last`.
fn write_spine(path: &Path, rows: usize, users: i64, (first, last): (i64, i64)) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let ids: Vec<i64> = (0..rows).map(|_| rng.random_range(1..=users)).collect();
    let times: Vec<i64> = (0..rows).map(|_| rng.random_range(first..last)).collect();
    let labels: Vec<i64> = (0..rows).map(|i| (i % 2) as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(times)),
            Arc::new(Int64Array::from(labels)),
        ],
    )
    .unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The baseline of the join: the spine read and written again as Parquet, nothing added.
fn copy_spine(from: &Path, to: &Path) -> f64 {
    let started = Instant::now();
    let spine = freshet_training::spine::read(from, "user_id", "event_timestamp").unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(to).unwrap(),
        spine.schema.clone(),
        Some(
            parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build(),
        ),
    )
    .unwrap();
    for batch in &spine.batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    started.elapsed().as_secs_f64()
}

/// The allocator of `freshet`, whose `training-set` this bench measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // As `freshet` runs.
    freshet_service::no_transparent_huge_pages();
    let n = env_or("FRESHET_BENCH_EVENTS", 1_000_000);
    let rows = env_or("FRESHET_BENCH_SPINE_ROWS", 1_000_000) as usize;
    let rounds = env_or("FRESHET_BENCH_ROUNDS", 3).max(1);
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let backlog = SimConfig {
        seed: 3,
        start_ms: 1_700_000_000_000,
        events_per_second: 100.0,
        ..SimConfig::default()
    };
    let users = backlog.users as i64;
    produce(&stack, backlog.clone(), n, 0.0).await;
    let last = 1_700_000_000_000 + (n as f64 / backlog.events_per_second * 1000.0) as i64;
    let defs = definitions();
    let views = freshet_training::request::resolve(&defs, &[], &[]).unwrap();
    let features: usize = views.iter().map(|v| v.features.len()).sum();
    let dir = tempfile::tempdir().unwrap();
    let spine_path = dir.path().join("spine.parquet");
    write_spine(&spine_path, rows, users, (1_700_000_000_000, last));
    println!(
        "training sets: {n} pre-filled events over {PARTITIONS} partitions; a spine of {rows} rows, {features} features"
    );
    let stop = AtomicBool::new(false);
    let (mut recompute_ratios, mut join_seconds, mut copy_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut every_ratios, mut every_join_ratios, mut records_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // The processor's catch-up on the backlog, publishing each epoch's values and
        // every change, in turns which first; their output topics are the histories the
        // joins read.
        let group = format!("live-{round}");
        let every_group = format!("every-{round}");
        let mut rates = [0.0; 2];
        let order: [usize; 2] = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let (name, flags): (&str, &[&str]) = match which {
                0 => (&group, &[]),
                _ => (&every_group, &["--publish-changes", "all"]),
            };
            let (rate, running) = catch_up(&stack, name, dir.path(), 1, flags, n);
            // Let it deliver its last epoch before it stops.
            std::thread::sleep(std::time::Duration::from_secs(2));
            drop(running);
            rates[which] = rate;
        }
        let [processor_rate, every_rate] = rates;

        // Recomputation of the same events, answering a spine of 100,000 rows.
        let small = dir.path().join(format!("small-{round}.parquet"));
        write_spine(&small, 100_000, users, (1_700_000_000_000, last));
        let spine = freshet_training::spine::read(&small, "user_id", "event_timestamp").unwrap();
        let events = History::Events(Input::Kafka {
            brokers: stack.brokers(),
            registry: stack.registry(),
        });
        // Timed as the processor's catch-up is: from the first progress report with
        // events through the engine (those events not counted) to the answers, so that
        // neither rate counts starting up; the whole time is printed beside it.
        let started = Instant::now();
        let mut first: Option<(Instant, u64)> = None;
        freshet_training::answer(
            &defs,
            &views,
            &spine,
            &events,
            &mut |p| {
                if p.done > 0 && first.is_none() {
                    first = Some((Instant::now(), p.done));
                }
            },
            &stop,
        )
        .await
        .unwrap();
        let whole = started.elapsed().as_secs_f64();
        let (first_at, uncounted) = first.expect("progress was reported");
        assert!(uncounted < n, "raise FRESHET_BENCH_EVENTS");
        let recompute_rate = (n - uncounted) as f64 / first_at.elapsed().as_secs_f64();

        // The join of the whole spine from each one's published updates, then the plain
        // copy.
        let mut joins = Vec::new();
        for name in [&group, &every_group] {
            let out = dir.path().join(format!("set-{name}.parquet"));
            let started = Instant::now();
            let report = freshet_training::build(
                &defs,
                &TrainingSetConfig {
                    spine: spine_path.clone(),
                    out,
                    entity_column: None,
                    time_column: "event_timestamp".into(),
                    views: Vec::new(),
                    features: Vec::new(),
                    history: History::Updates(UpdatesTopic {
                        brokers: stack.brokers(),
                        registry: stack.registry(),
                        topic: format!("updates_{name}"),
                    }),
                },
                &mut |_| {},
                &stop,
            )
            .await
            .unwrap();
            joins.push((started.elapsed().as_secs_f64(), report));
        }
        let (every_join, every_report) = joins.pop().expect("two joins");
        let (join, report) = joins.pop().expect("two joins");
        let copy = copy_spine(
            &spine_path,
            &dir.path().join(format!("copy-{round}.parquet")),
        );
        let found: u64 = report.views.iter().map(|(_, t)| t.found).sum();
        println!(
            "  round {round}: processor {processor_rate:>8.0} events/s, recomputed {recompute_rate:>8.0} events/s ({:.2}; {whole:.2} s in all, start-up included); join {join:.2} s = {:.0} rows/s (spine {:.2} s, updates {:.2} s, join and write {:.2} s; {found} view answers found), plain copy {copy:.2} s ({:.2} of the join's time)",
            recompute_rate / processor_rate,
            rows as f64 / join,
            report.reading_spine.as_secs_f64(),
            report.reading_history.as_secs_f64(),
            report.writing.as_secs_f64(),
            copy / join,
        );
        let records = [&report, &every_report].map(|r| match &r.history {
            HistoryStats::Updates(stats) => stats.read,
            HistoryStats::Events(_) => unreachable!("joined from updates"),
        });
        println!(
            "  round {round}: publishing every change: processor {every_rate:>8.0} events/s ({:.2} of publishing epochs), {} records against {} ({:.1}x); join {every_join:.2} s ({:.2} of the join from epochs' time)",
            every_rate / processor_rate,
            records[1],
            records[0],
            records[1] as f64 / records[0] as f64,
            every_join / join,
        );
        every_ratios.push(every_rate / processor_rate);
        every_join_ratios.push(every_join / join);
        records_ratios.push(records[1] as f64 / records[0] as f64);
        recompute_ratios.push(recompute_rate / processor_rate);
        join_seconds.push(join);
        copy_ratios.push(copy / join);
    }
    println!("  the median round of {rounds}:");
    println!(
        "  recomputed / processor catch-up : {:>6.2}  (target >= 0.80)",
        median(&mut recompute_ratios)
    );
    let join = median(&mut join_seconds);
    println!(
        "  join of {rows} rows x {features} features: {join:>6.2} s, {:.0} rows/s  (target < 10 s for 1,000,000 rows)",
        rows as f64 / join
    );
    println!(
        "  plain copy of the spine / join   : {:>6.2}  (the share of the join's time a copy of the spine takes)",
        median(&mut copy_ratios)
    );
    println!(
        "  publishing every change / epochs: catch-up {:>6.2}, records {:.1}x, join time {:.2}",
        median(&mut every_ratios),
        median(&mut records_ratios),
        median(&mut every_join_ratios)
    );
}
