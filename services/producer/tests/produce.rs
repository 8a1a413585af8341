//! The producer against a real broker and registry: what it sends, read back raw and
//! decoded through the registry, is exactly the events it meant to send.

use apache_avro::Schema;
use freshet_avro::WireDecoder;
use freshet_producer::event::{SchemaVersion, UserEvent, SCHEMA_V2};
use freshet_producer::metrics::ProducerMetrics;
use freshet_producer::produce::{run, EventProducer, ProducerConfig, RunOptions};
use freshet_producer::simulate::{SimConfig, Simulator};
use freshet_testkit::TestStack;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "user_events";
const PARTITIONS: i32 = 3;

struct RawRecord {
    key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

/// Reads every record of the topic from the beginning; fails unless exactly `expected`
/// arrive (waits a little after the last one to catch extras).
fn read_back(stack: &TestStack, expected: usize) -> Vec<RawRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", "read-back")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let traceparent = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "traceparent")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                records.push(RawRecord {
                    key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                    payload: m.payload().unwrap().to_vec(),
                    traceparent,
                });
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None if records.len() >= expected && quiet_since.elapsed() > Duration::from_secs(1) => {
                break
            }
            None => {}
        }
    }
    assert_eq!(records.len(), expected, "records in the topic");
    records
}

async fn decode_all(stack: &TestStack, records: &[RawRecord]) -> Vec<(String, UserEvent, u32)> {
    decode_with(&stack.registry(), records).await
}

async fn decode_with(
    registry: &freshet_avro::Registry,
    records: &[RawRecord],
) -> Vec<(String, UserEvent, u32)> {
    let decoder = WireDecoder::new(registry, Schema::parse_str(SCHEMA_V2).unwrap());
    let mut out = Vec::new();
    for r in records {
        let decoded = decoder
            .decode(Some(&r.payload))
            .await
            .expect("decodes through the registry");
        let event: UserEvent = apache_avro::from_value(&decoded.value).unwrap();
        out.push((r.key.clone(), event, decoded.writer_schema_id));
    }
    out
}

/// Events per key, in order: what Kafka guarantees and the comparison needs.
fn by_key(
    events: impl IntoIterator<Item = (String, UserEvent)>,
) -> BTreeMap<String, Vec<UserEvent>> {
    let mut map: BTreeMap<String, Vec<UserEvent>> = BTreeMap::new();
    for (k, e) in events {
        map.entry(k).or_default().push(e);
    }
    map
}

fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        start_ms: 1_700_000_000_000,
        events_per_second: 1_000.0,
        ..SimConfig::default()
    }
}

fn producer(stack: &TestStack, version: SchemaVersion) -> EventProducer {
    EventProducer::new(
        ProducerConfig {
            brokers: stack.brokers(),
            registry: stack.registry(),
            topic: TOPIC.into(),
            schema_version: version,
            auto_register: true,
        },
        ProducerMetrics::new(),
        opentelemetry::trace::TracerProvider::tracer(
            &freshet_telemetry::tracer_provider("producer-test", None).unwrap(),
            "producer-test",
        ),
    )
    .unwrap()
}

