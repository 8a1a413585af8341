//! What the model is told: the definition format, the source's fields, the views that
//! exist and the CLI. Everything comes from the definitions and the docs the users read,
//! so the copilot can never describe a format other than the one the validator checks.

use crate::error::CopilotError;
use freshet_core::definitions::{Aggregation, Definitions};
use freshet_core::schema::{EventSchema, FieldKind};
use std::fmt::Write as _;

/// The definition format as documented for users.
pub const FORMAT_GUIDE: &str = include_str!("../../../docs/feature-definitions.md");

/// The commands a user has, for the chat assistant.
pub const CLI_GUIDE: &str = "\
freshet features list [--json]            the views and their features
freshet features validate [PATH]          check definitions; every problem as file:line:column
freshet compile --target flink-sql --view NAME [-o FILE]   Flink SQL for a view
freshet up [--detach] / status / down     the local stack (broker, Redis, registry, processor, serving API, Prometheus, demo producer)
freshet backfill --view NAME --from TIME [--to TIME] [--source-file PATH] [--dry-run]   values for the past
freshet copilot generate \"DESCRIPTION\" [--source NAME] [--write]   a validated definition from words
freshet copilot recommend \"USE CASE\"      ranked feature ideas from the source's fields
freshet copilot chat                      this assistant
Serving API: GET /features/{entity_id}[?view=&features=], POST /features/batch {\"entity_ids\": [...]}, /docs, /metrics";

/// A source as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceContext {
    pub name: String,
    pub entity_key_field: String,
    pub event_time_field: String,
    /// (name, type, nullable) of every top-level field.
    pub fields: Vec<(String, String, bool)>,
}

impl SourceContext {
    fn from_schema(
        name: &str,
        entity_key_field: &str,
        event_time_field: &str,
        schema: &EventSchema,
    ) -> Self {
        Self {
            name: name.into(),
            entity_key_field: entity_key_field.into(),
            event_time_field: event_time_field.into(),
            fields: schema
                .fields
                .iter()
                .map(|f| {
                    let kind = match f.kind {
                        FieldKind::Scalar(t) => t.to_string(),
                        FieldKind::Other => "complex (not aggregatable)".into(),
                    };
                    (f.name.clone(), kind, f.nullable)
                })
                .collect(),
        }
    }

    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    pub fn describe(&self) -> String {
        let mut text = format!(
            "Source `{}` (entity key field `{}`, event time field `{}`) has these fields:\n",
            self.name, self.entity_key_field, self.event_time_field
        );
        for (name, kind, nullable) in &self.fields {
            let _ = writeln!(
                text,
                "- {name}: {kind}{}",
                if *nullable { ", may be null" } else { "" }
            );
        }
        text
    }
}

/// Where the source's schema comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaOrigin {
    /// The schema file the definitions name (the one validation checks against).
    Definitions,
    /// The latest version of the source's subject in this schema registry.
    Registry(freshet_avro::Registry),
}

/// The source named `name` (or the only source when `None`), its schema from `origin`.
pub async fn source_context(
    defs: &Definitions,
    name: Option<&str>,
    origin: &SchemaOrigin,
) -> Result<SourceContext, CopilotError> {
    let known = || {
        defs.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = match name {
        Some(name) => defs.source(name),
        None if defs.sources.len() == 1 => defs.sources.first(),
        None => {
            return Err(CopilotError::BadRequest(format!(
                "the definitions have several sources; name one (sources: {})",
                known()
            )))
        }
    }
    .ok_or_else(|| CopilotError::UnknownSource {
        name: name.unwrap_or_default().into(),
        known: known(),
    })?;
    let schema = match origin {
        SchemaOrigin::Definitions => source.schema.clone(),
        SchemaOrigin::Registry(url) => registry_schema(url, &source.subject).await?,
    };
    Ok(SourceContext::from_schema(
        &source.name,
        &source.entity_key_field,
        &source.event_time_field,
        &schema,
    ))
}

async fn registry_schema(
    registry: &freshet_avro::Registry,
    subject: &str,
) -> Result<EventSchema, CopilotError> {
    let error = |reason: String| CopilotError::Registry {
        url: registry.to_string(),
        subject: subject.into(),
        reason,
    };
    let text = registry
        .latest_schema(subject)
        .await
        .map_err(|e| error(e.to_string()))?;
    EventSchema::parse(&text).map_err(|e| error(e.to_string()))
}

/// The views that exist, so the model neither repeats nor collides with them.
pub fn describe_views(defs: &Definitions) -> String {
    let mut text = String::from("Existing feature views (do not reuse their names):\n");
    for view in &defs.views {
        let features: Vec<String> = view
            .features
            .iter()
            .map(|f| format!("{} ({})", f.name, f.aggregation))
            .collect();
        let _ = writeln!(
            text,
            "- {} on source {}: {}",
            view.name,
            view.source,
            features.join(", ")
        );
    }
    text
}

pub fn aggregation_names() -> String {
    Aggregation::ALL
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}
