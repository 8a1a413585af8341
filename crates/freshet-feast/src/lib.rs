//! A Feast feature repository written from Freshet's definitions, so that a Feast user
//! reads Freshet's features with Feast's own SDK: `feast apply` in the written folder,
//! then `FeatureStore.get_online_features` asks Freshet's serving API, which speaks
//! Feast's feature-server protocol (`POST /get-online-features`).
//!
//! What maps to what (documented in `docs/feast.md`):
//! - each entity named by a view becomes a Feast `Entity` whose join key is the view's
//!   source's entity key field (`user` -> `user_id`), typed from the source's schema;
//! - each source becomes a `FileSource` (Feast requires one per view; Freshet serves the
//!   online values, and training sets come from `freshet training-set`, so Feast never
//!   reads it);
//! - each view becomes a `FeatureView` with its TTL, description and typed fields
//!   (`Int64`, `Float64`, `String`, `Bool`), online;
//! - `feature_store.yaml` names the project and points `online_store: type: remote` at
//!   the serving API.
//!
//! Pure string building over validated definitions; [`write_repository`] writes it.

use freshet_core::definitions::{Definitions, FeatureView, Source};
use freshet_core::ValueType;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What the repository points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Feast's project name: letters, digits and underscores.
    pub project: String,
    /// The serving API's base URL, e.g. `http://localhost:8000`.
    pub serving_url: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            project: "freshet".into(),
            serving_url: "http://localhost:8000".into(),
        }
    }
}

/// The repository's files, by name within its folder.
pub const CONFIG_FILE: &str = "feature_store.yaml";
pub const DEFINITIONS_FILE: &str = "freshet_features.py";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("`{0}` is not a valid Feast project name: use letters, digits and underscores, starting with a letter")]
    BadProject(String),
    #[error("`{0}` is not an http:// or https:// URL of the serving API")]
    BadServingUrl(String),
    /// One entity named by views of sources with different entity key fields.
    #[error("{0}; Feast gives an entity one join key, so name the entities differently")]
    JoinKeyConflict(String),
    #[error("the entity key `{field}` of source `{source_name}` is {kind}; Feast join keys exported from Freshet are strings or integers")]
    UnsupportedKey {
        field: String,
        source_name: String,
        kind: String,
    },
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        path: PathBuf,
        reason: std::io::Error,
    },
}

/// A Feast entity: its name, join key and whether the key is a string.
struct FeastEntity<'a> {
    name: &'a str,
    join_key: &'a str,
    source: &'a str,
    value_type: ValueType,
}

/// The repository's files and their contents.
pub fn repository(
    definitions: &Definitions,
    options: &ExportOptions,
) -> Result<Vec<(&'static str, String)>, ExportError> {
    let project_ok = options
        .project
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && options
            .project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !project_ok {
        return Err(ExportError::BadProject(options.project.clone()));
    }
    let url = options.serving_url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(ExportError::BadServingUrl(options.serving_url.clone()));
    }
    let entities = entities(definitions)?;
    Ok(vec![
        (CONFIG_FILE, config(&options.project, url, definitions)),
        (DEFINITIONS_FILE, python(definitions, &entities)),
    ])
}

