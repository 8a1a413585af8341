//! The definitions loader against the shipped `features/` folder and against folders with
//! every kind of mistake a user can make.

use freshet_core::definitions::{load_dir, Aggregation, LoadError};
use freshet_core::{Value, ValueType, Window};
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features")
}

const SCHEMA: &str = include_str!("../../../features/schemas/user_event.v2.avsc");

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/user_event.avsc"), SCHEMA).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const SOURCE: &str = r#"
[[source]]
name = "user_events"
schema = "schemas/user_event.avsc"
event_time_field = "timestamp"
entity_key_field = "user_id"
"#;

fn errors(dir: &tempfile::TempDir) -> Vec<String> {
    match load_dir(dir.path()) {
        Err(LoadError::Invalid(diags)) => diags
            .iter()
            .map(|d| {
                let name = d.file.file_name().unwrap().to_string_lossy().to_string();
                format!("{name}:{}: {}: {}", d.line, d.field, d.message)
            })
            .collect(),
        Ok(_) => panic!("expected validation errors"),
        Err(other) => panic!("expected validation errors, got {other}"),
    }
}

#[test]
fn shipped_definitions_load_with_the_promised_views() {
    let defs = load_dir(&shipped()).expect("shipped definitions are valid");
    assert_eq!(
        defs.view_names(),
        ["user_click_stats", "user_purchase_stats"]
    );
    let source = defs.source("user_events").unwrap();
    assert_eq!(source.subject, "user_events-value");
    assert_eq!(source.watermark_delay.0, 5_000);
    assert_eq!(source.idle_timeout, None, "off unless asked for");

    let clicks = defs.view("user_click_stats").unwrap();
    let c1m = clicks.feature("click_count_1m").unwrap();
    assert_eq!(c1m.aggregation, Aggregation::Count);
    assert_eq!(c1m.default, Value::Long(0));
    assert_eq!(
        c1m.filter.as_ref().unwrap().to_string(),
        r#"action_type == "click""#
    );
    assert!(matches!(
        clicks.feature("click_count_10m").unwrap().window,
        Window::Sliding { size, step } if size.0 == 600_000 && step.0 == 10_000
    ));

    let purchases = defs.view("user_purchase_stats").unwrap();
    let sum = purchases.feature("purchase_amount_sum_1h").unwrap();
    assert_eq!(sum.value_type, ValueType::Double);
    assert_eq!(sum.default, Value::Double(0.0));
    assert_eq!(
        purchases.feature("avg_purchase_amount_1h").unwrap().default,
        Value::Null
    );
    assert_eq!(purchases.windows().len(), 3, "5m, 1h and session windows");
}

#[test]
fn every_mistake_is_reported_with_file_line_and_field() {
    let view = r#"
[view]
name = "stats"
entity = "user"
source = "user_event"
ttl = "1h"
description = "d"

[[feature]]
name = "clicks"
description = "d"
aggregation = "count"
window = { type = "tumbling", size = "1m" }
"#;
    let features = format!(
        "{SOURCE}{}",
        r#"
[view]
name = "bad"
entity = "user"
source = "user_events"
ttl = "5 minutes"
description = "d"

[[feature]]
name = "total"
description = "sum of a string"
aggregation = "sum"
field = "action_type"
window = { type = "tumbling", size = "1m" }

[[feature]]
name = "total"
description = "duplicate name"
aggregation = "count"
window = { type = "sliding", size = "10m", step = "20m" }

[[feature]]
name = "ghost"
description = "unknown field"
aggregation = "max"
field = "price"
window = { type = "session", gap = "30m" }

[[feature]]
name = "avg"
description = "unknown aggregation and bad filter"
aggregation = "avg"
field = "amount"
filter = "action_type = 'click'"
window = { type = "tumbling", size = "1m" }
colour = "blue"
"#
    );
    let dir = folder(&[("a_view.toml", view), ("b_features.toml", &features)]);
    let errs = errors(&dir);
    let expect = [
        (
            "a_view.toml:5: view \"stats\" > source",
            "unknown source `user_event`; did you mean `user_events`?",
        ),
        (
            "b_features.toml:12: view \"bad\" > ttl",
            "invalid duration \"5 minutes\"",
        ),
        (
            "b_features.toml:19: feature \"total\" > field",
            "`sum` needs a numeric field",
        ),
        (
            "b_features.toml:23: feature \"total\" > name",
            "duplicate feature name `total`",
        ),
        (
            "b_features.toml:26: feature \"total\" > window > step",
            "step 20m is larger than the window size 10m",
        ),
        (
            "b_features.toml:32: feature \"ghost\" > field",
            "field `price` is not in the source schema",
        ),
        (
            "b_features.toml:38: feature \"avg\" > aggregation",
            "unknown aggregation `avg`; did you mean `mean`?",
        ),
        (
            "b_features.toml:40: feature \"avg\" > filter",
            "`=` is not an operator; use `==`",
        ),
        (
            "b_features.toml:42: feature \"avg\" > colour",
            "unknown key `colour`",
        ),
    ];
    for (location, message) in expect {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(location) && e.contains(message)),
            "missing `{location}: {message}` in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(
        errs.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        errs.join("\n")
    );
}

