//! Shared by the processor's integration tests: running the processor binary, producing a
//! seeded stream, reading topics back, and the independent oracle.

#![allow(dead_code)]

use apache_avro::Schema;
use freshet_avro::WireDecoder;
use freshet_core::definitions::{Aggregation, Definitions};
use freshet_core::{load_dir, Value, Window};
use freshet_producer::event::{SchemaVersion, UserEvent, SCHEMA_V2};
use freshet_producer::metrics::ProducerMetrics;
use freshet_producer::produce::{run, EventProducer, ProducerConfig, RunOptions};
use freshet_producer::simulate::{SimConfig, Simulator};
use freshet_testkit::TestStack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOPIC: &str = "user_events";

/// One record as read back: (offset, key, payload).
pub type RawRecord = (i64, Vec<u8>, Vec<u8>);
/// Feature values by (view, entity).
pub type ValuesByKey = BTreeMap<(String, String), BTreeMap<String, Value>>;
/// What Redis holds by (view, entity): version and values, or nothing.
pub type StoredByKey = BTreeMap<(String, String), Option<(u64, BTreeMap<String, Value>)>>;
pub const PARTITIONS: i32 = 3;

/// An unsigned number from the environment variable `name`, else `default`: the size
/// knobs of the long tests and benches.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn features_dir() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features")
}

pub fn definitions() -> Definitions {
    load_dir(&features_dir()).unwrap()
}

/// A processor deployment: its own state folder, group, output topic and Redis database.
pub struct Deployment {
    pub group: String,
    pub state_dir: PathBuf,
    pub output_topic: String,
    pub redis_db: u8,
    pub metrics_port: u16,
    /// Another store than the stack's Redis (e.g. a Redis Cluster's URL).
    pub redis_url: Option<String>,
    /// The definitions it runs (default: the shipped ones).
    pub features_dir: PathBuf,
}

impl Deployment {
    pub fn new(dir: &Path, name: &str, redis_db: u8) -> Self {
        Self {
            group: format!("processor-{name}"),
            state_dir: dir.join(name),
            output_topic: format!("feature_updates_{name}"),
            redis_db,
            metrics_port: freshet_localstack::free_port(),
            redis_url: None,
            features_dir: features_dir(),
        }
    }

    pub fn redis_url(&self, stack: &TestStack) -> String {
        match &self.redis_url {
            Some(url) => url.clone(),
            None => format!("{}/{}", stack.redis_url(), self.redis_db),
        }
    }

    pub fn start(&self, stack: &TestStack) -> Running {
        Running(self.spawn(stack, &[]))
    }

    /// [`Deployment::start`] with more flags.
    pub fn start_with(&self, stack: &TestStack, flags: &[&str]) -> Running {
        Running(self.spawn(stack, flags))
    }

    /// Runs the processor until it exits by itself (killed after `limit`, failing the
    /// test); returns how it ended and what it wrote to stderr.
    pub fn run_until_exit(
        &self,
        stack: &TestStack,
        limit: Duration,
    ) -> (std::process::ExitStatus, String) {
        self.run_until_exit_with(stack, &[], limit)
    }

    /// [`Deployment::run_until_exit`] with more flags.
    pub fn run_until_exit_with(
        &self,
        stack: &TestStack,
        flags: &[&str],
        limit: Duration,
    ) -> (std::process::ExitStatus, String) {
        let mut child = self
            .command(stack, flags)
            .stderr(Stdio::piped())
            .spawn()
            .expect("the processor starts");
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the processor still runs after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn spawn(&self, stack: &TestStack, flags: &[&str]) -> Child {
        self.command(stack, flags)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the processor starts")
    }

    /// The state folder of one instance of the deployment.
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.state_dir.join(instance)
    }

    /// Starts one instance of a deployment of several: its own instance id, state folder
    /// ([`Self::instance_dir`]) and metrics port.
    pub fn start_instance(&self, stack: &TestStack, instance: &str, metrics_port: u16) -> Running {
        let state_dir = self.instance_dir(instance);
        let mut command = self.command_at(
            stack,
            &["--instance-id", instance],
            &state_dir,
            metrics_port,
        );
        Running(
            command
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the processor starts"),
        )
    }

