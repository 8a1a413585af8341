//! `freshet-flink-sink`: flags in, the Flink job's windows into Redis until SIGTERM or
//! Ctrl-C.

use anyhow::Context;
use clap::Parser;
use freshet_flink_sink::metrics::SinkMetrics;
use freshet_flink_sink::SinkConfig;
use freshet_service::{BrokerArgs, OtlpArgs, RedisArgs, StackArgs};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Apply a Flink job's feature windows (its upsert-kafka topic) to Redis with versioned writes"
)]
struct Args {
    /// The folder of feature definitions the Flink job was compiled from.
    #[arg(long, env = "FRESHET_FEATURES_DIR", default_value = "features")]
    features_dir: PathBuf,
    /// The Flink job's output topic (`freshet compile --output-topic`).
    #[arg(
        long,
        env = "FRESHET_FLINK_TOPIC",
        default_value = freshet_flink_sink::DEFAULT_TOPIC
    )]
    topic: String,
    /// Partitions of the topic when the sink has to create it (compacted).
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    stack: StackArgs,
    /// Address for the Prometheus /metrics endpoint; "off" to disable.
    #[arg(
        long,
        env = "FRESHET_FLINK_SINK_METRICS_LISTEN",
        default_value = "127.0.0.1:9104"
    )]
    metrics_listen: String,
    #[command(flatten)]
    otlp: OtlpArgs,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // First: a stop asked for while starting is a clean stop.
    let stop = freshet_service::stop_flag();
    let _telemetry = args.otlp.init("freshet-flink-sink")?;
    let stack = args.stack.env();
    let defs = freshet_core::load_dir(&args.features_dir).with_context(|| {
        format!(
            "cannot load the definitions in {}",
            args.features_dir.display()
        )
    })?;
    args.redis.install_ca_certificate()?;
    let redis_url = args.redis.resolve(&stack);
    freshet_kafka::set_client_options(args.brokers.kafka_options(std::env::vars())?)?;
    let store = freshet_store::StoreTarget::parse(&redis_url, None)?;
    let metrics = SinkMetrics::new();
    freshet_service::serve_metrics(&args.metrics_listen, metrics.registry.clone()).await?;
    let config = SinkConfig {
        brokers: args.brokers.resolve(&stack),
        topic: args.topic,
        partitions: args.partitions,
    };
    tracing::info!(brokers = %config.brokers, topic = %config.topic, "Flink sink starting");
    freshet_flink_sink::run(&defs, &config, &store, &metrics, &stop).await?;
    Ok(())
}