fn all(count: u64) -> RunOptions {
    RunOptions {
        rate: 0.0,
        count: Some(count),
        duration: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_events_read_back_decode_to_exactly_the_events_meant() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let p = producer(&stack, SchemaVersion::V2);
    let events = Simulator::new(sim_config(7))
        .unwrap()
        .map(Ok::<_, Infallible>);
    let summary = run(&p, events, &all(3_000), std::future::pending()).await;
    assert_eq!(
        (summary.sent, summary.delivered, summary.failed),
        (3_000, 3_000, 0)
    );
    assert_eq!(p.metrics().delivered.get(), 3_000);

    let records = read_back(&stack, 3_000);
    for r in &records {
        let tp = r
            .traceparent
            .as_deref()
            .expect("every record carries a traceparent");
        assert!(tp.len() == 55 && tp.starts_with("00-"), "{tp}");
    }
    let decoded = decode_all(&stack, &records).await;
    for (key, event, _) in &decoded {
        assert_eq!(key, &event.user_id.to_string(), "records are keyed by user");
    }
    let expected = Simulator::new(sim_config(7))
        .unwrap()
        .take(3_000)
        .map(|e| (e.user_id.to_string(), e));
    assert_eq!(
        by_key(decoded.into_iter().map(|(k, e, _)| (k, e))),
        by_key(expected)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_and_v2_records_both_decode_with_the_v2_reader_schema() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let planned: Vec<UserEvent> = Simulator::new(sim_config(1)).unwrap().take(1_000).collect();
    let (first, second) = planned.split_at(500);

    let v1 = producer(&stack, SchemaVersion::V1);
    let s1 = run(
        &v1,
        first.iter().cloned().map(Ok::<_, Infallible>),
        &RunOptions::default(),
        std::future::pending(),
    )
    .await;
    let v2 = producer(&stack, SchemaVersion::V2);
    let s2 = run(
        &v2,
        second.iter().cloned().map(Ok::<_, Infallible>),
        &RunOptions::default(),
        std::future::pending(),
    )
    .await;
    assert_eq!((s1.delivered, s2.delivered), (500, 500));

    let decoded = decode_all(&stack, &read_back(&stack, 1_000)).await;
    let writer_ids: std::collections::BTreeSet<u32> = decoded.iter().map(|d| d.2).collect();
    assert_eq!(writer_ids.len(), 2, "two writer schemas in the topic");
    let v1_id = *writer_ids.iter().next().unwrap();
    for (_, event, id) in &decoded {
        assert_eq!(
            event.session_id.is_none(),
            *id == v1_id,
            "v1 events read with a null session_id: {event:?}"
        );
    }
    let expected = first
        .iter()
        .map(|e| SchemaVersion::V1.project(e))
        .chain(second.iter().cloned())
        .map(|e| (e.user_id.to_string(), e));
    assert_eq!(
        by_key(decoded.into_iter().map(|(k, e, _)| (k, e))),
        by_key(expected)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_file_is_produced_line_for_line_and_bad_lines_are_skipped_and_counted() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"user_id": 1, "action_type": "click", "item_id": 10, "timestamp": 1000}"#, "\n",
            r#"{"user_id": 1, "action_type": "purchase", "item_id": 10, "amount": 19.99, "timestamp": 2000, "session_id": "a"}"#, "\n",
            r#"{"user_id": 2, "action_type": "view", "timestamp": 3000}"#, "\n",
            r#"{"user_id": 2, "action_type": "view", "item_id": 11, "timestamp": 4000}"#, "\n",
        ),
    )
    .unwrap();
    let p = producer(&stack, SchemaVersion::V2);
    let replay = freshet_producer::replay::Replay::open(&path).unwrap();
    let summary = run(&p, replay, &RunOptions::default(), std::future::pending()).await;
    assert_eq!((summary.delivered, summary.invalid_input), (3, 1));
    assert_eq!(p.metrics().invalid_input.get(), 1);

    let decoded = decode_all(&stack, &read_back(&stack, 3)).await;
    let got = by_key(decoded.into_iter().map(|(k, e, _)| (k, e)));
    assert_eq!(got["1"].len(), 2);
    assert_eq!(got["1"][1].amount, Some(19.99));
    assert_eq!(got["1"][1].session_id.as_deref(), Some("a"));
    assert_eq!(
        got["2"],
        [UserEvent {
            user_id: 2,
            action_type: "view".into(),
            item_id: 11,
            amount: None,
            timestamp: 4000,
            session_id: None
        }]
    );
}

