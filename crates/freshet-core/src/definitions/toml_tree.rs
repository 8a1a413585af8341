//! A small owned tree of a TOML document that keeps every key's and value's byte span, so
//! validation can point at the exact line of each mistake. toml_edit does the parsing.

use std::ops::Range;
use toml_edit::{Item, Table, Value as TomlValue};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Table(Vec<Entry>),
    /// A plain array or an array of tables.
    Array(Vec<Node>),
    /// Anything Freshet never accepts (dates and times).
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub node: Node,
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Table(_) => "a table",
            Kind::Array(_) => "an array",
            Kind::Other => "a date or time",
        }
    }
}

/// A parse error with its byte span.
pub(super) struct SyntaxError {
    pub span: Range<usize>,
    pub message: String,
}

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let doc = toml_edit::Document::parse(text).map_err(|e| SyntaxError {
        span: e.span().unwrap_or(0..0),
        message: e.message().trim().to_string(),
    })?;
    Ok(table_node(doc.as_table(), 0..0))
}

fn table_node(table: &Table, fallback: Range<usize>) -> Node {
    let entries = table
        .iter()
        .filter_map(|(key, _)| {
            let (k, item) = table.get_key_value(key)?;
            let key_span = k.span().unwrap_or(fallback.clone());
            let node = item_node(item, key_span.clone())?;
            Some(Entry {
                key: key.to_string(),
                key_span,
                node,
            })
        })
        .collect();
    Node {
        span: table.span().unwrap_or(fallback),
        kind: Kind::Table(entries),
    }
}

fn item_node(item: &Item, fallback: Range<usize>) -> Option<Node> {
    Some(match item {
        Item::None => return None,
        Item::Value(v) => value_node(v, fallback),
        Item::Table(t) => table_node(t, fallback),
        Item::ArrayOfTables(a) => Node {
            span: a.span().unwrap_or(fallback.clone()),
            kind: Kind::Array(a.iter().map(|t| table_node(t, fallback.clone())).collect()),
        },
    })
}

fn value_node(value: &TomlValue, fallback: Range<usize>) -> Node {
    let span = value.span().unwrap_or(fallback.clone());
    let kind = match value {
        TomlValue::String(s) => Kind::Str(s.value().clone()),
        TomlValue::Integer(i) => Kind::Int(*i.value()),
        TomlValue::Float(f) => Kind::Float(*f.value()),
        TomlValue::Boolean(b) => Kind::Bool(*b.value()),
        TomlValue::Datetime(_) => Kind::Other,
        TomlValue::Array(a) => Kind::Array(a.iter().map(|v| value_node(v, span.clone())).collect()),
        TomlValue::InlineTable(t) => Kind::Table(
            t.iter()
                .filter_map(|(key, _)| {
                    let (k, v) = t.get_key_value(key)?;
                    let key_span = k.span().unwrap_or(span.clone());
                    let item_node = item_node(v, key_span.clone())?;
                    Some(Entry {
                        key: key.to_string(),
                        key_span,
                        node: item_node,
                    })
                })
                .collect(),
        ),
    };
    Node { span, kind }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
