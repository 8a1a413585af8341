//! Real servers for integration tests: a Kafka-compatible broker (tansu), Redis and
//! Freshet's schema registry, each on a free loopback port, stopped when the [`TestStack`]
//! is dropped, even on panic. The broker and Redis are started through the same
//! `freshet-localstack` code that `freshet up` uses, and so is the registry (Freshet's own
//! binary, with its journal in the test's temporary folder so it can be stopped and
//! restarted with its data). Every server is a process; the testkit links no service.
//!
//! Logs go to a temporary folder. When a test fails, the folder is kept and the last lines
//! of every log are printed, so a failure in CI can be understood from its output alone.
//!
//! [`TestRedis`] is a Redis alone, for tests that need no broker; [`cpu`] reads CPU time
//! from `/proc` for benches; [`metrics`] reads a
//! service's Prometheus endpoint; [`otlp`] receives exported spans; [`llm`] answers
//! OpenAI chat-completion requests from a script, standing in for the LLM API.
//!
//! Binaries come from `scripts/bootstrap.sh` (see `freshet_localstack::Tools`).

mod background;
pub mod cpu;
pub mod flink;
pub mod lake_events;
pub mod llm;
pub mod metrics;
pub mod otlp;
pub mod s3;
pub mod tls_redis;
pub use tls_redis::TlsRedis;

/// Where `scripts/bootstrap.sh` installs third-party tools (`$FRESHET_TOOLS_DIR`, default
/// `~/.cache/freshet/tools`): the venvs of the clients tests check Freshet against.
pub use freshet_localstack::tools::tools_dir;

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

    /// The server's process id while it runs (to read its CPU time, or stop and continue
    /// it with signals).
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid)
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

/// Freshet's schema registry as its own process (the `freshet-schema-registry` binary),
/// with its journal at a path of the test's, so it can be stopped and restarted with its
/// data.
pub struct Registry {
    pub port: u16,
    pub journal: std::path::PathBuf,
    spec: ComponentSpec,
    process: Option<ManagedProcess>,
}

/// The `freshet-schema-registry` binary: `FRESHET_SCHEMA_REGISTRY_BIN`, or the one this
/// build put in `<target>/<profile>/`. `cargo test --workspace` builds it; a test run of
/// one crate does not (cargo cannot be asked from inside a test: it holds the build lock
/// while tests run), so build it first: `cargo build -p freshet-schema-registry`.
fn registry_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("FRESHET_SCHEMA_REGISTRY_BIN") {
        return path.into();
    }
    // A test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test binary's path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("freshet-schema-registry"))
        .expect("a test binary in <target>/<profile>/deps");
    assert!(
        binary.is_file(),
        "no schema registry binary at {}: run `cargo build -p freshet-schema-registry` first \
         (or set FRESHET_SCHEMA_REGISTRY_BIN)",
        binary.display()
    );
    binary
}

impl Registry {
    /// A registry on a free port with its journal at `journal`.
    pub fn start_at(journal: std::path::PathBuf) -> Self {
        Self::start_with(journal, &[])
    }

    /// A registry that needs basic auth, with the users of `users_file` (lines
    /// `NAME:ROLE:HASH`; [`Registry::users_file_line`] makes one).
    pub fn start_with_users(journal: std::path::PathBuf, users_file: &std::path::Path) -> Self {
        Self::start_with(
            journal,
            &["--users-file".into(), users_file.display().to_string()],
        )
    }

    /// A users file line for `name` with `role` (`read` or `write`) and `password`, hashed
    /// by the registry binary itself (`hash-password`).
    pub fn users_file_line(name: &str, role: &str, password: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new(registry_binary())
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the registry binary runs");
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "hash-password failed");
        let hash = String::from_utf8(output.stdout).unwrap();
        format!("{name}:{role}:{}", hash.trim())
    }

    /// A registry on a free port with its journal at `journal` and more flags.
    pub fn start_with(journal: std::path::PathBuf, flags: &[String]) -> Self {
        let program = registry_binary();
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut spec =
                components::schema_registry(&program, "127.0.0.1", free_port(), &journal);
            spec.args.extend(flags.iter().cloned());
            let mut registry = Self {
                port: spec.port,
                journal: journal.clone(),
                spec,
                process: None,
            };
            match registry.run() {
                Ok(()) => return registry,
                Err(e) => last_error = Some(e),
            }
        }
        panic!("{}", last_error.expect("at least one attempt"));
    }

    fn log(&self) -> std::path::PathBuf {
        self.journal.with_extension("log")
    }

    fn run(&mut self) -> Result<(), freshet_localstack::ProcessError> {
        if let Some(dir) = self.journal.parent() {
            std::fs::create_dir_all(dir).expect("the registry's journal folder");
        }
        let mut process = ManagedProcess::start(&self.spec, &self.log())?;
        process.wait_ready(&self.spec, READY_TIMEOUT)?;
        self.process = Some(process);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the registry (SIGTERM), as an outage would; the journal stays.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts again on the same port with the same journal.
    pub fn restart(&mut self) {
        self.stop();
        self.run()
            .unwrap_or_else(|e| panic!("restarting the schema registry: {e}"));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            eprintln!(
                "--- last lines of {} ---\n{}",
                log.display(),
                log_tail(&log, 30)
            );
        }
    }
}

/// A broker, a Redis and a schema registry for one test.
pub struct TestStack {
    pub broker: Server,
    pub redis: Server,
    pub registry: Registry,
    /// The credentials the test's own clients send to the registry.
    registry_auth: freshet_avro::RegistryAuth,
    logs: tempfile::TempDir,
}

