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

/// The Python with confluent-kafka, or `None` when the test is to be skipped.
fn python_or_skip() -> Option<PathBuf> {
    let python = client_python();
    if python.is_none() {
        let reason = "no Python with confluent-kafka found (run scripts/bootstrap.sh)";
        if std::env::var("FRESHET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED Confluent client check: {reason}");
    }
    python
}

/// Runs `script` (in `tests/`) with `args`; asserts it passed at least `calls` calls.
fn run_script(python: &Path, script: &str, args: &[String], calls: u32) {
    let script = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests")
    .join(script);
    let output = Command::new(python)
        .arg(script)
        .args(args)
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
        passed.is_some_and(|n| n >= calls),
        "every call ran: {passed:?}\n{stdout}"
    );
}

#[test]
fn every_call_of_confluents_python_client_works() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    run_script(&python, "confluent_client.py", &[registry.url()], 50);
}

/// Basic auth as Confluent's client sends it (`basic.auth.user.info`): 401 without
/// credentials or with a wrong password, reads for a read user (including the POSTs that
/// only read: lookup and compatibility tests), 403 with Confluent's 40301 when a read user
/// writes, the serializer and deserializer with each user's client; `/health` open.
#[test]
fn confluents_python_client_authenticates_with_basic_auth_and_roles_hold() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(
        &users,
        format!(
            "{}\n{}\n",
            Registry::users_file_line("ci", "write", "ci-pass:1"),
            Registry::users_file_line("dash", "read", "dash-pass")
        ),
    )
    .unwrap();
    let registry = Registry::start_with_users(dir.path().join("journal.jsonl"), &users);
    run_script(
        &python,
        "confluent_client_auth.py",
        &[
            registry.url(),
            "ci:ci-pass:1".into(),
            "dash:dash-pass".into(),
        ],
        15,
    );
}
