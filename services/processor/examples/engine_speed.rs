//! Development aid: the engine alone (no broker, no RocksDB) over the throughput bench's
//! backlog, split in three partitions by user, with drains every `EPOCH` events per
//! partition. Prints the engine's events/s and the share of the drains, and the bytes of the
//! state pieces drained (beside what the JSON of earlier releases would have taken).
//! `cargo run --release -p freshet-processor --example engine_speed [events] [epoch]`

use freshet_engine::{shared_names, CompiledView, Fields, PartitionEngine, StatePart};
use freshet_producer::simulate::{SimConfig, Simulator};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The processor's allocator, so the figures include what its allocations cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let n = args.first().copied().unwrap_or(1_500_000) as usize;
    let epoch = args.get(1).copied().unwrap_or(25_000) as usize;
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features");
    let defs = freshet_core::definitions::load_dir(&dir).unwrap();
    let config = SimConfig {
        seed: 1,
        start_ms: 1_700_000_000_000,
        events_per_second: 100.0,
        ..SimConfig::default()
    };
    let mut partitions: Vec<Vec<_>> = vec![Vec::new(); 3];
    for e in Simulator::new(config).unwrap().take(n) {
        let value = apache_avro::to_value(&e).unwrap();
        let mut event =
            freshet_engine::event_decoder::to_event(&value, "user_id", "timestamp").unwrap();
        // As the processor's decoder: the events of one schema share their field names.
        let names = shared_names(event.fields.names());
        let values = names.iter().map(|n| event.fields.get(n).unwrap().clone());
        event.fields = Fields::with_shared_names(names, values.collect());
        partitions[(e.user_id % 3) as usize].push(event);
    }
    let views = Arc::new(CompiledView::compile_all(&defs));
    for round in 0..3 {
        let (mut processing, mut draining) = (Duration::ZERO, Duration::ZERO);
        let mut updates = 0;
        let mut pieces = 0;
        let mut unwritten = 0;
        let (mut bytes, mut json_bytes) = (0, 0);
        for events in &partitions {
            let mut engine = PartitionEngine::new(views.clone(), "user_events");
            // As the processor with its changelog on (the default).
            engine.report_unwritten_deletions(true);
            for (i, chunk) in events.chunks(epoch).enumerate() {
                let started = Instant::now();
                for (j, event) in chunk.iter().enumerate() {
                    engine.process((i * epoch + j) as i64, Some(event));
                }
                let drained = Instant::now();
                updates += engine.drain_view_updates().len();
                let touched = engine.drain_touched();
                draining += drained.elapsed();
                processing += drained - started;
                pieces += touched.len();
                unwritten += touched.iter().filter(|t| t.unwritten).count();
                if round == 0 {
                    for state in touched.iter().filter_map(|t| t.state.as_deref()) {
                        bytes += state.len();
                        let piece = StatePart::decode(state).unwrap();
                        json_bytes += serde_json::to_vec(&piece).unwrap().len();
                    }
                }
            }
        }
        let total = processing + draining;
        println!(
            "round {round}: {:.0} events/s ({:.2} µs/event: process {:.2}, drains {:.2}); {updates} updates, {pieces} pieces ({unwritten} of them deletions of pieces created since the last drain)",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64() * 1e6 / n as f64,
            processing.as_secs_f64() * 1e6 / n as f64,
            draining.as_secs_f64() * 1e6 / n as f64,
        );
        if round == 0 {
            println!(
                "  pieces written: {bytes} bytes ({:.1} per piece); as JSON {json_bytes} bytes ({:.2}x)",
                bytes as f64 / pieces.max(1) as f64,
                json_bytes as f64 / bytes.max(1) as f64
            );
        }
    }
}