impl TestStack {
    /// Starts a broker and a Redis on free ports. Panics with the reason (and the server's
    /// log) when a binary is missing or a server does not come up.
    pub fn start() -> Self {
        Self::start_with_registry(Registry::start_at)
    }

    /// A stack whose registry needs basic auth: `users` are (name, role, password), and
    /// [`TestStack::registry`] sends the first one's credentials.
    pub fn start_with_registry_users(users: &[(&str, &str, &str)]) -> Self {
        let lines: Vec<String> = users
            .iter()
            .map(|(name, role, password)| Registry::users_file_line(name, role, password))
            .collect();
        let mut stack = Self::start_with_registry(|journal| {
            let users_file = journal.with_file_name("users.txt");
            std::fs::create_dir_all(users_file.parent().unwrap()).unwrap();
            std::fs::write(&users_file, lines.join("\n")).unwrap();
            Registry::start_with_users(journal, &users_file)
        });
        let (username, _, password) = users.first().expect("at least one user");
        stack.registry_auth = freshet_avro::RegistryAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        };
        stack
    }

    fn start_with_registry(registry: impl FnOnce(std::path::PathBuf) -> Registry) -> Self {
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
        let registry = registry(logs.path().join("registry/journal.jsonl"));
        Self {
            broker,
            redis,
            registry,
            registry_auth: freshet_avro::RegistryAuth::None,
            logs,
        }
    }

    /// The schema registry with the credentials this stack's clients send.
    pub fn registry(&self) -> freshet_avro::Registry {
        freshet_avro::Registry::new(self.registry.url()).with_auth(self.registry_auth.clone())
    }

    /// `http://host:port` of the schema registry.
    pub fn registry_url(&self) -> String {
        self.registry.url()
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

/// A Redis on its own, for tests that need no broker (the serving API, the store).
pub struct TestRedis {
    pub server: Server,
    logs: tempfile::TempDir,
}

impl TestRedis {
    pub fn start() -> Self {
        let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
        let logs = tempfile::Builder::new()
            .prefix("freshet-test-")
            .tempdir()
            .expect("a temporary folder for server logs");
        let data = logs.path().join("redis-data");
        std::fs::create_dir_all(&data).expect("redis data folder");
        let server = start_server(&logs, |port| {
            components::redis(&tools, "127.0.0.1", port, &data)
        });
        Self { server, logs }
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.server.address())
    }

    /// Stops Redis (as an outage would); [`TestRedis::restart`] brings it back, empty, at
    /// the same address.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    pub fn restart(&mut self) {
        self.server.restart(self.logs.path());
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.server.stop();
        if std::thread::panicking() {
            let log = self.logs.path().join("redis.log");
            eprintln!(
                "--- last lines of {} ---\n{}",
                log.display(),
                log_tail(&log, 30)
            );
        }
    }
}

/// A Redis Cluster of three masters without replicas, from `redis-server` processes on
/// free ports, the 16,384 slots split evenly between them.
pub struct TestRedisCluster {
    pub nodes: Vec<Server>,
    logs: tempfile::TempDir,
}

impl TestRedisCluster {
    pub fn start() -> Self {
        const MASTERS: usize = 3;
        let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
        let logs = tempfile::Builder::new()
            .prefix("freshet-test-cluster-")
            .tempdir()
            .expect("a temporary folder for server logs");
        let nodes: Vec<Server> = (0..MASTERS)
            .map(|i| {
                let data = logs.path().join(format!("node-{i}"));
                std::fs::create_dir_all(&data).expect("node data folder");
                start_server(&logs, |port| {
                    let mut spec = components::redis(&tools, "127.0.0.1", port, &data);
                    spec.name = format!("redis-node-{i}");
                    spec.args.extend(
                        ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
                            .map(String::from),
                    );
                    spec
                })
            })
            .collect();
        let connect = |node: &Server| {
            redis::Client::open(format!("redis://{}", node.address()))
                .and_then(|c| c.get_connection())
                .expect("a cluster node answers")
        };
        let per_node = 16_384 / MASTERS;
        for (i, node) in nodes.iter().enumerate() {
            let mut conn = connect(node);
            let first = i * per_node;
            let last = if i + 1 == MASTERS {
                16_383
            } else {
                first + per_node - 1
            };
            let _: () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query(&mut conn)
                .expect("CLUSTER SET-CONFIG-EPOCH");
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut conn)
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let mut first = connect(&nodes[0]);
        for node in &nodes[1..] {
            let spec = &node.spec;
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg(&spec.host)
                .arg(spec.port)
                .query(&mut first)
                .expect("CLUSTER MEET");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            let mut conn = connect(node);
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap();
                if info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{MASTERS}"))
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the test cluster did not form within 30 s:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Self { nodes, logs }
    }

    /// `redis+cluster://host1:port1,host2:port2,host3:port3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(Server::address).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Each node's own `redis://` URL.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.address()))
            .collect()
    }

    /// A plain connection to each node (it answers for its own slots), with its URL.
    pub async fn node_connections(&self) -> Vec<(String, redis::aio::MultiplexedConnection)> {
        let mut connections = Vec::new();
        for url in self.node_urls() {
            let connection = redis::Client::open(url.as_str())
                .expect("a node URL")
                .get_multiplexed_async_connection()
                .await
                .expect("a cluster node answers");
            connections.push((url, connection));
        }
        connections
    }
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let log = self.logs.path().join(format!("redis-node-{i}.log"));
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    log.display(),
                    log_tail(&log, 20)
                );
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
        self.registry.stop();
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
