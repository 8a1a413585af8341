//! `freshet up`, `freshet status`, `freshet down`: the local stack without containers.

use anyhow::{Context, Result};
use clap::Args;
use freshet_localstack::process::log_tail;
use freshet_localstack::stack::{self, StackConfig, StopOutcome};
use freshet_localstack::{ServiceBinaries, Tools};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Args)]
pub struct StateDirArgs {
    /// Folder holding the stack's state, logs and data.
    #[arg(long, env = "FRESHET_STATE_DIR", default_value = stack::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    state: StateDirArgs,
    /// Start the stack in the background and return; stop it with `freshet down`.
    #[arg(long)]
    detach: bool,
    /// Address every component listens on.
    #[arg(long, env = "FRESHET_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port of the Kafka-compatible broker.
    #[arg(long, env = "FRESHET_BROKER_PORT", default_value_t = stack::DEFAULT_BROKER_PORT)]
    broker_port: u16,
    /// Port of Redis.
    #[arg(long, env = "FRESHET_REDIS_PORT", default_value_t = stack::DEFAULT_REDIS_PORT)]
    redis_port: u16,
    /// Port of the schema registry.
    #[arg(long, env = "FRESHET_REGISTRY_PORT", default_value_t = stack::DEFAULT_REGISTRY_PORT)]
    registry_port: u16,
    /// Port of the demo producer's /metrics endpoint.
    #[arg(long, env = "FRESHET_PRODUCER_METRICS_PORT", default_value_t = stack::DEFAULT_PRODUCER_METRICS_PORT)]
    producer_metrics_port: u16,
    /// Port of the processor's /metrics endpoint.
    #[arg(long, env = "FRESHET_PROCESSOR_METRICS_PORT", default_value_t = stack::DEFAULT_PROCESSOR_METRICS_PORT)]
    processor_metrics_port: u16,
    /// Port of the serving API.
    #[arg(long, env = "FRESHET_SERVING_PORT", default_value_t = stack::DEFAULT_SERVING_PORT)]
    serving_port: u16,
    /// Port of Prometheus.
    #[arg(long, env = "FRESHET_PROMETHEUS_PORT", default_value_t = stack::DEFAULT_PROMETHEUS_PORT)]
    prometheus_port: u16,
    /// Folder holding prometheus.yml and rules.yml.
    #[arg(long, env = "FRESHET_MONITORING_DIR", default_value = stack::DEFAULT_MONITORING_DIR)]
    monitoring_dir: PathBuf,
    /// Events per second of simulated demo traffic; 0 for none.
    #[arg(long, env = "FRESHET_DEMO_RATE", default_value_t = stack::DEFAULT_DEMO_RATE)]
    demo_rate: f64,
    /// Processor instances sharing the source partitions (each with its own state folder,
    /// and metrics on the processor metrics port + its number - 1).
    #[arg(long, env = "FRESHET_PROCESSORS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    processors: u16,
    /// Seconds each component may take to become ready.
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
}

pub fn up(args: UpArgs, features_dir: &std::path::Path) -> Result<ExitCode> {
    let config = StackConfig {
        state_dir: args.state.state_dir,
        host: args.host,
        broker_port: args.broker_port,
        redis_port: args.redis_port,
        registry_port: args.registry_port,
        producer_metrics_port: args.producer_metrics_port,
        processor_metrics_port: args.processor_metrics_port,
        serving_port: args.serving_port,
        prometheus_port: args.prometheus_port,
        monitoring_dir: args.monitoring_dir,
        features_dir: features_dir.to_path_buf(),
        demo_rate: args.demo_rate,
        processors: args.processors.into(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
    };
    let tools = Tools::locate()?;
    let services = ServiceBinaries::locate()?;
    println!(
        "freshet up: starting the local stack in {}",
        config.state_dir.display()
    );
    let mut running = stack::start(&config, &tools, &services, |spec, took| {
        println!(
            "  {:<10} ready at {:<22} ({:.1}s)",
            spec.name,
            spec.address(),
            took.as_secs_f64()
        );
    })?;
    let env_file = config.state_dir.join("stack.env");
    println!("Addresses (in {}):", env_file.display());
    for c in &running.state.components {
        println!("  {}={}", c.env_key, c.env_value);
    }
    println!("Logs: {}", config.state_dir.join("logs").display());
    if args.detach {
        running.detach();
        println!("Running in the background; `freshet status` to check, `freshet down` to stop.");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    // Handlers are installed before the prompt, so a Ctrl-C right after it is not lost.
    let (mut interrupt, mut terminate) = {
        let _runtime = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        )
    };
    println!("Press Ctrl-C to stop.");
    let failed = runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = interrupt.recv() => return anyhow::Ok(None),
                _ = terminate.recv() => return anyhow::Ok(None),
                _ = tick.tick() => {
                    if let Some(name) = running.exited_component() {
                        return anyhow::Ok(Some(name));
                    }
                }
            }
        }
    })?;
    let log_of = |name: &str| config.log_path(name);
    println!("freshet up: stopping the local stack");
    running.stop();
    match failed {
        None => {
            println!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some(name) => {
            let log = log_of(&name);
            anyhow::bail!(
                "{name} exited unexpectedly, so the whole stack was stopped; last lines of {}:\n{}",
                log.display(),
                log_tail(&log, 20)
            )
        }
    }
}

pub fn status(args: StateDirArgs) -> Result<ExitCode> {
    let Some(components) = stack::status(&args.state_dir)? else {
        println!(
            "no local stack recorded in {}; start one with `freshet up`",
            args.state_dir.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    println!("{:<12} {:<8} {:<22} state", "name", "pid", "address");
    let mut healthy = true;
    for c in &components {
        let state = match (c.running, c.ready) {
            (true, true) => "ready",
            (true, false) => "running, not answering",
            (false, _) => "stopped",
        };
        healthy &= c.ready;
        println!("{:<12} {:<8} {:<22} {state}", c.name, c.pid, c.address);
        if let Some(partitions) = &c.partitions {
            let owned = match partitions.is_empty() {
                true => "none (waiting for the group)".to_string(),
                false => partitions.join(", "),
            };
            println!("             partitions: {owned}");
        }
        if !c.ready {
            println!("             log: {}", c.log.display());
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn down(args: StateDirArgs) -> Result<ExitCode> {
    let Some(outcomes) = stack::down(&args.state_dir)? else {
        println!(
            "no local stack recorded in {}; nothing to stop",
            args.state_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    for (name, outcome) in outcomes {
        let what = match outcome {
            StopOutcome::Stopped => "stopped",
            StopOutcome::Killed => "killed (did not stop within 5 s)",
            StopOutcome::NotRunning => "was not running",
        };
        println!("{name}: {what}");
    }
    Ok(ExitCode::SUCCESS)
}