fn producer_command(stack: &TestStack) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshet-producer"));
    cmd.args([
        "--brokers",
        &stack.brokers(),
        "--registry-url",
        &stack.registry_url(),
        "--metrics-listen",
        "off",
    ])
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env("RUST_LOG", "info");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_produces_a_seeded_run_that_can_be_repeated_exactly() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let out = producer_command(&stack)
        .args([
            "--count",
            "200",
            "--rate",
            "0",
            "--seed",
            "5",
            "--start-time",
            "1700000000000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = decode_all(&stack, &read_back(&stack, 200)).await;
    let expected = Simulator::new(SimConfig {
        seed: 5,
        ..sim_config(5)
    })
    .unwrap()
    .take(200)
    .map(|e| (e.user_id.to_string(), e));
    assert_eq!(
        by_key(decoded.into_iter().map(|(k, e, _)| (k, e))),
        by_key(expected)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_flushes_every_event_handed_over() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let child = producer_command(&stack)
        .args(["--rate", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let done = logs
        .lines()
        .find(|l| l.contains(" done "))
        .unwrap_or_else(|| panic!("no summary in:\n{logs}"));
    let field = |name: &str| -> usize {
        let start = done.find(&format!("{name}=")).unwrap() + name.len() + 1;
        done[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (sent, delivered) = (field("sent"), field("delivered"));
    assert!(sent > 500, "ran for about 3 s at 400/s: {done}");
    assert_eq!(sent, delivered, "{done}");
    read_back(&stack, delivered);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_registration_an_unregistered_subject_is_a_clear_error() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let out = producer_command(&stack)
        .args(["--count", "5", "--rate", "0", "--no-auto-register"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: 0 event(s) not delivered and 5 not encoded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("user_events-value"),
        "names the subject: {stderr}"
    );
}

/// `--kafka-option` and `FRESHET_KAFKA_*` reach librdkafka, which checks them at start: a
/// misspelt property or a bad value stops the producer with librdkafka's message naming
/// the property, and never echoes a value (it may be a password).
#[test]
fn kafka_options_reach_librdkafka_and_bad_ones_fail_at_start_naming_them() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshet-producer"));
        cmd.args([
            "--brokers",
            "127.0.0.1:1",
            "--metrics-listen",
            "off",
            "--count",
            "1",
        ])
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--kafka-option", "no.such.property=1"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("No such configuration property") && stderr.contains("no.such.property"),
        "{stderr}"
    );
    let (code, stderr) = run(
        &["--kafka-option", "sasl.password=hunter2-secret"],
        &[("FRESHET_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("security.protocol"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    let (code, stderr) = run(&["--kafka-option", "security.protocol"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not KEY=VALUE"), "{stderr}");
}

/// Against a registry that needs basic auth: without credentials, or with a wrong
/// password, the producer stops at start naming the refusal and the flag to set; a
/// read-only user cannot register the schema and is told so; a writer's credentials (from
/// the environment) register and deliver every event, which a reader's credentials decode.
/// No password is ever echoed.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_with_basic_auth_works_with_credentials_and_refuses_clearly_without() {
    use freshet_avro::{Registry, RegistryAuth};
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(
        &users,
        format!(
            "# test users\n{}\n{}\n",
            freshet_testkit::Registry::users_file_line("ci-writer", "write", "w-pass:7731"),
            freshet_testkit::Registry::users_file_line("ci-reader", "read", "r-pass-5512"),
        ),
    )
    .unwrap();
    let secured =
        freshet_testkit::Registry::start_with_users(dir.path().join("journal.jsonl"), &users);
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshet-producer"));
        cmd.args([
            "--brokers",
            &stack.brokers(),
            "--registry-url",
            &secured.url(),
        ])
        .args(["--metrics-listen", "off", "--rate", "0"])
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("FRESHET_REGISTRY_BASIC_AUTH")
        .env_remove("FRESHET_REGISTRY_BEARER_TOKEN")
        .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    for args in [
        vec!["--count", "5"],
        vec![
            "--count",
            "5",
            "--registry-basic-auth",
            "ci-writer:not-it-9071",
        ],
    ] {
        let (code, stderr) = run(&args, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!(
                "the schema registry at {} refused the request with HTTP 401",
                secured.url()
            )) && last.contains("--registry-basic-auth USER:PASSWORD"),
            "{stderr}"
        );
        assert!(!stderr.contains("not-it-9071"), "{stderr}");
    }

    let (code, stderr) = run(
        &[
            "--count",
            "5",
            "--registry-basic-auth",
            "ci-reader:r-pass-5512",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("403") && stderr.contains("a read-only user cannot register schemas"),
        "{stderr}"
    );
    assert!(!stderr.contains("r-pass-5512"), "{stderr}");

    let (code, stderr) = run(
        &["--count", "40", "--seed", "7"],
        &[("FRESHET_REGISTRY_BASIC_AUTH", "ci-writer:w-pass:7731")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("w-pass:7731"), "{stderr}");
    let records = read_back(&stack, 40);
    let reader = Registry::new(secured.url()).with_auth(RegistryAuth::Basic {
        username: "ci-reader".into(),
        password: "r-pass-5512".into(),
    });
    let decoded = decode_with(&reader, &records).await;
    assert_eq!(decoded.len(), 40);
    assert!(decoded
        .iter()
        .all(|(key, event, _)| *key == event.user_id.to_string()));

    // A reader without credentials is refused, as a retriable registry problem (never as
    // a bad record), with the hint.
    let anonymous = WireDecoder::new(
        &Registry::new(secured.url()),
        Schema::parse_str(SCHEMA_V2).unwrap(),
    );
    let error = anonymous
        .decode(Some(&records[0].payload))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("401"), "{error}");
}
