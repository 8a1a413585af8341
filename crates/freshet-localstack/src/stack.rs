//! The whole local stack under one state folder (`.freshet/` by default):
//!
//! ```text
//! .freshet/
//!   stack.json     pids, programs and addresses of the running components
//!   stack.env      KEY=value lines with every address (FRESHET_BROKERS, FRESHET_REDIS_URL, ...)
//!   logs/<name>.log
//!   data/<name>/
//! ```
//!
//! Components start in order, each waiting for the previous one to be ready; they stop in
//! the reverse order. New components join by being added to [`StackConfig::components`].

use crate::components::{self, ComponentSpec, Readiness};
use crate::process::{self, ManagedProcess, ProcessError};
use crate::tools::{ServiceBinaries, Tools};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_STATE_DIR: &str = freshet_service::DEFAULT_STACK_DIR;
pub const DEFAULT_BROKER_PORT: u16 = 9092;
pub const DEFAULT_REDIS_PORT: u16 = 6379;
pub const DEFAULT_REGISTRY_PORT: u16 = 8081;
pub const DEFAULT_PRODUCER_METRICS_PORT: u16 = 9101;
pub const DEFAULT_PROCESSOR_METRICS_PORT: u16 = 9102;
pub const DEFAULT_SERVING_PORT: u16 = 8000;
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9090;
/// The Prometheus configuration and alert rules, shared with docker-compose.
pub const DEFAULT_MONITORING_DIR: &str = "monitoring";
/// Events per second of demo traffic.
pub const DEFAULT_DEMO_RATE: f64 = 50.0;
const STATE_FILE: &str = "stack.json";
const ENV_FILE: &str = freshet_service::STACK_ENV_FILE;

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub state_dir: PathBuf,
    pub host: String,
    pub broker_port: u16,
    pub redis_port: u16,
    pub registry_port: u16,
    pub producer_metrics_port: u16,
    pub processor_metrics_port: u16,
    pub serving_port: u16,
    pub prometheus_port: u16,
    /// `prometheus.yml` and `rules.yml` for the stack's Prometheus.
    pub monitoring_dir: PathBuf,
    /// The feature definitions the processor computes.
    pub features_dir: PathBuf,
    /// Events per second of simulated traffic; 0 starts no producer.
    pub demo_rate: f64,
    /// Processor instances, sharing the source partitions; instance `i` publishes its
    /// metrics on `processor_metrics_port + i - 1`.
    pub processors: usize,
    /// How long each component may take to become ready.
    pub ready_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            host: "127.0.0.1".into(),
            broker_port: DEFAULT_BROKER_PORT,
            redis_port: DEFAULT_REDIS_PORT,
            registry_port: DEFAULT_REGISTRY_PORT,
            producer_metrics_port: DEFAULT_PRODUCER_METRICS_PORT,
            processor_metrics_port: DEFAULT_PROCESSOR_METRICS_PORT,
            serving_port: DEFAULT_SERVING_PORT,
            prometheus_port: DEFAULT_PROMETHEUS_PORT,
            monitoring_dir: PathBuf::from(DEFAULT_MONITORING_DIR),
            features_dir: PathBuf::from("features"),
            demo_rate: DEFAULT_DEMO_RATE,
            processors: 1,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl StackConfig {
    /// The components in start order.
    pub fn components(&self, tools: &Tools, services: &ServiceBinaries) -> Vec<ComponentSpec> {
        let broker = components::broker(tools, &self.host, self.broker_port);
        let registry = components::schema_registry(
            &services.schema_registry,
            &self.host,
            self.registry_port,
            &absolute(&self.state_dir.join("data/registry/journal.jsonl")),
        );
        let redis = components::redis(
            tools,
            &self.host,
            self.redis_port,
            &absolute(&self.state_dir.join("data/redis")),
        );
        let processors: Vec<ComponentSpec> = (1..=self.processors.max(1))
            .map(|instance| {
                components::processor(
                    services,
                    &self.host,
                    (instance, self.processor_metrics_port + instance as u16 - 1),
                    &broker.env_value,
                    &registry.env_value,
                    &redis.env_value,
                    &absolute(&self.features_dir),
                    &absolute(
                        &self
                            .state_dir
                            .join(format!("data/processor/local-{instance}")),
                    ),
                )
            })
            .collect();
        let serving = components::serving(
            services,
            &self.host,
            self.serving_port,
            &redis.env_value,
            &absolute(&self.features_dir),
        );
        let producer = (self.demo_rate > 0.0).then(|| {
            components::demo_producer(
                services,
                &self.host,
                self.producer_metrics_port,
                &broker.env_value,
                &registry.env_value,
                self.demo_rate,
            )
        });
        let prometheus = components::prometheus(
            tools,
            &self.host,
            self.prometheus_port,
            &absolute(&self.prometheus_dir()),
        );
        let mut all = vec![broker, redis, registry];
        all.extend(processors);
        all.extend([serving, prometheus]);
        all.extend(producer);
        all
    }

    fn prometheus_dir(&self) -> PathBuf {
        self.state_dir.join("data/prometheus")
    }

    /// Puts the monitoring configuration where the stack's Prometheus reads it, with the
    /// scrape targets of this stack in `targets/local.json`.
    fn write_prometheus_config(&self, specs: &[ComponentSpec]) -> Result<(), StackError> {
        let dir = self.prometheus_dir();
        let targets_dir = dir.join("targets");
        std::fs::create_dir_all(&targets_dir).map_err(io(&targets_dir))?;
        for file in ["prometheus.yml", "rules.yml"] {
            let from = self.monitoring_dir.join(file);
            std::fs::copy(&from, dir.join(file)).map_err(|cause| StackError::Io {
                path: from.clone(),
                cause,
            })?;
        }
        let targets: Vec<serde_json::Value> = specs
            .iter()
            .filter_map(|s| {
                let service = match s.name.as_str() {
                    "producer" | "serving" => s.name.as_str(),
                    name if name.starts_with("processor") => "processor",
                    _ => return None,
                };
                Some(serde_json::json!({
                    "targets": [s.address()],
                    "labels": {"service": service},
                }))
            })
            .collect();
        let path = targets_dir.join("local.json");
        let json = serde_json::to_string_pretty(&targets).expect("targets serialise");
        std::fs::write(&path, json).map_err(io(&path))
    }

    pub fn log_path(&self, component: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{component}.log"))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("the local stack in {} is already running; see `freshet status`, or stop it with `freshet down`", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not a stack state file Freshet can read ({reason}); remove it if no stack is running", path.display())]
    BadState { path: PathBuf, reason: String },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StackError + '_ {
    move |cause| StackError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What `stack.json` records of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentState {
    pub name: String,
    pub pid: i32,
    pub program: PathBuf,
    pub host: String,
    pub port: u16,
    pub readiness: Readiness,
    pub env_key: String,
    pub env_value: String,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackState {
    pub components: Vec<ComponentState>,
}

impl StackState {
    pub fn load(state_dir: &Path) -> Result<Option<Self>, StackError> {
        let path = state_dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StackError::BadState {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn save(&self, state_dir: &Path) -> Result<(), StackError> {
        let path = state_dir.join(STATE_FILE);
        let json = serde_json::to_string_pretty(self).expect("state serialises");
        std::fs::write(&path, json).map_err(io(&path))?;
        let env_path = state_dir.join(ENV_FILE);
        std::fs::write(&env_path, self.env_file()).map_err(io(&env_path))
    }

    /// The contents of `stack.env`.
    pub fn env_file(&self) -> String {
        let mut text = String::from(
            "# Addresses of the local Freshet stack, written by `freshet up`.\n# Load them with: set -a; . .freshet/stack.env; set +a\n",
        );
        for c in &self.components {
            text.push_str(&format!("{}={}\n", c.env_key, c.env_value));
        }
        text
    }

    fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(STATE_FILE));
        let _ = std::fs::remove_file(state_dir.join(ENV_FILE));
    }
}

/// A started stack whose processes this process owns.
pub struct RunningStack {
    pub state: StackState,
    state_dir: PathBuf,
    processes: Vec<ManagedProcess>,
}

/// Starts every component in order and waits for each to be ready. `on_ready` is called
/// after each one with how long it took. On any failure the components already started
/// are stopped again.
pub fn start(
    config: &StackConfig,
    tools: &Tools,
    services: &ServiceBinaries,
    mut on_ready: impl FnMut(&ComponentSpec, Duration),
) -> Result<RunningStack, StackError> {
    if let Some(state) = StackState::load(&config.state_dir)? {
        if state
            .components
            .iter()
            .any(|c| process::is_running(c.pid, &c.program))
        {
            return Err(StackError::AlreadyRunning(config.state_dir.clone()));
        }
    }
    // The broker keeps topics in memory: each start begins with empty ones. The
    // processor's checkpoint holds offsets into the last run's topics (and state built from
    // them), so it starts over too; Redis keeps nothing either.
    let processor_state = config.state_dir.join("data/processor");
    if processor_state.exists() {
        std::fs::remove_dir_all(&processor_state).map_err(io(&processor_state))?;
    }
    let specs = config.components(tools, services);
    for spec in &specs {
        let dir = config.state_dir.join("data").join(&spec.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    config.write_prometheus_config(&specs)?;
    let mut processes = Vec::new();
    let mut state = StackState::default();
    for spec in &specs {
        let began = Instant::now();
        let log = absolute(&config.log_path(&spec.name));
        let mut proc = ManagedProcess::start(spec, &log)?;
        proc.wait_ready(spec, config.ready_timeout)?;
        on_ready(spec, began.elapsed());
        state.components.push(ComponentState {
            name: spec.name.clone(),
            pid: proc.pid,
            program: spec.program.clone(),
            host: spec.host.clone(),
            port: spec.port,
            readiness: spec.readiness.clone(),
            env_key: spec.env_key.clone(),
            env_value: spec.env_value.clone(),
            log,
        });
        processes.push(proc);
    }
    state.save(&config.state_dir)?;
    Ok(RunningStack {
        state,
        state_dir: config.state_dir.clone(),
        processes,
    })
}

impl RunningStack {
    /// The first component found to have exited, if any.
    pub fn exited_component(&mut self) -> Option<String> {
        self.processes
            .iter_mut()
            .find_map(|p| p.has_exited().then(|| p.name.clone()))
    }

    /// Leaves every component running in the background.
    pub fn detach(self) -> StackState {
        for p in self.processes {
            p.detach();
        }
        self.state
    }

    /// Stops every component, last started first, and removes the state files.
    pub fn stop(mut self) {
        while let Some(p) = self.processes.pop() {
            p.stop();
        }
        StackState::remove(&self.state_dir);
    }
}

/// How one component of a recorded stack is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentStatus {
    pub name: String,
    pub pid: i32,
    pub address: String,
    pub running: bool,
    pub ready: bool,
    pub log: PathBuf,
    /// For a processor instance: the input partitions it owns (`topic/partition`), as its
    /// metrics say.
    pub partitions: Option<Vec<String>>,
}

/// The input partitions a processor's metrics say it owns: the series
/// `freshet_processor_partition_assigned{partition="..",topic=".."} 1`.
pub fn owned_partitions(metrics: &str) -> Vec<String> {
    let mut owned: Vec<(String, i32)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("freshet_processor_partition_assigned{")?;
            let (labels, value) = rest.split_once("} ")?;
            if value.trim().parse::<f64>().ok()? != 1.0 {
                return None;
            }
            let label = |name: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_string())
                })
            };
            Some((label("topic")?, label("partition")?.parse().ok()?))
        })
        .collect();
    owned.sort();
    owned.into_iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