    fn command(&self, stack: &TestStack, flags: &[&str]) -> Command {
        self.command_at(stack, flags, &self.state_dir, self.metrics_port)
    }

    fn command_at(
        &self,
        stack: &TestStack,
        flags: &[&str],
        state_dir: &Path,
        metrics_port: u16,
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_freshet-processor"));
        command
            .args(flags)
            .args(["--features-dir", self.features_dir.to_str().unwrap()])
            .args([
                "--brokers",
                &stack.brokers(),
                "--registry-url",
                &stack.registry_url(),
            ])
            .args(["--redis-url", &self.redis_url(stack)])
            .args([
                "--state-dir",
                state_dir.to_str().unwrap(),
                "--group-id",
                &self.group,
            ])
            .args([
                "--output-topic",
                &self.output_topic,
                "--dead-letter-topic",
                &format!("dead_{}", self.group),
            ])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--epoch-ms",
                "50",
            ])
            .args(["--stack-dir", "/nonexistent"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if std::env::var_os("FRESHET_TEST_PROCESSOR_LOGS").is_some() {
            command.env("RUST_LOG", "info");
        }
        command
    }
}

/// A running processor, killed when dropped so a failing test leaves nothing behind.
pub struct Running(pub Child);

impl Running {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }

    /// SIGTERM: the processor finishes its epoch and must exit cleanly.
    pub fn terminate(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(
            self.wait().success(),
            "the processor exits cleanly on SIGTERM"
        );
    }
}

