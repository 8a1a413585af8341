//! Producer throughput as a ratio to a bare rdkafka producer, measured in one run against
//! the same broker (these machines are noisy, so only the ratio is meaningful).
//!
//! `cargo bench -p freshet-producer` (or `scripts/bench.sh`). `FRESHET_BENCH_EVENTS`
//! sets the number of events per measurement (default 200000).
//!
//! The bare producer sends pre-built payloads of the same size as Freshet's encoded
//! events, under the same keys in the same order, with the same client settings (idempotent, acks=all, linger 5 ms), and waits for
//! every acknowledgement. Freshet's producer runs its whole pipeline: simulation, Avro
//! encoding through the registry, a span and traceparent per event, delivery accounting.

use freshet_producer::event::{SchemaVersion, SCHEMA_V2};
use freshet_producer::metrics::ProducerMetrics;
use freshet_producer::produce::{run, EventProducer, ProducerConfig, RunOptions};
use freshet_producer::simulate::{SimConfig, Simulator};
use freshet_testkit::TestStack;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::convert::Infallible;
use std::time::{Duration, Instant};

fn events() -> u64 {
    std::env::var("FRESHET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn sim() -> Simulator {
    Simulator::new(SimConfig {
        start_ms: 1_700_000_000_000,
        events_per_second: 1_000.0,
        ..SimConfig::default()
    })
    .unwrap()
}

/// The mean size of an encoded event (5-byte header plus Avro body) and of its key.
fn mean_sizes(n: usize) -> (usize, usize) {
    let schema = apache_avro::Schema::parse_str(SCHEMA_V2).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap();
    let (mut payload, mut key) = (0, 0);
    for e in sim().take(n) {
        payload += 5 + writer.write_ser_to_vec(&e).unwrap().len();
        key += e.user_id.to_string().len();
    }
    (payload / n, key / n)
}

async fn bare(brokers: &str, topic: &str, n: u64, payload_size: usize, key_size: usize) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let payload = vec![7u8; payload_size];
    // The same keys, in the same order, as Freshet's run: the broker sees the same spread
    // over partitions, so only the producers differ.
    let keys: Vec<String> = sim()
        .take(n as usize)
        .map(|e| e.user_id.to_string())
        .collect();
    let _ = key_size;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        let mut record = FutureRecord::to(topic)
            .key(&keys[i as usize])
            .payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    in_flight.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
        while let Some(Some(r)) = futures::FutureExt::now_or_never(in_flight.next()) {
            assert!(matches!(r, Ok(Ok(_))));
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    while let Some(r) = in_flight.next().await {
        assert!(matches!(r, Ok(Ok(_))));
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn freshet(stack: &TestStack, topic: &str, n: u64) -> f64 {
    let provider = freshet_telemetry::tracer_provider("bench", None).unwrap();
    let producer = EventProducer::new(
        ProducerConfig {
            brokers: stack.brokers(),
            registry: stack.registry(),
            topic: topic.into(),
            schema_version: SchemaVersion::V2,
            auto_register: true,
        },
        ProducerMetrics::new(),
        opentelemetry::trace::TracerProvider::tracer(&provider, "bench"),
    )
    .unwrap();
    let options = RunOptions {
        rate: 0.0,
        count: Some(n),
        duration: None,
    };
    let summary = run(
        &producer,
        sim().map(Ok::<_, Infallible>),
        &options,
        std::future::pending(),
    )
    .await;
    assert_eq!(summary.delivered, n, "every event delivered");
    summary.rate()
}

#[tokio::main]
async fn main() {
    let n = events();
    let stack = TestStack::start();
    for topic in [
        "bench_bare_1",
        "bench_bare_2",
        "bench_freshet_1",
        "bench_freshet_2",
        "warmup",
    ] {
        stack.create_topic(topic, 3).await;
    }
    let (payload, key) = mean_sizes(10_000);
    println!("producer throughput: {n} events per measurement, payload {payload} B, key {key} B");
    // Warm up the registry cache and the broker.
    freshet(&stack, "warmup", 1_000).await;
    // Interleaved, so drift on a noisy machine hits both sides alike.
    let b1 = bare(&stack.brokers(), "bench_bare_1", n, payload, key).await;
    let f1 = freshet(&stack, "bench_freshet_1", n).await;
    let b2 = bare(&stack.brokers(), "bench_bare_2", n, payload, key).await;
    let f2 = freshet(&stack, "bench_freshet_2", n).await;
    let (bare_rate, freshet_rate) = ((b1 + b2) / 2.0, (f1 + f2) / 2.0);
    println!("  bare rdkafka producer : {bare_rate:>10.0} events/s  (runs: {b1:.0}, {b2:.0})");
    println!("  freshet producer      : {freshet_rate:>10.0} events/s  (runs: {f1:.0}, {f2:.0})");
    println!(
        "  ratio freshet / bare  : {:>10.2}  (target >= 0.80)",
        freshet_rate / bare_rate
    );
}
