//! Flink for tests: PyPI's `apache-flink` (its planner and local mini-cluster), installed
//! by `scripts/bootstrap.sh --with-flink`, driven through `scripts/flink-sql.py`.

use freshet_core::Definitions;
use freshet_flink_sql::{compile_view, Connectors, FlinkOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs every view of `defs`, compiled to Flink SQL with file connectors, as one job on
/// Flink's mini-cluster over the JSON Lines `events`; returns the folder holding one
/// folder of rows per view and window (`{view}__{window slug}`, read with [`rows`]). The
/// scripts are written into `dir` too.
pub fn run_views(defs: &Definitions, python: &Path, events: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("flink-out");
    let options = FlinkOptions {
        connectors: Connectors::Files {
            events: events.display().to_string(),
            output_dir: out.display().to_string(),
        },
        ..FlinkOptions::default()
    };
    let scripts: Vec<PathBuf> = defs
        .views
        .iter()
        .map(|view| {
            let path = dir.join(format!("{}.sql", view.name));
            std::fs::write(&path, compile_view(defs, &view.name, &options).unwrap()).unwrap();
            path
        })
        .collect();
    flink_sql(python, "run", &scripts);
    out
}

/// The Python with `apache-flink`: `$FRESHET_FLINK_PYTHON`, else the tools folder's
/// `flink-venv`. `None` when there is none; a test then skips, unless
/// `FRESHET_REQUIRE_FLINK=1` (the project's test command sets it), where it panics.
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("FRESHET_FLINK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::tools_dir().join("flink-venv/bin/python"));
    if python.exists() {
        return Some(python);
    }
    let reason = format!(
        "no Python with apache-flink at {} (run scripts/bootstrap.sh --with-flink or set FRESHET_FLINK_PYTHON)",
        python.display()
    );
    if std::env::var("FRESHET_REQUIRE_FLINK").as_deref() == Ok("1") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// `scripts/flink-sql.py`, built in: a path known when this crate was compiled may be
/// gone when its tests run (cargo reuses the build for a clone of the same sources at
/// another path, and does not rebuild for `CARGO_MANIFEST_DIR`).
const FLINK_SQL_RUNNER: &str = include_str!("../../../scripts/flink-sql.py");

/// `scripts/flink-sql.py MODE SCRIPTS...` (`explain` or `run`): its standard output, or a
/// panic with Flink's error and the SQL.
pub fn flink_sql(python: &Path, mode: &str, scripts: &[PathBuf]) -> String {
    let output = Command::new(python)
        .arg("-c")
        .arg(FLINK_SQL_RUNNER)
        .arg(mode)
        .args(scripts)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    if !output.status.success() {
        let sql: Vec<String> = scripts
            .iter()
            .map(|s| std::fs::read_to_string(s).unwrap_or_default())
            .collect();
        panic!(
            "Flink failed to {mode} {scripts:?}:\n{}\n--- SQL ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            sql.join("\n")
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every JSON row Flink's file sinks wrote under `folder` (the `part-*` files; an
/// unfinished, hidden in-progress file is a failure).
pub fn rows(folder: &Path) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("Flink wrote no {}: {e}", folder.display()))
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("part-"),
            "{}: Flink left an unfinished file {name}",
            folder.display()
        );
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            rows.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: not a JSON row ({e}): {line}", path.display())),
            );
        }
    }
    rows
}