/// Waits (up to 60 s) until the deployment has processed `events` source records.
pub async fn wait_for_events(deployment: &Deployment, events: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let processed = "freshet_processor_events_total{topic=\"user_events\"}";
    while metric(&scrape_metrics(deployment.metrics_port), processed) != Some(events as f64) {
        assert!(
            Instant::now() < deadline,
            "the processor did not process all {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn sim(seed: u64, users: u32) -> SimConfig {
    SimConfig {
        seed,
        users,
        start_ms: 1_700_000_000_000,
        // Slow event time: 30,000 events span 100 minutes, so hourly windows and
        // 30-minute sessions close.
        events_per_second: 5.0,
        ..SimConfig::default()
    }
}

pub async fn produce(stack: &TestStack, config: SimConfig, count: u64, rate: f64) -> u64 {
    produce_traced(stack, config, count, rate, None).await
}

/// [`produce`], exporting the producer's spans (one per event) to `otlp_endpoint`, all
/// flushed before it returns.
pub async fn produce_traced(
    stack: &TestStack,
    config: SimConfig,
    count: u64,
    rate: f64,
    otlp_endpoint: Option<&str>,
) -> u64 {
    produce_events(
        stack,
        Simulator::new(config).unwrap(),
        count,
        rate,
        otlp_endpoint,
    )
    .await
}

/// Produces the first `count` of `events` at `rate` per second (0: as fast as possible).
pub async fn produce_events(
    stack: &TestStack,
    events: impl Iterator<Item = UserEvent>,
    count: u64,
    rate: f64,
    otlp_endpoint: Option<&str>,
) -> u64 {
    let provider = freshet_telemetry::tracer_provider("freshet-producer", otlp_endpoint).unwrap();
    let producer = EventProducer::new(
        ProducerConfig {
            brokers: stack.brokers(),
            registry: stack.registry(),
            topic: TOPIC.into(),
            schema_version: SchemaVersion::V2,
            auto_register: true,
        },
        ProducerMetrics::new(),
        opentelemetry::trace::TracerProvider::tracer(&provider, "test"),
    )
    .unwrap();
    let events = events.map(Ok::<_, std::convert::Infallible>);
    let options = RunOptions {
        rate,
        count: Some(count),
        duration: None,
    };
    let summary = run(&producer, events, &options, std::future::pending()).await;
    assert_eq!(summary.delivered, count);
    drop(producer);
    provider.shutdown().expect("spans flushed");
    summary.delivered
}

/// Every record of a topic, per partition in offset order, as (offset, key, payload).
pub fn read_topic(stack: &TestStack, topic: &str, partitions: i32) -> Vec<Vec<RawRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", "test-reader")
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.push(high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<Vec<RawRecord>> = vec![Vec::new(); partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(120);
    // Transactional topics hold commit markers that take offsets but are never delivered,
    // so the end is reached when the consumer's position is at the high watermark.
    let done = |consumer: &BaseConsumer| {
        let position = consumer.position().unwrap();
        (0..partitions).all(|p| {
            ends[p as usize] == 0
                || matches!(position.find_partition(topic, p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= ends[p as usize])
        })
    };
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out[m.partition() as usize].push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            _ if done(&consumer) => break,
            _ => assert!(Instant::now() < deadline, "reading {topic} timed out"),
        }
    }
    out
}

/// The input as the processor sees it: per partition, in order.
pub async fn input_events(stack: &TestStack) -> Vec<Vec<UserEvent>> {
    input_events_of(stack, PARTITIONS).await
}

/// [`input_events`] of an input topic of `partitions` partitions.
pub async fn input_events_of(stack: &TestStack, partitions: i32) -> Vec<Vec<UserEvent>> {
    let decoder = WireDecoder::new(&stack.registry(), Schema::parse_str(SCHEMA_V2).unwrap());
    let mut out = Vec::new();
    for partition in read_topic(stack, TOPIC, partitions) {
        let mut events = Vec::new();
        for (_, _, payload) in partition {
            let value = decoder.decode(Some(&payload)).await.unwrap().value;
            events.push(apache_avro::from_value::<UserEvent>(&value).unwrap());
        }
        out.push(events);
    }
    out
}

fn floor_to(t: i64, size: i64) -> i64 {
    t - t.rem_euclid(size)
}

fn field(e: &UserEvent, name: &str) -> Value {
    match name {
        "user_id" => Value::Long(e.user_id),
        "action_type" => Value::String(e.action_type.clone()),
        "item_id" => Value::Long(e.item_id),
        "amount" => e.amount.map(Value::Double).unwrap_or(Value::Null),
        "timestamp" => Value::Long(e.timestamp),
        "session_id" => e
            .session_id
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
        other => panic!("unknown field {other}"),
    }
}

/// An independent oracle: the feature values each entity should have once every input
/// event is processed, computed directly from the events by brute force.
pub fn oracle(
    defs: &Definitions,
    partitions: &[Vec<UserEvent>],
) -> BTreeMap<(String, String), BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for events in partitions {
        for view in &defs.views {
            let delay = defs.source_of(view).watermark_delay.as_millis();
            // Lateness is decided on arrival, against the partition's watermark then.
            let mut clock: Option<i64> = None;
            let mut accepted: HashMap<String, Vec<&UserEvent>> = HashMap::new();
            for e in events {
                if clock.is_none_or(|c| e.timestamp > c) {
                    clock = Some(e.timestamp);
                }
                if e.timestamp >= clock.unwrap() - delay {
                    accepted.entry(e.user_id.to_string()).or_default().push(e);
                }
            }
            let Some(clock) = clock else { continue };
            let watermark = clock - delay;
            for (entity, evs) in &accepted {
                let mut values = BTreeMap::new();
                for window in view.windows() {
                    let in_window: Vec<&UserEvent> = match window {
                        Window::Tumbling { size } => {
                            let end = floor_to(watermark, size.0);
                            evs.iter()
                                .copied()
                                .filter(|e| e.timestamp >= end - size.0 && e.timestamp < end)
                                .collect()
                        }
                        Window::Sliding { size, step } => {
                            let end = floor_to(clock, step.0) + step.0;
                            evs.iter()
                                .copied()
                                .filter(|e| e.timestamp >= end - size.0 && e.timestamp < end)
                                .collect()
                        }
                        Window::Session { gap } => {
                            let mut sorted: Vec<&UserEvent> = evs.clone();
                            sorted.sort_by_key(|e| e.timestamp);
                            let mut sessions: Vec<(i64, i64)> = Vec::new();
                            for e in &sorted {
                                match sessions.last_mut() {
                                    Some((_, end)) if e.timestamp <= *end => {
                                        *end = (*end).max(e.timestamp + gap.0)
                                    }
                                    _ => sessions.push((e.timestamp, e.timestamp + gap.0)),
                                }
                            }
                            // The latest closed one, until the view's ttl has passed
                            // since its end.
                            let served = sessions
                                .iter()
                                .rev()
                                .find(|(_, end)| *end < watermark)
                                .filter(|(_, end)| watermark - end <= view.ttl.as_millis());
                            match served {
                                Some(&(start, end)) => evs
                                    .iter()
                                    .copied()
                                    .filter(|e| e.timestamp >= start && e.timestamp < end)
                                    .collect(),
                                None => Vec::new(),
                            }
                        }
                    };
                    for f in view.features.iter().filter(|f| f.window == window) {
                        let value = if in_window.is_empty() {
                            f.default.clone()
                        } else {
                            let matching: Vec<&UserEvent> = in_window
                                .iter()
                                .copied()
                                .filter(|e| {
                                    f.filter.as_ref().is_none_or(|flt| {
                                        let fields: HashMap<String, Value> = [
                                            "action_type",
                                            "amount",
                                            "item_id",
                                            "user_id",
                                            "timestamp",
                                            "session_id",
                                        ]
                                        .iter()
                                        .map(|n| (n.to_string(), field(e, n)))
                                        .collect();
                                        flt.matches(|k| fields.get(k))
                                    })
                                })
                                .collect();
                            let vals: Vec<Value> = match &f.field {
                                None => matching.iter().map(|_| Value::Long(1)).collect(),
                                Some(name) => matching
                                    .iter()
                                    .map(|e| field(e, name))
                                    .filter(|v| !v.is_null())
                                    .collect(),
                            };
                            let result = match f.aggregation {
                                Aggregation::Count => Value::Long(vals.len() as i64),
                                Aggregation::Sum => {
                                    Value::Double(vals.iter().filter_map(Value::as_f64).sum())
                                }
                                Aggregation::Mean if vals.is_empty() => Value::Null,
                                Aggregation::Mean => Value::Double(
                                    vals.iter().filter_map(Value::as_f64).sum::<f64>()
                                        / vals.len() as f64,
                                ),
                                Aggregation::ApproxCountDistinct => {
                                    let set: std::collections::BTreeSet<String> =
                                        vals.iter().map(Value::to_json_string).collect();
                                    Value::Long(set.len() as i64)
                                }
                                other => panic!("the oracle does not cover {other}"),
                            };
                            if result.is_null() {
                                f.default.clone()
                            } else {
                                result
                            }
                        };
                        values.insert(f.name.clone(), value);
                    }
                }
                out.insert((view.name.clone(), entity.clone()), values);
            }
        }
    }
    out
}

/// The text of a Prometheus /metrics endpoint on localhost.
pub fn scrape_metrics(port: u16) -> String {
    freshet_testkit::metrics::scrape(&format!("127.0.0.1:{port}"))
}

/// The value of one series (name with labels, as printed) in a scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    freshet_testkit::metrics::value(scrape, series)
}

