//! Golden files: the SQL compiled from the shipped definitions, checked in so any change to
//! the output is seen in review. Regenerate with `FRESHET_UPDATE_GOLDEN=1 cargo test`.

use freshet_core::load_dir;
use freshet_flink_sql::{compile_view, CompileError, FlinkOptions};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

fn shipped_definitions() -> freshet_core::Definitions {
    // Relative, as a user runs it from the repository root, so the header names
    // `features/...` and not a machine-specific path.
    std::env::set_current_dir(repo()).unwrap();
    load_dir(Path::new("features")).unwrap()
}

#[test]
fn compiled_sql_of_every_shipped_view_matches_its_golden_file() {
    let defs = shipped_definitions();
    for view in defs.view_names() {
        let sql = compile_view(&defs, view, &FlinkOptions::default()).unwrap();
        let golden = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join(format!("tests/golden/{view}.sql"));
        if std::env::var_os("FRESHET_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &sql).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with FRESHET_UPDATE_GOLDEN=1",
                golden.display()
            )
        });
        assert_eq!(
            sql,
            expected,
            "{view}: compiled SQL differs from {}",
            golden.display()
        );
    }
}

#[test]
fn one_windowed_query_per_distinct_window() {
    let defs = shipped_definitions();
    for view in &defs.views {
        let sql = compile_view(&defs, &view.name, &FlinkOptions::default()).unwrap();
        let inserts = sql.matches("INSERT INTO").count();
        assert_eq!(inserts, view.windows().len(), "{}", view.name);
        for window in view.windows() {
            let tvf = match window {
                freshet_core::Window::Tumbling { .. } => "TUMBLE(TABLE",
                freshet_core::Window::Sliding { .. } => "HOP(TABLE",
                freshet_core::Window::Session { .. } => "SESSION(TABLE",
            };
            assert!(sql.contains(tvf), "{}: no {tvf} for {window}", view.name);
        }
        // Every feature is computed exactly once.
        for f in &view.features {
            assert_eq!(
                sql.matches(&format!(" AS `{}`", f.name)).count(),
                1,
                "{}",
                f.name
            );
        }
    }
}

#[test]
fn unknown_view_names_the_defined_views() {
    let defs = shipped_definitions();
    let err = compile_view(&defs, "nope", &FlinkOptions::default()).unwrap_err();
    assert!(matches!(err, CompileError::UnknownView { .. }));
    assert_eq!(
        err.to_string(),
        "unknown view `nope`; defined views are: user_click_stats, user_purchase_stats"
    );
}