/// Writes the repository's files into `dir` (made if missing; other files are left
/// alone), each through a temporary file renamed into place. Returns the paths written.
pub fn write_repository(
    definitions: &Definitions,
    options: &ExportOptions,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExportError> {
    let files = repository(definitions, options)?;
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |reason| ExportError::Write { path, reason }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).map_err(failed(&partial))?;
        std::fs::rename(&partial, &path).map_err(failed(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The entities the views name, in order of first use, each with one join key.
fn entities(definitions: &Definitions) -> Result<Vec<FeastEntity<'_>>, ExportError> {
    let mut entities: Vec<FeastEntity> = Vec::new();
    for view in &definitions.views {
        let source = definitions.source_of(view);
        let join_key = source.entity_key_field.as_str();
        if let Some(known) = entities.iter().find(|e| e.name == view.entity) {
            if known.join_key != join_key {
                return Err(ExportError::JoinKeyConflict(format!(
                    "entity `{}` has two join keys: `{}` (views of source `{}`) and `{join_key}` (view `{}` of source `{}`)",
                    view.entity, known.join_key, known.source, view.name, source.name
                )));
            }
            continue;
        }
        let value_type = key_type(source)?;
        entities.push(FeastEntity {
            name: &view.entity,
            join_key,
            source: &source.name,
            value_type,
        });
    }
    Ok(entities)
}

fn key_type(source: &Source) -> Result<ValueType, ExportError> {
    let field = source.schema.field(&source.entity_key_field);
    match field.and_then(|f| f.value_type()) {
        Some(t @ (ValueType::Int | ValueType::Long | ValueType::String)) => Ok(t),
        other => Err(ExportError::UnsupportedKey {
            field: source.entity_key_field.clone(),
            source_name: source.name.clone(),
            kind: other.map_or("not a scalar".to_string(), |t| format!("a {t}")),
        }),
    }
}

fn config(project: &str, serving_url: &str, definitions: &Definitions) -> String {
    format!(
        "# Written by `freshet features export-feast` from the Freshet definitions in
# {root}. Run `feast apply` here once (and again after the definitions change and
# are exported anew); Feast's SDK then reads feature values from Freshet's serving API.
project: {project}
provider: local
# Feast's registry: a local file `feast apply` writes.
registry: data/registry.db
# Feature values come from Freshet's serving API, which speaks Feast's feature-server
# protocol (POST /get-online-features).
online_store:
  type: remote
  path: {url}
entity_key_serialization_version: 3
",
        root = definitions.root.display(),
        url = py(serving_url),
    )
}

/// A Python (and YAML) string literal: JSON's escapes are valid in both.
fn py(text: &str) -> String {
    serde_json::to_string(text).expect("a string to JSON")
}

fn feast_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Boolean => "Bool",
        ValueType::Int | ValueType::Long => "Int64",
        ValueType::Float | ValueType::Double => "Float64",
        ValueType::String => "String",
    }
}

fn python(definitions: &Definitions, entities: &[FeastEntity]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\"\"\"Freshet's feature views as Feast objects.

Written by `freshet features export-feast` from the definitions in
{root}; edit those and export again rather than editing this file.
Feast reads the values online from Freshet's serving API (see feature_store.yaml).
\"\"\"

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String
",
        root = definitions.root.display()
    );
    for entity in entities {
        let value_type = match entity.value_type {
            ValueType::String => "STRING",
            _ => "INT64",
        };
        let _ = writeln!(
            out,
            "\n{entity}_entity = Entity(\n    name={name},\n    join_keys=[{key}],\n    value_type=ValueType.{value_type},\n    description={description},\n)",
            entity = entity.name,
            name = py(entity.name),
            key = py(entity.join_key),
            description = py(&format!(
                "Freshet entity `{}`, keyed by the `{}` field of its events.",
                entity.name, entity.join_key
            )),
        );
    }
    for source in &definitions.sources {
        if !definitions.views.iter().any(|v| v.source == source.name) {
            continue;
        }
        let _ = writeln!(
            out,
            "\n# Feast requires a batch source per view; it is never read: Freshet serves the\n# online values, and training sets come from `freshet training-set`.\n{source}_source = FileSource(\n    name={name},\n    path={path},\n    timestamp_field={time},\n    description={description},\n)",
            source = source.name,
            name = py(&source.name),
            path = py(&format!("data/{}.parquet", source.name)),
            time = py(&source.event_time_field),
            description = py(&format!("Freshet source `{}` (Kafka topic `{}`).", source.name, source.topic)),
        );
    }
    for view in &definitions.views {
        write_view(&mut out, definitions, entities, view);
    }
    out
}