/// Values as Redis holds them, for every (view, entity) in `keys`; missing hashes read as
/// `None`.
pub async fn redis_values(
    url: &str,
    keys: impl Iterator<Item = (String, String)>,
) -> BTreeMap<(String, String), Option<(u64, BTreeMap<String, Value>)>> {
    let mut conn = freshet_store::StoreTarget::parse(url, None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let keys: Vec<(String, String)> = keys.collect();
    let hash_keys: Vec<String> = keys
        .iter()
        .map(|(_, entity)| freshet_core::store_layout::entity_key("user", entity))
        .collect();
    // A machine busy with several processors and brokers can answer a large read later
    // than the connection's response timeout: read again rather than fail the test.
    let mut attempts = 0;
    let hashes = loop {
        match conn.read_hashes(&hash_keys).await {
            Ok(hashes) => break hashes,
            Err(e) if attempts < 10 => {
                attempts += 1;
                eprintln!(
                    "reading {} hashes failed ({e}); reading again",
                    hash_keys.len()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cannot read the values from Redis: {e}"),
        }
    };
    let mut out = BTreeMap::new();
    for ((view, entity), hash) in keys.into_iter().zip(&hashes) {
        let stored = freshet_core::store_layout::StoredValues::decode(&view, hash.fields())
            .unwrap()
            .map(|s| (s.version, s.values));
        out.insert((view, entity), stored);
    }
    out
}

pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Long(x), Value::Double(y)) | (Value::Double(y), Value::Long(x)) => {
            (*x as f64 - y).abs() < 1e-9
        }
        _ => a == b,
    }
}

