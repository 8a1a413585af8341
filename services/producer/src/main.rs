//! `freshet-producer`: simulated (or replayed) user events to Kafka.

use anyhow::bail;
use clap::Parser;
use freshet_producer::event::SchemaVersion;
use freshet_producer::metrics::ProducerMetrics;
use freshet_producer::produce::{self, EventProducer, ProducerConfig, RunOptions};
use freshet_producer::replay::Replay;
use freshet_producer::simulate::{SimConfig, Simulator};
use freshet_service::{BrokerArgs, OtlpArgs, RegistryArgs, StackArgs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Produce simulated or replayed user events to Kafka as Avro"
)]
struct Args {
    /// Events per second; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 10m, 1h).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The topic to produce to.
    #[arg(long, default_value = "user_events")]
    topic: String,
    /// Partitions of the topic when the producer has to create it.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// The schema version events are written with.
    #[arg(long, value_enum, default_value = "v2")]
    schema_version: SchemaVersion,
    /// Seed of the simulation: the same seed and --start-time give the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first simulated event, epoch milliseconds (default: now).
    #[arg(long)]
    start_time: Option<i64>,
    /// Number of simulated users (ids 1..=users, user 1 the most active).
    #[arg(long, default_value_t = 1_000)]
    users: u32,
    /// Fraction of events arriving late (10 to 60 s behind).
    #[arg(long, default_value_t = 0.01)]
    late_fraction: f64,
    /// Fraction of events slightly out of order (up to 2 s behind).
    #[arg(long, default_value_t = 0.10)]
    out_of_order_fraction: f64,
    /// Replay events from this JSON Lines file instead of simulating.
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// Do not register the schema; encode with the subject's latest registered schema.
    #[arg(long)]
    no_auto_register: bool,
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    stack: StackArgs,
    /// Address for the Prometheus /metrics endpoint; "off" to disable.
    #[arg(
        long,
        env = "FRESHET_PRODUCER_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    metrics_listen: String,
    #[command(flatten)]
    otlp: OtlpArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    freshet_core::DurationMs::parse(text)
        .map(|d| Duration::from_millis(d.as_millis() as u64))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let telemetry = args.otlp.init("freshet-producer")?;
    let stack = args.stack.env();
    let brokers = args.brokers.resolve(&stack);
    freshet_kafka::set_client_options(args.brokers.kafka_options(std::env::vars())?)?;
    let registry = args.registry.resolve(&stack)?;
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be 0 (unlimited) or a positive number of events per second");
    }

    let metrics = ProducerMetrics::new();
    freshet_service::serve_metrics(&args.metrics_listen, metrics.registry.clone()).await?;
    let config = ProducerConfig {
        brokers: brokers.clone(),
        registry: registry.clone(),
        topic: args.topic.clone(),
        schema_version: args.schema_version,
        auto_register: !args.no_auto_register,
    };
    freshet_service::check_registry(&registry).await?;
    freshet_kafka::ensure_topic(&brokers, &args.topic, args.partitions).await?;
    let producer = EventProducer::new(config, metrics, telemetry.tracer())?;
    let options = RunOptions {
        rate: args.rate,
        count: args.count,
        duration: args.duration,
    };
    tracing::info!(%brokers, %registry, topic = %args.topic, rate = args.rate, "producing");
    let summary = match &args.from_file {
        Some(path) => {
            let replay = Replay::open(path)?;
            produce::run(
                &producer,
                replay,
                &options,
                freshet_service::shutdown_signal(),
            )
            .await
        }
        None => {
            let start_ms = args.start_time.unwrap_or_else(now_ms);
            let sim = Simulator::new(SimConfig {
                seed: args.seed,
                users: args.users,
                start_ms,
                events_per_second: if args.rate > 0.0 { args.rate } else { 1_000.0 },
                late_fraction: args.late_fraction,
                jitter_fraction: args.out_of_order_fraction,
                ..SimConfig::default()
            })?;
            let events = sim.map(Ok::<_, std::convert::Infallible>);
            produce::run(
                &producer,
                events,
                &options,
                freshet_service::shutdown_signal(),
            )
            .await
        }
    };
    tracing::info!(
        sent = summary.sent,
        delivered = summary.delivered,
        failed = summary.failed,
        encode_errors = summary.encode_errors,
        invalid_input = summary.invalid_input,
        seconds = summary.elapsed.as_secs_f64(),
        events_per_second = summary.rate().round(),
        "done"
    );
    if summary.failed > 0 || summary.encode_errors > 0 {
        bail!(
            "{} event(s) not delivered and {} not encoded, of {} (see the warnings above)",
            summary.failed,
            summary.encode_errors,
            summary.sent + summary.encode_errors
        );
    }
    if summary.invalid_input > 0 {
        eprintln!(
            "error: {} input line(s) were not valid events and were skipped",
            summary.invalid_input
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
