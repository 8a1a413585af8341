//! Confluent's own Python client (confluent-kafka, the version `scripts/bootstrap.sh`
//! pins) against this registry: every public `SchemaRegistryClient` call a self-managed
//! registry serves, and its Avro serializer and deserializer, each asserting the answer's
//! content (`tests/confluent_client.py`).
//!
//! Needs `$FRESHET_TOOLS_DIR/venv` with confluent-kafka (bootstrap installs it). When it is
//! missing the test says so and passes, unless `FRESHET_REQUIRE_TOOLS=1` (set by the
//! project's test command), where that is a failure.

use freshet_testkit::Registry;
use std::path::{Path, PathBuf};
use std::process::Command;

fn client_python() -> Option<PathBuf> {
    let tools = freshet_testkit::tools_dir();
    let python = tools.join("venv/bin/python");
    let has_client = Command::new(&python)
        .args(["-c", "import confluent_kafka, fastavro"])
        .output()
        .is_ok_and(|o| o.status.success());
    has_client.then_some(python)
}

#[test]
fn every_call_of_confluents_python_client_works() {
    let Some(python) = client_python() else {
        let reason = "no Python with confluent-kafka found (run scripts/bootstrap.sh)";
        if std::env::var("FRESHET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED Confluent client check: {reason}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_client.py");
    let output = Command::new(python)
        .arg(script)
        .arg(registry.url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let passed = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" calls passed"))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n >= 50),
        "every call ran: {passed:?}\n{stdout}"
    );
}
