//! The generated SQL must be accepted by Flink's own planner, not only look right.
//!
//! Needs a Python with `apache-flink` (and Java): see `freshet_testkit::flink`.

use freshet_core::load_dir;
use freshet_flink_sql::{compile_view, Connectors, FlinkOptions};
use freshet_testkit::flink;
use std::path::Path;

#[test]
fn flink_planner_accepts_the_sql_of_every_shipped_view() {
    let Some(python) = flink::python_or_skip("flink planner check") else {
        return;
    };
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..");
    let defs = load_dir(&root.join("features")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let options = FlinkOptions {
        connectors: Connectors::PlannerCheck,
        ..FlinkOptions::default()
    };
    for view in &defs.views {
        let sql = compile_view(&defs, &view.name, &options).unwrap();
        let path = out_dir.path().join(format!("{}.sql", view.name));
        std::fs::write(&path, &sql).unwrap();
        let stdout = flink::flink_sql(&python, "explain", &[path]);
        let n = view.windows().len();
        assert!(
            stdout.contains(&format!(
                "planned {n} inserts into {n} sinks; window aggregation: true"
            )),
            "{}: unexpected planner output: {stdout}",
            view.name
        );
    }
}