#[test]
fn duplicate_views_and_sources_point_at_the_first_definition() {
    let view = r#"
[view]
name = "stats"
entity = "user"
source = "user_events"
ttl = "1h"
description = "d"

[[feature]]
name = "clicks"
description = "d"
aggregation = "count"
window = { type = "tumbling", size = "1m" }
"#;
    let dir = folder(&[
        ("a.toml", &format!("{SOURCE}{view}")),
        ("b.toml", &format!("{SOURCE}{view}")),
    ]);
    let errs = errors(&dir);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("b.toml:3: source \"user_events\" > name: duplicate source name"));
    assert!(errs[0].contains("a.toml:3"), "{}", errs[0]);
    assert!(
        errs[1].contains("duplicate view name `stats`"),
        "{}",
        errs[1]
    );
}

#[test]
fn source_mistakes_are_reported() {
    let source = r#"
[[source]]
name = "Events"
schema = "schemas/missing.avsc"
event_time_field = "timestamp"
format = "json"
watermark_delay = "5"
idle_timeout = "0s"
"#;
    let source2 = r#"
[[source]]
name = "ok_name"
schema = "schemas/user_event.avsc"
event_time_field = "amount"
entity_key_field = "user"
idle_timeout = "soon"
"#;
    let dir = folder(&[("s.toml", source), ("t.toml", source2)]);
    let errs = errors(&dir);
    let expect = [
        (
            "s.toml:2: source #1 > entity_key_field",
            "missing required key",
        ),
        ("s.toml:3: source #1 > name", "`Events` is not a valid name"),
        ("s.toml:4: source #1 > schema", "cannot read schema file"),
        ("s.toml:6: source #1 > format", "unsupported format `json`"),
        (
            "s.toml:7: source #1 > watermark_delay",
            "the unit is missing",
        ),
        (
            "s.toml:8: source #1 > idle_timeout",
            "idle_timeout must be longer than zero",
        ),
        (
            "t.toml:7: source \"ok_name\" > idle_timeout",
            "does not start with a number",
        ),
        (
            "t.toml:5: source \"ok_name\" > event_time_field",
            "must be a non-null long or int",
        ),
        (
            "t.toml:6: source \"ok_name\" > entity_key_field",
            "did you mean `user_id`?",
        ),
    ];
    for (location, message) in expect {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(location) && e.contains(message)),
            "missing `{location}: {message}` in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), expect.len(), "{}", errs.join("\n"));
}

#[test]
fn toml_syntax_errors_are_located_and_other_files_still_checked() {
    let dir = folder(&[
        ("a.toml", "[view\nname = 1"),
        ("b.toml", "[[feature]]\nname = \"x\"\n"),
    ]);
    let errs = errors(&dir);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("a.toml:1: TOML syntax"), "{}", errs[0]);
    assert!(errs[1].contains("need a `[view]` table"), "{}", errs[1]);
}

#[test]
fn window_type_and_default_type_mistakes_say_what_is_valid() {
    let view = r#"
[view]
name = "v"
entity = "user"
source = "user_events"
ttl = "1h"
description = "d"

[[feature]]
name = "a"
description = "d"
aggregation = "count"
window = { type = "hopping", size = "1m" }

[[feature]]
name = "b"
description = "d"
aggregation = "count"
window = { type = "sliding", size = "10m", step = "3m" }
default = "zero"

[[feature]]
name = "c"
description = "d"
aggregation = "last"
field = "action_type"
window = "1m"
"#;
    let dir = folder(&[("v.toml", &format!("{SOURCE}{view}"))]);
    let errs = errors(&dir);
    let expect = [
        (
            "v.toml:19: feature \"a\" > window > type",
            "did you mean `sliding`?",
        ),
        (
            "v.toml:25: feature \"b\" > window > step",
            "not a whole multiple of the step 3m",
        ),
        (
            "v.toml:26: feature \"b\" > default",
            "default \"zero\" does not fit the feature's type long",
        ),
        (
            "v.toml:33: feature \"c\" > window",
            "expected a table such as",
        ),
    ];
    for (location, message) in expect {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(location) && e.contains(message)),
            "missing `{location}: {message}` in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), expect.len(), "{}", errs.join("\n"));
}

#[test]
fn a_missing_or_empty_folder_is_a_clear_error() {
    let err = load_dir(Path::new("/nonexistent/features")).unwrap_err();
    assert!(err
        .to_string()
        .contains("cannot read definitions at /nonexistent/features"));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(load_dir(empty.path()), Err(LoadError::Empty(_))));
}

#[test]
fn a_source_may_let_quiet_partitions_move_on_after_an_idle_timeout() {
    let dir = folder(&[("s.toml", &format!("{SOURCE}idle_timeout = \"30s\"\n"))]);
    let defs = load_dir(dir.path()).expect("valid");
    let source = defs.source("user_events").unwrap();
    assert_eq!(source.idle_timeout.map(|d| d.as_millis()), Some(30_000));
}
