//! `freshet-processor`: flags in, the epoch loop until SIGTERM or Ctrl-C.

use clap::Parser;
use freshet_processor::metrics::ProcessorMetrics;
use freshet_processor::runtime::{self, LatePolicy, ProcessorConfig, PublishedChanges};
use freshet_service::{BrokerArgs, OtlpArgs, RedisArgs, RegistryArgs, StackArgs};
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc: every record and every epoch allocate many small, short-lived values (decoded
/// fields, accumulators, served values, encoded records), and glibc's allocator was the
/// largest item in the processor's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Windowed features from Kafka into Redis and feature_updates, exactly once"
)]
struct Args {
    /// The folder of feature definitions.
    #[arg(long, env = "FRESHET_FEATURES_DIR", default_value = "features")]
    features_dir: PathBuf,
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Folder of the RocksDB checkpoint.
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_STATE_DIR",
        default_value = ".freshet/data/processor"
    )]
    state_dir: PathBuf,
    /// Consumer group: one per processor deployment. Its instances share the source
    /// partitions; it also names the changelog topic ({group}-state).
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_GROUP",
        default_value = "freshet-processor"
    )]
    group_id: String,
    /// This instance's id, unique within the deployment and the same across its restarts:
    /// its transactional id is {group}-{instance}. Defaults to the host name.
    #[arg(long, env = "FRESHET_PROCESSOR_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Join as a static group member (group.instance.id = the instance id): a restart
    /// within the session timeout keeps the instance's partitions without a rebalance.
    #[arg(long, env = "FRESHET_PROCESSOR_STATIC_MEMBERSHIP")]
    static_membership: bool,
    /// Write each epoch's state changes to the changelog topic and restore partitions
    /// from it; "off" only to measure its cost (a partition then moves only with its
    /// instance's disk).
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_CHANGELOG",
        value_enum,
        default_value = "on"
    )]
    changelog: Switch,
    /// Topic of feature updates.
    #[arg(long, default_value = "feature_updates")]
    output_topic: String,
    /// Which changes the topic of feature updates receives: "epoch", the values each epoch
    /// leaves (what Redis receives); or "all", every change at each event time, so that
    /// `freshet training-set --from updates` equals `--from events` row for row (more
    /// records to publish).
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_PUBLISH_CHANGES",
        value_enum,
        default_value = "epoch"
    )]
    publish_changes: PublishedChanges,
    /// Topic of records that cannot be processed (and late events, with --late-events dead-letter).
    #[arg(long, default_value = "freshet_dead_letters")]
    dead_letter_topic: String,
    /// What to do with events behind the watermark.
    #[arg(long, value_enum, default_value = "dead-letter")]
    late_events: LatePolicy,
    /// Longest time an epoch collects records, in milliseconds. Only a processor that
    /// always has records waiting (catching up) reaches it; otherwise an epoch ends as soon
    /// as the earlier ones are delivered.
    #[arg(long, env = "FRESHET_PROCESSOR_EPOCH_MS", default_value_t = 250)]
    epoch_ms: u64,
    /// Most records in one epoch.
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_EPOCH_MAX_RECORDS",
        default_value_t = 100_000
    )]
    epoch_max_records: usize,
    /// Partitions of topics the processor creates when missing.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[command(flatten)]
    stack: StackArgs,
    /// Address for the Prometheus /metrics endpoint; "off" to disable.
    #[arg(
        long,
        env = "FRESHET_PROCESSOR_METRICS_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    metrics_listen: String,
    #[command(flatten)]
    otlp: OtlpArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// The host name, the default instance id (a container's is unique).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "processor".to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // First: a stop asked for while starting is a clean stop.
    let stop = freshet_service::stop_flag();
    let _telemetry = args.otlp.init("freshet-processor")?;
    freshet_service::no_transparent_huge_pages();
    let stack = args.stack.env();
    freshet_kafka::set_client_options(args.brokers.kafka_options(std::env::vars())?)?;
    let registry = args.registry.resolve(&stack)?;
    freshet_service::check_registry(&registry).await?;
    args.redis.install_ca_certificate()?;
    let config = ProcessorConfig {
        features_dir: args.features_dir,
        brokers: args.brokers.resolve(&stack),
        registry,
        redis_url: args.redis.resolve(&stack),
        state_dir: args.state_dir,
        group_id: args.group_id,
        instance_id: args.instance_id.unwrap_or_else(host_name),
        static_membership: args.static_membership,
        changelog: args.changelog == Switch::On,
        output_topic: args.output_topic,
        published_changes: args.publish_changes,
        dead_letter_topic: args.dead_letter_topic,
        late_events: args.late_events,
        epoch_duration: Duration::from_millis(args.epoch_ms.max(1)),
        epoch_max_records: args.epoch_max_records.max(1),
        partitions: args.partitions,
        trace_records: args.otlp.otlp_endpoint.is_some(),
    };
    let metrics = ProcessorMetrics::new();
    freshet_service::serve_metrics(&args.metrics_listen, metrics.registry.clone()).await?;
    tracing::info!(brokers = %config.brokers, redis = %freshet_store::redacted_url(&config.redis_url), group = %config.group_id, instance = %config.instance_id, "starting");
    runtime::run(config, metrics, stop).await
}
