//! How each component of the local stack is started and checked.

use crate::tools::{ServiceBinaries, Tools};
use std::path::{Path, PathBuf};

/// How to tell that a started component is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// The port accepts TCP connections.
    Tcp,
    /// The server answers `PING` with `+PONG` (Redis protocol).
    RedisPing,
    /// `GET path` over HTTP/1.1 answers 200.
    Http { path: String },
}

/// Everything needed to start one component and publish its address.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// Short name used in logs, status and the state file (`broker`, `redis`, ...).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment variables removed from the child's environment, so settings meant for
    /// Freshet's own services do not leak into third-party servers.
    pub env_remove: Vec<&'static str>,
    pub host: String,
    pub port: u16,
    pub readiness: Readiness,
    /// The `stack.env` variable that publishes the address, and its value.
    pub env_key: String,
    pub env_value: String,
}

impl ComponentSpec {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The Kafka-compatible broker, keeping topics in memory.
pub fn broker(tools: &Tools, host: &str, port: u16) -> ComponentSpec {
    let url = format!("tcp://{host}:{port}");
    ComponentSpec {
        name: "broker".into(),
        program: tools.tansu.clone(),
        args: vec![
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ],
        // tansu reads these from the environment when present.
        env_remove: vec![
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "CLUSTER_ID",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ],
        host: host.into(),
        port,
        readiness: Readiness::Tcp,
        env_key: "FRESHET_BROKERS".into(),
        env_value: format!("{host}:{port}"),
    }
}

/// Freshet's schema registry (the binary `program`), with its journal at `journal`: the
/// stack keeps it in its data folder so schema ids survive restarts of the stack.
pub fn schema_registry(program: &Path, host: &str, port: u16, journal: &Path) -> ComponentSpec {
    ComponentSpec {
        name: "registry".into(),
        program: program.to_path_buf(),
        args: vec![
            "--listen".into(),
            format!("{host}:{port}"),
            "--journal".into(),
            journal.display().to_string(),
        ],
        env_remove: vec![
            "FRESHET_REGISTRY_LISTEN",
            "FRESHET_REGISTRY_JOURNAL",
            "FRESHET_REGISTRY_USERS_FILE",
        ],
        host: host.into(),
        port,
        readiness: Readiness::Http {
            path: "/health".into(),
        },
        env_key: "FRESHET_REGISTRY_URL".into(),
        env_value: format!("http://{host}:{port}"),
    }
}

/// The demo producer: simulated user events at `rate` per second, forever.
pub fn demo_producer(
    services: &ServiceBinaries,
    host: &str,
    metrics_port: u16,
    brokers: &str,
    registry_url: &str,
    rate: f64,
) -> ComponentSpec {
    ComponentSpec {
        name: "producer".into(),
        program: services.producer.clone(),
        args: vec![
            "--rate".into(),
            rate.to_string(),
            "--brokers".into(),
            brokers.into(),
            "--registry-url".into(),
            registry_url.into(),
            "--metrics-listen".into(),
            format!("{host}:{metrics_port}"),
        ],
        env_remove: vec![
            "FRESHET_BROKERS",
            "FRESHET_REGISTRY_URL",
            "FRESHET_PRODUCER_METRICS_LISTEN",
        ],
        host: host.into(),
        port: metrics_port,
        readiness: Readiness::Http {
            path: "/metrics".into(),
        },
        env_key: "FRESHET_PRODUCER_METRICS_URL".into(),
        env_value: format!("http://{host}:{metrics_port}/metrics"),
    }
}

/// One instance of the stream processor (`instance` counts from 1), with its RocksDB
/// checkpoint in `data_dir`. Instances share the source partitions through the consumer
/// group; the first is named `processor`, the others `processor-2`, `processor-3`, ...
#[allow(clippy::too_many_arguments)]
pub fn processor(
    services: &ServiceBinaries,
    host: &str,
    (instance, metrics_port): (usize, u16),
    brokers: &str,
    registry_url: &str,
    redis_url: &str,
    features_dir: &Path,
    data_dir: &Path,
) -> ComponentSpec {
    let (name, env_key) = match instance {
        1 => (
            "processor".to_string(),
            "FRESHET_PROCESSOR_METRICS_URL".to_string(),
        ),
        n => (
            format!("processor-{n}"),
            format!("FRESHET_PROCESSOR_{n}_METRICS_URL"),
        ),
    };
    ComponentSpec {
        name,
        program: services.processor.clone(),
        args: vec![
            "--brokers".into(),
            brokers.into(),
            "--registry-url".into(),
            registry_url.into(),
            "--redis-url".into(),
            redis_url.into(),
            "--features-dir".into(),
            features_dir.display().to_string(),
            "--state-dir".into(),
            data_dir.display().to_string(),
            "--metrics-listen".into(),
            format!("{host}:{metrics_port}"),
            "--instance-id".into(),
            format!("local-{instance}"),
        ],
        env_remove: vec![
            "FRESHET_BROKERS",
            "FRESHET_REGISTRY_URL",
            "FRESHET_REDIS_URL",
            "FRESHET_FEATURES_DIR",
            "FRESHET_PROCESSOR_STATE_DIR",
            "FRESHET_PROCESSOR_METRICS_LISTEN",
            "FRESHET_PROCESSOR_INSTANCE_ID",
        ],
        host: host.into(),
        port: metrics_port,
        readiness: Readiness::Http {
            path: "/metrics".into(),
        },
        env_key,
        env_value: format!("http://{host}:{metrics_port}/metrics"),
    }
}

/// The serving API, reading feature values from Redis.
pub fn serving(
    services: &ServiceBinaries,
    host: &str,
    port: u16,
    redis_url: &str,
    features_dir: &Path,
) -> ComponentSpec {
    ComponentSpec {
        name: "serving".into(),
        program: services.serving.clone(),
        args: vec![
            "--listen".into(),
            format!("{host}:{port}"),
            "--redis-url".into(),
            redis_url.into(),
            "--features-dir".into(),
            features_dir.display().to_string(),
            // The local stack is for one developer's machine: no API keys (the service
            // logs that it serves without them), and the copilot on (it still needs an
            // LLM key to answer). docs/security.md says how to lock it.
            "--no-auth".into(),
            "--enable-copilot".into(),
        ],
        env_remove: vec![
            "FRESHET_SERVING_LISTEN",
            "FRESHET_REDIS_URL",
            "FRESHET_FEATURES_DIR",
            "FRESHET_API_KEYS",
            "FRESHET_API_KEYS_FILE",
        ],
        host: host.into(),
        port,
        readiness: Readiness::Http {
            path: "/ready".into(),
        },
        env_key: "FRESHET_SERVING_URL".into(),
        env_value: format!("http://{host}:{port}"),
    }
}

/// Prometheus, scraping the stack with the configuration in `config_dir` (see
/// [`crate::stack`], which writes it there from `monitoring/`), keeping its data there too.
pub fn prometheus(tools: &Tools, host: &str, port: u16, config_dir: &Path) -> ComponentSpec {
    ComponentSpec {
        name: "prometheus".into(),
        program: tools.prometheus.clone(),
        args: vec![
            format!(
                "--config.file={}",
                config_dir.join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", config_dir.join("tsdb").display()),
            "--storage.tsdb.retention.time=1d".into(),
            format!("--web.listen-address={host}:{port}"),
        ],
        env_remove: vec![],
        host: host.into(),
        port,
        readiness: Readiness::Http {
            path: "/-/ready".into(),
        },
        env_key: "FRESHET_PROMETHEUS_URL".into(),
        env_value: format!("http://{host}:{port}"),
    }
}

/// Redis, with persistence off: feature values are rebuilt by the processor.
pub fn redis(tools: &Tools, host: &str, port: u16, data_dir: &Path) -> ComponentSpec {
    ComponentSpec {
        name: "redis".into(),
        program: tools.redis_server.clone(),
        args: vec![
            "--bind".into(),
            host.into(),
            "--port".into(),
            port.to_string(),
            "--dir".into(),
            data_dir.display().to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ],
        env_remove: vec![],
        host: host.into(),
        port,
        readiness: Readiness::RedisPing,
        env_key: "FRESHET_REDIS_URL".into(),
        env_value: format!("redis://{host}:{port}"),
    }
}
