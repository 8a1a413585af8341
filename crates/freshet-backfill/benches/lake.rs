//! Events per second from Parquet files on S3 (moto's S3 server on this machine) and from
//! an Iceberg table with its warehouse there (written by pyiceberg, two appends), through
//! the backfill's engine, each as a ratio to the same events from a local JSON Lines file,
//! in the same run: rounds alternate the three, and the median ratio of the rounds is the
//! figure. `FRESHET_LAKE_BENCH_EVENTS` (default 300,000) sets the size.

use freshet_backfill::{BackfillConfig, Input};
use freshet_testkit::lake_events::{events, write_jsonl, write_parquet};
use freshet_testkit::s3::{lake_python, S3Server};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const ROUNDS: usize = 3;
const FILES: usize = 4;

fn main() {
    let Some(python) = lake_python() else {
        println!("lake benchmark SKIPPED: no lake-venv with moto (run scripts/bootstrap.sh --with-flink)");
        return;
    };
    let count: usize = std::env::var("FRESHET_LAKE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let s3 = S3Server::start(&python);
    // The S3 client reads its settings from the environment, as `freshet` does; set
    // before any thread starts.
    for (key, value) in s3.env() {
        std::env::set_var(key, value);
    }
    s3.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let all = events(count);
    let jsonl = dir.path().join("events.jsonl");
    write_jsonl(&jsonl, &all);
    for (i, part) in all.chunks(count.div_ceil(FILES)).enumerate() {
        let file = dir.path().join(format!("part-{i:03}.parquet"));
        write_parquet(&file, part, true);
        s3.put("lake", &format!("events/part-{i:03}.parquet"), &file);
    }
    let catalog = dir.path().join("catalog.db");
    s3.write_iceberg_tables(&catalog, &jsonl, count / 2);
    let table = freshet_lake::TableSource {
        catalog: format!("sqlite:{}", catalog.display()),
        catalog_name: "default".into(),
        table: "lake.events".into(),
        snapshot: None,
    };
    let defs = freshet_core::load_dir(
        &std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features"),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = |input: Input| {
        let config = BackfillConfig {
            views: vec!["user_click_stats".into(), "user_purchase_stats".into()],
            input,
            from_ms: None,
            to_ms: None,
        };
        let started = Instant::now();
        let computed = runtime
            .block_on(freshet_backfill::compute(
                &defs,
                &config,
                &mut |_| {},
                &AtomicBool::new(false),
            ))
            .unwrap();
        assert_eq!(computed.stats.read, count as u64, "every event read");
        count as f64 / started.elapsed().as_secs_f64()
    };
    let file = |path: &str| Input::File {
        path: path.into(),
        partitions: 3,
    };
    println!(
        "lake: {count} events, {FILES} Parquet files on S3 (moto) and an Iceberg table of two files there vs one local JSON Lines file"
    );
    let (mut parquet_ratios, mut table_ratios) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let local = run(file(jsonl.to_str().unwrap()));
        let parquet = run(file("s3://lake/events/part-*.parquet"));
        let iceberg = run(Input::Table {
            table: table.clone(),
            partitions: 3,
        });
        println!(
            "  round {round}: local JSON Lines {local:.0} events/s, Parquet on S3 {parquet:.0} (ratio {:.2}), Iceberg table {iceberg:.0} (ratio {:.2})",
            parquet / local,
            iceberg / local
        );
        parquet_ratios.push(parquet / local);
        table_ratios.push(iceberg / local);
    }
    for ratios in [&mut parquet_ratios, &mut table_ratios] {
        ratios.sort_by(f64::total_cmp);
    }
    println!(
        "lake: into the engine, median ratio to local JSON Lines: Parquet on S3 {:.2}, Iceberg table on S3 {:.2}",
        parquet_ratios[ROUNDS / 2],
        table_ratios[ROUNDS / 2]
    );
}
