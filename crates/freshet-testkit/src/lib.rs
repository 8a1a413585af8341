//! Real servers for integration tests: a Kafka-compatible broker (tansu) and Redis, each
//! started on a free loopback port through the same `freshet-localstack` code that
//! `freshet up` uses, and stopped when the [`TestStack`] is dropped, even on panic.
//!
//! Logs go to a temporary folder. When a test fails, the folder is kept and the last lines
//! of every log are printed, so a failure in CI can be understood from its output alone.
//!
//! Binaries come from `scripts/bootstrap.sh` (see `freshet_localstack::Tools`).

use freshet_localstack::components::{self, ComponentSpec};
use freshet_localstack::process::log_tail;
use freshet_localstack::{free_port, ManagedProcess, Tools};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at picking a port: another test may grab a free port between choice and use.
const START_ATTEMPTS: usize = 3;

/// One server started for a test.
pub struct Server {
    pub spec: ComponentSpec,
    process: Option<ManagedProcess>,
}

impl Server {
    pub fn address(&self) -> String {
        self.spec.address()
    }

    /// Stops the server (as a crash or an outage would), keeping its port reserved in
    /// `spec` so [`Server::restart`] brings it back at the same address.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }

    pub fn restart(&mut self, logs: &std::path::Path) {
        self.stop();
        let log = logs.join(format!("{}.log", self.spec.name));
        let mut process = ManagedProcess::start(&self.spec, &log)
            .unwrap_or_else(|e| panic!("restarting {}: {e}", self.spec.name));
        process
            .wait_ready(&self.spec, READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("restarting {}: {e}", self.spec.name));
        self.process = Some(process);
    }
}

/// A broker and a Redis for one test.
pub struct TestStack {
    pub broker: Server,
    pub redis: Server,
    logs: tempfile::TempDir,
}

impl TestStack {
    /// Starts a broker and a Redis on free ports. Panics with the reason (and the server's
    /// log) when a binary is missing or a server does not come up.
    pub fn start() -> Self {
        let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
        let logs = tempfile::Builder::new()
            .prefix("freshet-test-")
            .tempdir()
            .expect("a temporary folder for server logs");
        let broker = start_server(&logs, |port| components::broker(&tools, "127.0.0.1", port));
        let redis_dir = logs.path().join("redis-data");
        std::fs::create_dir_all(&redis_dir).expect("redis data folder");
        let redis = start_server(&logs, |port| {
            components::redis(&tools, "127.0.0.1", port, &redis_dir)
        });
        Self {
            broker,
            redis,
            logs,
        }
    }

    /// `host:port` of the broker, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.broker.address()
    }

    /// `redis://host:port`.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.redis.address())
    }

    pub fn logs_dir(&self) -> &std::path::Path {
        self.logs.path()
    }

    /// Creates a topic (the broker does not create topics on first use). Waits until the
    /// broker has it.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("creating topic {topic}: {code}"),
            }
        }
    }
}

fn start_server(logs: &tempfile::TempDir, spec_for: impl Fn(u16) -> ComponentSpec) -> Server {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let spec = spec_for(free_port());
        let log = logs.path().join(format!("{}.log", spec.name));
        let started = ManagedProcess::start(&spec, &log).and_then(|mut p| {
            p.wait_ready(&spec, READY_TIMEOUT)?;
            Ok(p)
        });
        match started {
            Ok(process) => {
                return Server {
                    spec,
                    process: Some(process),
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    panic!("{}", last_error.expect("at least one attempt"));
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.redis.stop();
        self.broker.stop();
        if std::thread::panicking() {
            let kept = std::mem::replace(&mut self.logs, tempfile::tempdir().expect("tempdir"));
            let path = kept.keep();
            for name in ["broker", "redis"] {
                let log = path.join(format!("{name}.log"));
                eprintln!(
                    "--- last lines of {} (kept for the failed test) ---\n{}",
                    log.display(),
                    log_tail(&log, 30)
                );
            }
        }
    }
}
