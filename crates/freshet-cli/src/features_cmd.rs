//! `freshet features list`, `freshet features validate` and `freshet features export-feast`.

use anyhow::Result;
use clap::Subcommand;
use freshet_core::definitions::{load_dir, Definitions, Feature, LoadError};
use freshet_core::{Value, Window};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FeaturesCommand {
    /// Print every feature view and its features, as a tree (or JSON with --json).
    List {
        /// Print JSON for machines instead of the tree.
        #[arg(long)]
        json: bool,
    },
    /// Check the definitions; print every problem and exit non-zero if there are any.
    Validate {
        /// The folder to check (default: --features-dir).
        path: Option<PathBuf>,
    },
    /// Write a Feast feature repository for these definitions (entities, feature views with
    /// their fields and TTLs, and a feature_store.yaml reading online values from the
    /// serving API), so `feast apply` works there and Feast's SDK reads Freshet's features.
    ExportFeast {
        /// The folder to write (made if missing; other files in it are left alone).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// The serving API Feast's SDK asks for values.
        #[arg(
            long,
            env = "FRESHET_SERVING_URL",
            default_value = "http://localhost:8000"
        )]
        serving_url: String,
        /// Feast's project name.
        #[arg(long, default_value = "freshet")]
        project: String,
    },
}

pub fn run(cmd: FeaturesCommand, features_dir: &Path) -> Result<ExitCode> {
    match cmd {
        FeaturesCommand::List { json } => {
            let defs = load(features_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json_views(&defs))?);
            } else {
                print!("{}", tree(&defs));
            }
            Ok(ExitCode::SUCCESS)
        }
        FeaturesCommand::Validate { path } => {
            let dir = path.as_deref().unwrap_or(features_dir);
            match load_dir(dir) {
                Ok(defs) => {
                    let features: usize = defs.views.iter().map(|v| v.features.len()).sum();
                    println!(
                        "{}: {} source(s), {} view(s), {features} feature(s): all valid",
                        dir.display(),
                        defs.sources.len(),
                        defs.views.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(LoadError::Invalid(diags)) => {
                    for d in &diags {
                        eprintln!("{d}");
                    }
                    eprintln!("error: {} problem(s) in {}", diags.len(), dir.display());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        FeaturesCommand::ExportFeast {
            out,
            serving_url,
            project,
        } => {
            let defs = load(features_dir)?;
            let options = freshet_feast::ExportOptions {
                project,
                serving_url,
            };
            let written = freshet_feast::write_repository(&defs, &options, &out)?;
            for path in &written {
                println!("wrote {}", path.display());
            }
            let features: usize = defs.views.iter().map(|v| v.features.len()).sum();
            println!(
                "a Feast repository of {} view(s) and {features} feature(s), read from {}; next: cd {} && feast apply",
                defs.views.len(),
                options.serving_url,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads definitions; on validation errors prints each one and fails with a summary.
pub fn load(dir: &Path) -> Result<Definitions> {
    match load_dir(dir) {
        Ok(defs) => Ok(defs),
        Err(LoadError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{d}");
            }
            anyhow::bail!(
                "{} problem(s) in {}; fix them (see `freshet features validate`)",
                diags.len(),
                dir.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn describe(f: &Feature) -> String {
    let mut text = match &f.field {
        Some(field) => format!("{}({field})", f.aggregation),
        None => f.aggregation.to_string(),
    };
    if let Some(filter) = &f.filter {
        text.push_str(&format!(" where {filter}"));
    }
    text.push_str(&format!(
        ", {}, {}, default {}",
        f.window, f.value_type, f.default
    ));
    text
}

fn tree(defs: &Definitions) -> String {
    let mut out = String::new();
    for (i, view) in defs.views.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let source = defs.source_of(view);
        out.push_str(&format!(
            "{}  (entity: {}, source: {} from topic {}, ttl: {})\n",
            view.name, view.entity, source.name, source.topic, view.ttl
        ));
        out.push_str(&format!("│   {}\n", view.description));
        for (j, f) in view.features.iter().enumerate() {
            let last = j + 1 == view.features.len();
            let (branch, rail) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            out.push_str(&format!("{branch}{}: {}\n", f.name, describe(f)));
            out.push_str(&format!("{rail}    {}\n", f.description));
        }
    }
    out
}

#[derive(Serialize)]
struct JsonView<'a> {
    name: &'a str,
    entity: &'a str,
    source: &'a str,
    topic: &'a str,
    ttl_ms: i64,
    description: &'a str,
    file: String,
    features: Vec<JsonFeature<'a>>,
}

#[derive(Serialize)]
struct JsonFeature<'a> {
    name: &'a str,
    description: &'a str,
    aggregation: &'a str,
    field: Option<&'a str>,
    filter: Option<String>,
    window: JsonWindow,
    value_type: &'a str,
    default: &'a Value,
}

#[derive(Serialize)]
struct JsonWindow {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap_ms: Option<i64>,
}

fn json_window(w: &Window) -> JsonWindow {
    let none = JsonWindow {
        kind: "",
        size_ms: None,
        step_ms: None,
        gap_ms: None,
    };
    match *w {
        Window::Tumbling { size } => JsonWindow {
            kind: "tumbling",
            size_ms: Some(size.0),
            ..none
        },
        Window::Sliding { size, step } => JsonWindow {
            kind: "sliding",
            size_ms: Some(size.0),
            step_ms: Some(step.0),
            ..none
        },
        Window::Session { gap } => JsonWindow {
            kind: "session",
            gap_ms: Some(gap.0),
            ..none
        },
    }
}

fn json_views(defs: &Definitions) -> Vec<JsonView<'_>> {
    defs.views
        .iter()
        .map(|v| JsonView {
            name: &v.name,
            entity: &v.entity,
            source: &v.source,
            topic: &defs.source_of(v).topic,
            ttl_ms: v.ttl.0,
            description: &v.description,
            file: v.file.display().to_string(),
            features: v
                .features
                .iter()
                .map(|f| JsonFeature {
                    name: &f.name,
                    description: &f.description,
                    aggregation: f.aggregation.name(),
                    field: f.field.as_deref(),
                    filter: f.filter.as_ref().map(ToString::to_string),
                    window: json_window(&f.window),
                    value_type: f.value_type.name(),
                    default: &f.default,
                })
                .collect(),
        })
        .collect()
}
