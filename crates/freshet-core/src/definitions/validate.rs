//! Validation of definition files: every check, every error collected.

use super::toml_tree::{self, Entry, Kind, Node};
use super::{Aggregation, Definitions, Diagnostic, Feature, FeatureView, Source};
use crate::duration::DurationMs;
use crate::filter::Filter;
use crate::schema::EventSchema;
use crate::value::{Value, ValueType};
use crate::window::Window;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

const FILE_KEYS: &[&str] = &["source", "view", "feature"];
const SOURCE_KEYS: &[&str] = &[
    "name",
    "topic",
    "subject",
    "format",
    "schema",
    "event_time_field",
    "entity_key_field",
    "watermark_delay",
    "idle_timeout",
];
const VIEW_KEYS: &[&str] = &["name", "entity", "source", "ttl", "description"];
const FEATURE_KEYS: &[&str] = &[
    "name",
    "description",
    "aggregation",
    "field",
    "filter",
    "window",
    "default",
];
const WINDOW_TYPES: &[&str] = &["tumbling", "sliding", "session"];
const DEFAULT_WATERMARK_DELAY: DurationMs = DurationMs(5_000);

/// One file being validated: its text (for line numbers) and where its errors go.
struct FileCtx<'a> {
    path: &'a Path,
    text: &'a str,
}

struct Checker<'a> {
    root: &'a Path,
    diags: Vec<Diagnostic>,
    /// Names of every declared source, valid or not, so a view over a broken source does
    /// not also get an "unknown source" error.
    declared_sources: HashMap<String, (PathBuf, usize)>,
    sources: Vec<Source>,
    views: Vec<FeatureView>,
    view_locations: HashMap<String, (PathBuf, usize)>,
}

impl<'a> Checker<'a> {
    fn report(&mut self, file: &FileCtx, span: &Range<usize>, field: &str, message: String) {
        let (line, column) = toml_tree::line_col(file.text, span.start);
        self.diags.push(Diagnostic {
            file: file.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message,
        });
    }
}

/// A table being read: reports unknown keys once, and missing or mistyped values.
struct TableReader<'n> {
    entries: &'n [Entry],
    span: Range<usize>,
    /// How the table is named in messages, e.g. `feature "click_count_1m"`.
    label: String,
}

impl<'n> TableReader<'n> {
    fn new(node: &'n Node, label: String) -> Option<Self> {
        match &node.kind {
            Kind::Table(entries) => Some(Self {
                entries,
                span: node.span.clone(),
                label,
            }),
            _ => None,
        }
    }

    fn field(&self, key: &str) -> String {
        format!("{} > {key}", self.label)
    }

    fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn check_keys(&self, c: &mut Checker, file: &FileCtx, allowed: &[&str]) {
        for e in self.entries {
            if !allowed.contains(&e.key.as_str()) {
                let hint = suggestion(&e.key, allowed)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                c.report(
                    file,
                    &e.key_span,
                    &self.field(&e.key),
                    format!(
                        "unknown key `{}`; {hint}valid keys are: {}",
                        e.key,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// A string value; reports it when missing (if `required`) or not a string.
    fn string(
        &self,
        c: &mut Checker,
        file: &FileCtx,
        key: &str,
        required: bool,
    ) -> Option<(String, Range<usize>)> {
        match self.get(key) {
            None => {
                if required {
                    c.report(
                        file,
                        &self.span,
                        &self.field(key),
                        format!("missing required key `{key}`"),
                    );
                }
                None
            }
            Some(Entry {
                node:
                    Node {
                        kind: Kind::Str(s),
                        span,
                    },
                ..
            }) => Some((s.clone(), span.clone())),
            Some(e) => {
                c.report(
                    file,
                    &e.node.span,
                    &self.field(key),
                    format!("expected a string, found {}", e.node.kind.type_name()),
                );
                None
            }
        }
    }

    fn name(&self, c: &mut Checker, file: &FileCtx, key: &str) -> Option<(String, Range<usize>)> {
        let (name, span) = self.string(c, file, key, true)?;
        if is_identifier(&name) {
            Some((name, span))
        } else {
            c.report(
                file,
                &span,
                &self.field(key),
                format!(
                    "`{name}` is not a valid name; use 1 to 64 lowercase letters, digits and underscores, starting with a letter (e.g. `{}`)",
                    to_identifier(&name)
                ),
            );
            None
        }
    }

    fn duration(
        &self,
        c: &mut Checker,
        file: &FileCtx,
        key: &str,
        required: bool,
    ) -> Option<(DurationMs, Range<usize>)> {
        let (text, span) = self.string(c, file, key, required)?;
        match DurationMs::parse(&text) {
            Ok(d) => Some((d, span)),
            Err(e) => {
                c.report(file, &span, &self.field(key), e.to_string());
                None
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn to_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "f_");
    }
    out.truncate(64);
    out
}

fn suggestion<'s>(word: &str, candidates: &[&'s str]) -> Option<&'s str> {
    candidates
        .iter()
        .map(|c| {
            let prefix = word.len() >= 3 && (c.starts_with(word) || word.starts_with(c));
            let distance = strsim::damerau_levenshtein(word, c);
            (if prefix { distance.min(1) } else { distance }, *c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// Validates definition files given as `(path, text)`. Schema files named by sources are
/// read relative to `root`.
pub fn parse_files(
    root: &Path,
    files: &[(PathBuf, String)],
) -> Result<Definitions, Vec<Diagnostic>> {
    let mut c = Checker {
        root,
        diags: Vec::new(),
        declared_sources: HashMap::new(),
        sources: Vec::new(),
        views: Vec::new(),
        view_locations: HashMap::new(),
    };
    let mut trees = Vec::new();
    for (path, text) in files {
        let file = FileCtx { path, text };
        match toml_tree::parse(text) {
            Ok(tree) => trees.push((path, text, tree)),
            Err(e) => c.report(
                &file,
                &e.span,
                "TOML syntax",
                format!("{}; the file is not valid TOML", e.message),
            ),
        }
    }
    // Sources first, from every file, so that views can refer to sources in any file.
    for (path, text, tree) in &trees {
        let file = FileCtx { path, text };
        let root_table = TableReader::new(tree, "file".into()).expect("documents are tables");
        root_table.check_keys(&mut c, &file, FILE_KEYS);
        if let Some(entry) = root_table.get("source") {
            match &entry.node.kind {
                Kind::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        check_source(&mut c, &file, item, i);
                    }
                }
                other => c.report(
                    &file,
                    &entry.node.span,
                    "source",
                    format!(
                        "expected `[[source]]` tables, found {}; write each source as a `[[source]]` table",
                        other.type_name()
                    ),
                ),
            }
        }
    }
    for (path, text, tree) in &trees {
        let file = FileCtx { path, text };
        let root_table = TableReader::new(tree, "file".into()).expect("documents are tables");
        check_view_file(&mut c, &file, &root_table);
    }
    if c.diags.is_empty() {
        Ok(Definitions {
            root: root.to_path_buf(),
            sources: c.sources,
            views: c.views,
        })
    } else {
        c.diags
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(c.diags)
    }
}

fn check_source(c: &mut Checker, file: &FileCtx, node: &Node, index: usize) {
    let provisional = format!("source #{}", index + 1);
    let Some(mut t) = TableReader::new(node, provisional.clone()) else {
        c.report(file, &node.span, &provisional, "expected a table".into());
        return;
    };
    let name = t.name(c, file, "name");
    if let Some((name, _)) = &name {
        t.label = format!("source \"{name}\"");
    }
    t.check_keys(c, file, SOURCE_KEYS);
    if let Some((name, span)) = &name {
        let (line, _) = toml_tree::line_col(file.text, span.start);
        if let Some((first_file, first_line)) = c.declared_sources.get(name).cloned() {
            c.report(
                file,
                span,
                &t.field("name"),
                format!(
                    "duplicate source name `{name}`; it is already defined at {}:{first_line}; source names must be unique",
                    first_file.display()
                ),
            );
        } else {
            c.declared_sources
                .insert(name.clone(), (file.path.to_path_buf(), line));
        }
    }
    let topic = t.string(c, file, "topic", false);
    let subject = t.string(c, file, "subject", false);
    if let Some((format, span)) = t.string(c, file, "format", false) {
        if format != "avro" {
            c.report(
                file,
                &span,
                &t.field("format"),
                format!("unsupported format `{format}`; the only supported value format is \"avro\" (Confluent wire format with a schema registry)"),
            );
        }
    }
    let schema = t
        .string(c, file, "schema", true)
        .and_then(|(path, span)| load_schema(c, file, &t, &path, &span).map(|s| (path, s)));
    let event_time = t.string(c, file, "event_time_field", true);
    let entity_key = t.string(c, file, "entity_key_field", true);
    let delay = t.duration(c, file, "watermark_delay", false);
    let idle_timeout = t.duration(c, file, "idle_timeout", false);
    if let Some((_, span)) = idle_timeout.as_ref().filter(|(d, _)| d.as_millis() <= 0) {
        c.report(
            file,
            span,
            &t.field("idle_timeout"),
            "idle_timeout must be longer than zero; leave it out to never move a quiet partition's clock".to_string(),
        );
    }

    if let (Some((_, schema)), Some((field, span))) = (&schema, &event_time) {
        match schema.field(field) {
            None => c.report(
                file,
                span,
                &t.field("event_time_field"),
                unknown_field(field, schema),
            ),
            Some(f) if f.nullable || !f.value_type().is_some_and(ValueType::is_integral) => c
                .report(
                    file,
                    span,
                    &t.field("event_time_field"),
                    format!(
                        "field `{field}` must be a non-null long or int holding epoch milliseconds"
                    ),
                ),
            Some(_) => {}
        }
    }
    if let (Some((_, schema)), Some((field, span))) = (&schema, &entity_key) {
        match schema.field(field) {
            None => c.report(file, span, &t.field("entity_key_field"), unknown_field(field, schema)),
            Some(f)
                if f.nullable
                    || !matches!(
                        f.value_type(),
                        Some(ValueType::String | ValueType::Int | ValueType::Long)
                    ) =>
            {
                c.report(
                    file,
                    span,
                    &t.field("entity_key_field"),
                    format!("field `{field}` must be a non-null string, int or long to identify an entity"),
                )
            }
            Some(_) => {}
        }
    }
    let before = c.diags.len();
    let (
        Some((name, _)),
        Some((schema_path, schema)),
        Some((event_time_field, _)),
        Some((entity_key_field, _)),
    ) = (name, schema, event_time, entity_key)
    else {
        return;
    };
    if c.diags.len() != before || c.sources.iter().any(|s| s.name == name) {
        return;
    }
    let topic = topic.map(|(t, _)| t).unwrap_or_else(|| name.clone());
    c.sources.push(Source {
        subject: subject
            .map(|(s, _)| s)
            .unwrap_or_else(|| format!("{topic}-value")),
        topic,
        name,
        schema_path: PathBuf::from(schema_path),
        schema,
        event_time_field,
        entity_key_field,
        watermark_delay: delay.map(|(d, _)| d).unwrap_or(DEFAULT_WATERMARK_DELAY),
        idle_timeout: idle_timeout.map(|(d, _)| d),
        file: file.path.to_path_buf(),
    });
}

fn load_schema(
    c: &mut Checker,
    file: &FileCtx,
    t: &TableReader,
    path: &str,
    span: &Range<usize>,
) -> Option<EventSchema> {
    let full = c.root.join(path);
    let text = match std::fs::read_to_string(&full) {
        Ok(text) => text,
        Err(e) => {
            c.report(
                file,
                span,
                &t.field("schema"),
                format!(
                    "cannot read schema file {}: {e}; give a path to an Avro schema (.avsc) relative to the definitions folder",
                    full.display()
                ),
            );
            return None;
        }
    };
    match EventSchema::parse(&text) {
        Ok(schema) => Some(schema),
        Err(e) => {
            c.report(
                file,
                span,
                &t.field("schema"),
                format!("{}: {e}", full.display()),
            );
            None
        }
    }
}

fn unknown_field(field: &str, schema: &EventSchema) -> String {
    let names = schema.field_names();
    let hint = suggestion(field, &names)
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    format!(
        "field `{field}` is not in the source schema {}; {hint}fields are: {}",
        schema.full_name,
        names.join(", ")
    )
}

fn check_view_file(c: &mut Checker, file: &FileCtx, root: &TableReader) {
    let view_entry = root.get("view");
    let feature_entry = root.get("feature");
    let Some(view_entry) = view_entry else {
        if let Some(f) = feature_entry {
            c.report(
                file,
                &f.key_span,
                "feature",
                "`[[feature]]` tables need a `[view]` table in the same file".into(),
            );
        }
        return;
    };
    let Some(mut t) = TableReader::new(&view_entry.node, "view".into()) else {
        c.report(
            file,
            &view_entry.node.span,
            "view",
            "expected one `[view]` table per file (not `[[view]]`); put each view in its own file"
                .into(),
        );
        return;
    };
    let before = c.diags.len();
    let name = t.name(c, file, "name");
    if let Some((name, _)) = &name {
        t.label = format!("view \"{name}\"");
    }
    t.check_keys(c, file, VIEW_KEYS);
    if let Some((name, span)) = &name {
        let (line, _) = toml_tree::line_col(file.text, span.start);
        if let Some((first_file, first_line)) = c.view_locations.get(name).cloned() {
            c.report(
                file,
                span,
                &t.field("name"),
                format!(
                    "duplicate view name `{name}`; it is already defined at {}:{first_line}; view names must be unique",
                    first_file.display()
                ),
            );
        } else {
            c.view_locations
                .insert(name.clone(), (file.path.to_path_buf(), line));
        }
    }
    let entity = t.name(c, file, "entity");
    let ttl = t.duration(c, file, "ttl", true);
    if let Some((ttl, span)) = &ttl {
        if ttl.0 <= 0 {
            c.report(
                file,
                span,
                &t.field("ttl"),
                "ttl must be longer than zero, e.g. \"1h\"".into(),
            );
        }
    }
    let description = t.string(c, file, "description", true);
    let source_name = t.string(c, file, "source", true);
    let source = source_name.as_ref().and_then(|(s, span)| {
        let found = c.sources.iter().find(|src| &src.name == s).cloned();
        if found.is_none() && !c.declared_sources.contains_key(s) {
            let mut names: Vec<&str> = c.declared_sources.keys().map(String::as_str).collect();
            names.sort();
            let hint = suggestion(s, &names)
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            let listed = if names.is_empty() {
                "no sources are defined; add a `[[source]]` table".to_string()
            } else {
                format!("defined sources are: {}", names.join(", "))
            };
            c.report(
                file,
                span,
                &t.field("source"),
                format!("unknown source `{s}`; {hint}{listed}"),
            );
        }
        found
    });

    let mut features = Vec::new();
    match feature_entry.map(|e| &e.node) {
        None => c.report(
            file,
            &t.span,
            &t.field("feature"),
            "a view needs at least one `[[feature]]` table".into(),
        ),
        Some(Node {
            kind: Kind::Array(items),
            ..
        }) => {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(f) = check_feature(c, file, item, i, source.as_ref(), &mut seen) {
                    features.push(f);
                }
            }
        }
        Some(node) => c.report(
            file,
            &node.span,
            "feature",
            format!(
                "expected `[[feature]]` tables, found {}",
                node.kind.type_name()
            ),
        ),
    }
    if c.diags.len() != before {
        return;
    }
    if let (
        Some((name, _)),
        Some((entity, _)),
        Some((ttl, _)),
        Some((description, _)),
        Some(source),
    ) = (name, entity, ttl, description, source)
    {
        c.views.push(FeatureView {
            name,
            entity,
            source: source.name,
            ttl,
            description,
            features,
            file: file.path.to_path_buf(),
        });
    }
}

fn check_feature(
    c: &mut Checker,
    file: &FileCtx,
    node: &Node,
    index: usize,
    source: Option<&Source>,
    seen: &mut HashMap<String, usize>,
) -> Option<Feature> {
    let provisional = format!("feature #{}", index + 1);
    let Some(mut t) = TableReader::new(node, provisional.clone()) else {
        c.report(file, &node.span, &provisional, "expected a table".into());
        return None;
    };
    let before = c.diags.len();
    let name = t.name(c, file, "name");
    if let Some((name, _)) = &name {
        t.label = format!("feature \"{name}\"");
    }
    t.check_keys(c, file, FEATURE_KEYS);
    if let Some((name, span)) = &name {
        let (line, _) = toml_tree::line_col(file.text, span.start);
        if let Some(first) = seen.get(name) {
            c.report(
                file,
                span,
                &t.field("name"),
                format!("duplicate feature name `{name}` in this view (first at line {first}); feature names must be unique within a view"),
            );
        } else {
            seen.insert(name.clone(), line);
        }
    }
    let description = t.string(c, file, "description", true);
    let aggregation = t
        .string(c, file, "aggregation", true)
        .and_then(|(a, span)| {
            let found = Aggregation::from_name(&a);
            if found.is_none() {
                let names: Vec<&str> = Aggregation::ALL.iter().map(|a| a.name()).collect();
                let alias = match a.as_str() {
                    "avg" | "average" => Some("mean"),
                    "distinct" | "count_distinct" | "approx_distinct" | "nunique" => {
                        Some("approx_count_distinct")
                    }
                    "latest" | "last_value" => Some("last"),
                    _ => suggestion(&a, &names),
                };
                let hint = alias
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                c.report(
                    file,
                    &span,
                    &t.field("aggregation"),
                    format!(
                        "unknown aggregation `{a}`; {hint}valid aggregations are: {}",
                        names.join(", ")
                    ),
                );
            }
            found.map(|f| (f, span))
        });
    let field = t.string(c, file, "field", false);
    let window = check_window(c, file, &t);

    let schema = source.map(|s| &s.schema);
    let mut field_type = None;
    if let (Some(schema), Some((field, span))) = (schema, &field) {
        match schema.field(field) {
            None => c.report(file, span, &t.field("field"), unknown_field(field, schema)),
            Some(f) => match f.value_type() {
                Some(ty) => field_type = Some(ty),
                None => c.report(
                    file,
                    span,
                    &t.field("field"),
                    format!("field `{field}` is not a scalar (string, number or boolean) and cannot be aggregated"),
                ),
            },
        }
    }
    let mut value_type = None;
    if let Some((agg, agg_span)) = &aggregation {
        let field_known = field.is_none() || field_type.is_some();
        if field.is_none() && *agg != Aggregation::Count {
            c.report(
                file,
                &t.span,
                &t.field("field"),
                format!("`{agg}` needs a `field` to aggregate; only `count` may omit it"),
            );
        } else if field_known && source.is_some() {
            match agg.output_type(field_type) {
                Ok(ty) => value_type = Some(ty),
                Err(message) => {
                    let span = field.as_ref().map_or(agg_span.clone(), |(_, s)| s.clone());
                    c.report(file, &span, &t.field("field"), message)
                }
            }
        }
    }

    let filter =
        t.string(c, file, "filter", false)
            .and_then(|(text, span)| match Filter::parse(&text) {
                Ok(filter) => {
                    if let Some(schema) = schema {
                        for problem in filter.check(schema) {
                            c.report(file, &span, &t.field("filter"), problem);
                        }
                    }
                    Some(filter)
                }
                Err(e) => {
                    c.report(file, &span, &t.field("filter"), e.to_string());
                    None
                }
            });

    let default = match t.get("default") {
        None => None,
        Some(e) => {
            let value = match &e.node.kind {
                Kind::Int(i) => Some(Value::Long(*i)),
                Kind::Float(f) => Some(Value::Double(*f)),
                Kind::Str(s) => Some(Value::String(s.clone())),
                Kind::Bool(b) => Some(Value::Bool(*b)),
                other => {
                    c.report(
                        file,
                        &e.node.span,
                        &t.field("default"),
                        format!(
                            "expected a number, string or boolean, found {}",
                            other.type_name()
                        ),
                    );
                    None
                }
            };
            if let (Some(v), Some(ty)) = (&value, value_type) {
                if !v.fits(ty) {
                    c.report(
                        file,
                        &e.node.span,
                        &t.field("default"),
                        format!(
                            "default {v} does not fit the feature's type {ty}; give a {ty} value"
                        ),
                    );
                }
            }
            value
        }
    };
    if c.diags.len() != before {
        return None;
    }
    let (name, description, (aggregation, _), window, value_type) =
        (name?.0, description?.0, aggregation?, window?, value_type?);
    let default = match default {
        Some(Value::Long(i)) if value_type == ValueType::Double => Value::Double(i as f64),
        Some(v) => v,
        None => aggregation.implicit_default(value_type),
    };
    Some(Feature {
        name,
        description,
        aggregation,
        field: field.map(|(f, _)| f),
        filter,
        window,
        default,
        value_type,
    })
}

fn check_window(c: &mut Checker, file: &FileCtx, feature: &TableReader) -> Option<Window> {
    let Some(entry) = feature.get("window") else {
        c.report(
            file,
            &feature.span,
            &feature.field("window"),
            "missing required key `window`; e.g. window = { type = \"tumbling\", size = \"1m\" }"
                .into(),
        );
        return None;
    };
    let label = format!("{} > window", feature.label);
    let Some(t) = TableReader::new(&entry.node, label.clone()) else {
        c.report(
            file,
            &entry.node.span,
            &label,
            format!(
                "expected a table such as {{ type = \"tumbling\", size = \"1m\" }}, found {}",
                entry.node.kind.type_name()
            ),
        );
        return None;
    };
    let (kind, kind_span) = t.string(c, file, "type", true)?;
    let allowed: &[&str] = match kind.as_str() {
        "tumbling" => &["type", "size"],
        "sliding" => &["type", "size", "step"],
        "session" => &["type", "gap"],
        _ => {
            let hint = match kind.as_str() {
                "hop" | "hopping" => Some("sliding"),
                "tumble" | "fixed" => Some("tumbling"),
                _ => suggestion(&kind, WINDOW_TYPES),
            }
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
            c.report(
                file,
                &kind_span,
                &t.field("type"),
                format!(
                    "unknown window type `{kind}`; {hint}valid types are: tumbling (size), sliding (size, step), session (gap)"
                ),
            );
            return None;
        }
    };
    t.check_keys(c, file, allowed);
    let positive = |c: &mut Checker, key: &str, d: Option<(DurationMs, Range<usize>)>| {
        let (d, span) = d?;
        if d.0 <= 0 {
            c.report(
                file,
                &span,
                &t.field(key),
                format!("{key} must be longer than zero"),
            );
            None
        } else {
            Some((d, span))
        }
    };
    match kind.as_str() {
        "tumbling" => {
            let size = t.duration(c, file, "size", true);
            let (size, _) = positive(c, "size", size)?;
            Some(Window::Tumbling { size })
        }
        "sliding" => {
            let size = t.duration(c, file, "size", true);
            let step = t.duration(c, file, "step", true);
            let size = positive(c, "size", size);
            let step = positive(c, "step", step);
            let ((size, _), (step, step_span)) = (size?, step?);
            if step > size {
                c.report(
                    file,
                    &step_span,
                    &t.field("step"),
                    format!("step {step} is larger than the window size {size}; the step must be at most the size"),
                );
                return None;
            }
            if size.0 % step.0 != 0 {
                c.report(
                    file,
                    &step_span,
                    &t.field("step"),
                    format!("the window size {size} is not a whole multiple of the step {step}; choose a step that divides the size"),
                );
                return None;
            }
            Some(Window::Sliding { size, step })
        }
        _ => {
            let gap = t.duration(c, file, "gap", true);
            let (gap, _) = positive(c, "gap", gap)?;
            Some(Window::Session { gap })
        }
    }
}