/// The differences between Redis and the oracle, as readable lines (empty when equal).
pub fn differences(
    oracle: &BTreeMap<(String, String), BTreeMap<String, Value>>,
    redis: &StoredByKey,
    defs: &Definitions,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (key, expected) in oracle {
        let got = redis
            .get(key)
            .cloned()
            .flatten()
            .map(|(_, v)| v)
            .unwrap_or_else(|| {
                let view = defs.view(&key.0).unwrap();
                view.features
                    .iter()
                    .map(|f| (f.name.clone(), f.default.clone()))
                    .collect()
            });
        for (name, value) in expected {
            let actual = got.get(name).cloned().unwrap_or(Value::Null);
            if !close(value, &actual) {
                diffs.push(format!(
                    "{}/{} {name}: expected {value}, Redis has {actual}",
                    key.0, key.1
                ));
            }
        }
    }
    diffs
}

/// Waits until Redis equals the oracle; returns the remaining differences on timeout.
pub async fn wait_for_oracle(
    url: &str,
    oracle: &BTreeMap<(String, String), BTreeMap<String, Value>>,
    defs: &Definitions,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let redis = redis_values(url, oracle.keys().cloned()).await;
        let diffs = differences(oracle, &redis, defs);
        if diffs.is_empty() || Instant::now() > deadline {
            return diffs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A record of an output topic.
pub struct PublishedRecord {
    /// (view, entity, version)
    pub key: (String, String, u64),
    pub event_time: i64,
    /// Each feature's value as JSON text.
    pub values: BTreeMap<String, String>,
}

/// Every record on an output topic, in each partition's order.
pub async fn published(stack: &TestStack, topic: &str, partitions: i32) -> Vec<PublishedRecord> {
    let decoder = WireDecoder::new(
        &stack.registry(),
        Schema::parse_str(freshet_processor::delivery::FEATURE_UPDATE_SCHEMA).unwrap(),
    );
    let mut out = Vec::new();
    for partition in read_topic(stack, topic, partitions) {
        for (_, _, payload) in partition {
            let value = decoder.decode(Some(&payload)).await.unwrap().value;
            let apache_avro::types::Value::Record(fields) = value else {
                panic!()
            };
            let mut view = String::new();
            let mut entity = String::new();
            let mut version = 0;
            let mut event_time = i64::MIN;
            let mut values = BTreeMap::new();
            for (name, v) in fields {
                match (name.as_str(), v) {
                    ("view", apache_avro::types::Value::String(s)) => view = s,
                    ("entity", apache_avro::types::Value::String(s)) => entity = s,
                    ("version", apache_avro::types::Value::Long(n)) => version = n as u64,
                    ("event_time", apache_avro::types::Value::Long(n)) => event_time = n,
                    ("values", apache_avro::types::Value::Map(m)) => {
                        for (k, v) in m {
                            if let apache_avro::types::Value::String(s) = v {
                                values.insert(k, s);
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push(PublishedRecord {
                key: (view, entity, version),
                event_time,
                values,
            });
        }
    }
    out
}