/// The status of the stack recorded in `state_dir`, or `None` when none was started.
pub fn status(state_dir: &Path) -> Result<Option<Vec<ComponentStatus>>, StackError> {
    let Some(state) = StackState::load(state_dir)? else {
        return Ok(None);
    };
    Ok(Some(
        state
            .components
            .iter()
            .map(|c| {
                let running = process::is_running(c.pid, &c.program);
                let ready = running && process::check_ready(&c.host, c.port, &c.readiness);
                let partitions = (ready && c.name.starts_with("processor"))
                    .then(|| process::http_get(&c.host, c.port, "/metrics"))
                    .flatten()
                    .map(|metrics| owned_partitions(&metrics));
                ComponentStatus {
                    name: c.name.clone(),
                    pid: c.pid,
                    address: format!("{}:{}", c.host, c.port),
                    running,
                    ready,
                    log: c.log.clone(),
                    partitions,
                }
            })
            .collect(),
    ))
}

/// What `down` did to one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    Killed,
    NotRunning,
}

/// Stops every component recorded in `state_dir`, last started first, and removes the
/// state files. Returns `None` when no stack was recorded.
pub fn down(state_dir: &Path) -> Result<Option<Vec<(String, StopOutcome)>>, StackError> {
    let Some(state) = StackState::load(state_dir)? else {
        return Ok(None);
    };
    let outcomes = state
        .components
        .iter()
        .rev()
        .map(|c| {
            let outcome = if !process::is_running(c.pid, &c.program) {
                StopOutcome::NotRunning
            } else if process::stop_pid(c.pid, &c.program) {
                StopOutcome::Killed
            } else {
                StopOutcome::Stopped
            };
            (c.name.clone(), outcome)
        })
        .collect();
    StackState::remove(state_dir);
    Ok(Some(outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processors_owned_partitions_are_the_assigned_series_at_one() {
        let metrics = "# HELP freshet_processor_partition_assigned ...\n\
            freshet_processor_partition_assigned{partition=\"10\",topic=\"user_events\"} 1\n\
            freshet_processor_partition_assigned{partition=\"2\",topic=\"user_events\"} 1\n\
            freshet_processor_partition_assigned{partition=\"3\",topic=\"user_events\"} 0\n\
            freshet_processor_assigned_partitions 2\n";
        assert_eq!(
            owned_partitions(metrics),
            vec!["user_events/2".to_string(), "user_events/10".to_string()]
        );
        assert!(owned_partitions("").is_empty());
    }
}