fn write_view(
    out: &mut String,
    definitions: &Definitions,
    entities: &[FeastEntity],
    view: &FeatureView,
) {
    let source = definitions.source_of(view);
    let entity = entities
        .iter()
        .find(|e| e.name == view.entity)
        .expect("every view's entity is exported");
    let _ = writeln!(
        out,
        "\n{view}_view = FeatureView(\n    name={name},\n    entities=[{entity}_entity],\n    ttl=timedelta(milliseconds={ttl}),\n    schema=[\n        Field(name={key}, dtype={key_type}),",
        view = view.name,
        name = py(&view.name),
        entity = entity.name,
        ttl = view.ttl.0,
        key = py(entity.join_key),
        key_type = feast_type(entity.value_type),
    );
    for feature in &view.features {
        let _ = writeln!(
            out,
            "        Field(name={name}, dtype={dtype}, description={description}),",
            name = py(&feature.name),
            dtype = feast_type(feature.value_type),
            description = py(&feature.description),
        );
    }
    let _ = writeln!(
        out,
        "    ],\n    source={source}_source,\n    online=True,\n    description={description},\n    tags={{\"freshet.view\": {name}}},\n)",
        source = source.name,
        description = py(&view.description),
        name = py(&view.name),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Definitions {
        let dir = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        freshet_core::load_dir(&dir).expect("the shipped definitions")
    }

    #[test]
    fn the_shipped_views_become_one_entity_one_source_and_two_views() {
        let defs = shipped();
        let files = repository(&defs, &ExportOptions::default()).unwrap();
        let (name, config) = &files[0];
        assert_eq!(*name, CONFIG_FILE);
        assert!(config.contains("project: freshet\n"), "{config}");
        assert!(
            config.contains("online_store:\n  type: remote\n  path: \"http://localhost:8000\"\n"),
            "{config}"
        );
        let (name, python) = &files[1];
        assert_eq!(*name, DEFINITIONS_FILE);
        assert_eq!(python.matches("= Entity(").count(), 1, "{python}");
        assert!(python.contains(
            "user_entity = Entity(\n    name=\"user\",\n    join_keys=[\"user_id\"],\n    value_type=ValueType.INT64,"
        ));
        assert_eq!(python.matches("= FileSource(").count(), 1);
        assert_eq!(python.matches("= FeatureView(").count(), 2);
        assert!(python.contains("    ttl=timedelta(milliseconds=3600000),\n"));
        assert!(python.contains("    ttl=timedelta(milliseconds=86400000),\n"));
        assert!(python.contains("Field(name=\"click_count_1m\", dtype=Int64, "));
        assert!(python.contains("Field(name=\"avg_purchase_amount_1h\", dtype=Float64, "));
        assert!(python.contains("Field(name=\"distinct_items_viewed_10m\", dtype=Int64, "));
        // The join key is a field of every view, so Feast never infers it from the source.
        assert_eq!(
            python
                .matches("Field(name=\"user_id\", dtype=Int64)")
                .count(),
            2
        );
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let defs = shipped();
        for project in ["", "1st", "my-project", "a b"] {
            let options = ExportOptions {
                project: project.into(),
                ..ExportOptions::default()
            };
            let e = repository(&defs, &options).unwrap_err();
            assert!(
                matches!(e, ExportError::BadProject(ref p) if p == project),
                "{e}"
            );
        }
        for url in ["localhost:8000", "ftp://x", "http://a b"] {
            let options = ExportOptions {
                serving_url: url.into(),
                ..ExportOptions::default()
            };
            let e = repository(&defs, &options).unwrap_err();
            assert!(e.to_string().contains(url), "{e}");
        }
    }

    #[test]
    fn an_entity_with_two_join_keys_is_refused() {
        let mut defs = shipped();
        let mut other = defs.sources[0].clone();
        other.name = "other_events".into();
        other.entity_key_field = "item_id".into();
        defs.sources.push(other);
        defs.views[1].source = "other_events".into();
        let e = repository(&defs, &ExportOptions::default()).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "entity `user` has two join keys: `user_id` (views of source `user_events`) and `item_id`"
            ),
            "{e}"
        );
    }

    #[test]
    fn strings_are_escaped_for_python() {
        let mut defs = shipped();
        defs.views[0].description = "a \"quoted\" \\ line\nnext".into();
        let files = repository(&defs, &ExportOptions::default()).unwrap();
        assert!(files[1]
            .1
            .contains(r#"description="a \"quoted\" \\ line\nnext","#));
    }

    #[test]
    fn files_are_written_into_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("repo");
        let written = write_repository(&shipped(), &ExportOptions::default(), &target).unwrap();
        assert_eq!(
            written,
            vec![target.join(CONFIG_FILE), target.join(DEFINITIONS_FILE)]
        );
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no partial files are left: {names:?}");
    }
}
