//! The filter language of feature definitions.
//!
//! A filter is one or more comparisons joined by `and`:
//!
//! ```text
//! action_type == "click"
//! action_type == "purchase" and amount >= 10.5
//! amount != null
//! ```
//!
//! Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`. Literals: double- or single-quoted
//! strings, numbers, `true`, `false`, `null`. Comparisons follow SQL: a comparison with a
//! null field is false, except `== null` and `!= null`, so the processor and the compiled
//! Flink SQL agree on every event.

use crate::schema::EventSchema;
use crate::value::{Value, ValueType};
use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Self::Eq => ord == Ordering::Equal,
            Self::Ne => ord != Ordering::Equal,
            Self::Lt => ord == Ordering::Less,
            Self::Le => ord != Ordering::Greater,
            Self::Gt => ord == Ordering::Greater,
            Self::Ge => ord != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: String,
    pub op: CompareOp,
    pub literal: Value,
}

/// A parsed filter: all comparisons must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub all_of: Vec<Comparison>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {position} of the filter; write comparisons like `action_type == \"click\"` joined by `and`")]
pub struct FilterSyntaxError {
    pub message: String,
    /// 0-based character offset into the filter text.
    pub position: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Op(CompareOp),
    Literal(Value),
    And,
}

fn syntax(message: impl Into<String>, position: usize) -> FilterSyntaxError {
    FilterSyntaxError {
        message: message.into(),
        position,
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, FilterSyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(syntax("unterminated string", start)),
                    Some('\\') if i + 1 < chars.len() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push((Token::Literal(Value::String(s)), start));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            let value = if n.contains('.') {
                n.parse::<f64>().map(Value::Double).ok()
            } else {
                n.parse::<i64>().map(Value::Long).ok()
            };
            let value = value.ok_or_else(|| syntax(format!("bad number `{n}`"), start))?;
            tokens.push((Token::Literal(value), start));
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let token = match word.as_str() {
                "and" | "AND" => Token::And,
                "true" => Token::Literal(Value::Bool(true)),
                "false" => Token::Literal(Value::Bool(false)),
                "null" => Token::Literal(Value::Null),
                "or" | "OR" | "not" | "NOT" => {
                    return Err(syntax(
                        format!("`{word}` is not supported (only `and`)"),
                        start,
                    ))
                }
                _ => Token::Ident(word),
            };
            tokens.push((token, start));
        } else if c == '&' && chars.get(i + 1) == Some(&'&') {
            i += 2;
            tokens.push((Token::And, start));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let (op, len) = match (two.as_str(), c) {
                ("==", _) => (CompareOp::Eq, 2),
                ("!=", _) => (CompareOp::Ne, 2),
                ("<=", _) => (CompareOp::Le, 2),
                (">=", _) => (CompareOp::Ge, 2),
                (_, '<') => (CompareOp::Lt, 1),
                (_, '>') => (CompareOp::Gt, 1),
                (_, '=') => return Err(syntax("`=` is not an operator; use `==`", start)),
                _ => return Err(syntax(format!("unexpected character `{c}`"), start)),
            };
            i += len;
            tokens.push((Token::Op(op), start));
        }
    }
    Ok(tokens)
}

impl Filter {
    pub fn parse(text: &str) -> Result<Self, FilterSyntaxError> {
        let tokens = tokenize(text)?;
        let end = text.chars().count();
        let mut it = tokens.into_iter().peekable();
        let mut all_of = Vec::new();
        loop {
            let field = match it.next() {
                Some((Token::Ident(name), _)) => name,
                Some((_, pos)) => return Err(syntax("expected a field name", pos)),
                None => return Err(syntax("expected a comparison", end)),
            };
            let op = match it.next() {
                Some((Token::Op(op), _)) => op,
                Some((_, pos)) => {
                    return Err(syntax(format!("expected an operator after `{field}`"), pos))
                }
                None => return Err(syntax(format!("expected an operator after `{field}`"), end)),
            };
            let literal = match it.next() {
                Some((Token::Literal(v), _)) => v,
                Some((_, pos)) => {
                    return Err(syntax(
                        "expected a literal (string, number, true, false or null)",
                        pos,
                    ))
                }
                None => return Err(syntax("expected a literal", end)),
            };
            if literal.is_null() && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return Err(syntax(
                    format!(
                        "`null` can only be compared with == or !=, not {}",
                        op.symbol()
                    ),
                    end,
                ));
            }
            all_of.push(Comparison { field, op, literal });
            match it.next() {
                None => break,
                Some((Token::And, _)) => continue,
                Some((_, pos)) => return Err(syntax("expected `and` between comparisons", pos)),
            }
        }
        Ok(Self { all_of })
    }

    /// Every problem of this filter against an event schema, as plain sentences.
    pub fn check(&self, schema: &EventSchema) -> Vec<String> {
        let mut problems = Vec::new();
        for c in &self.all_of {
            let Some(field) = schema.field(&c.field) else {
                problems.push(format!(
                    "filter field `{}` is not in the source schema; fields are: {}",
                    c.field,
                    schema.field_names().join(", ")
                ));
                continue;
            };
            let Some(ty) = field.value_type() else {
                problems.push(format!(
                    "filter field `{}` is not a scalar and cannot be compared",
                    c.field
                ));
                continue;
            };
            if !c.literal.fits(ty) {
                problems.push(format!(
                    "filter compares `{}` ({ty}) with {}, which is not a {ty}",
                    c.field, c.literal
                ));
            } else if ty == ValueType::Boolean && !matches!(c.op, CompareOp::Eq | CompareOp::Ne) {
                problems.push(format!(
                    "boolean field `{}` can only be compared with == or !=",
                    c.field
                ));
            }
        }
        problems
    }

    /// Whether an event passes the filter; `get` returns a field's value (`None` or
    /// `Value::Null` when it is absent).
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a Value>) -> bool {
        self.matches_each(|i| get(&self.all_of[i].field))
    }

    /// Like [`Self::matches`], with `get` given the index of a comparison in `all_of` (for
    /// callers that have located each comparison's field beforehand).
    pub fn matches_each<'a>(&self, get: impl Fn(usize) -> Option<&'a Value>) -> bool {
        self.all_of.iter().enumerate().all(|(i, c)| {
            let value = get(i).unwrap_or(&Value::Null);
            match (&c.literal, c.op) {
                (Value::Null, CompareOp::Eq) => value.is_null(),
                (Value::Null, _) => !value.is_null(),
                // As `compare` would decide, without ordering the strings: most filters
                // test a string for equality, and this runs per event and filter.
                (Value::String(l), CompareOp::Eq) => matches!(value, Value::String(v) if v == l),
                (Value::String(l), CompareOp::Ne) => matches!(value, Value::String(v) if v != l),
                (literal, op) => compare(value, literal).is_some_and(|ord| op.holds(ord)),
            }
        })
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Long(x), Value::Long(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.all_of.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} {} {}", c.field, c.op.symbol(), c.literal)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn event(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_conjunctions_of_comparisons() {
        let f = Filter::parse(r#"action_type == "purchase" and amount >= 10.5 && item_id != 3"#)
            .unwrap();
        assert_eq!(f.all_of.len(), 3);
        assert_eq!(f.all_of[1].op, CompareOp::Ge);
        assert_eq!(f.all_of[1].literal, Value::Double(10.5));
        assert_eq!(
            f.to_string(),
            r#"action_type == "purchase" and amount >= 10.5 and item_id != 3"#
        );
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = Filter::parse("action_type = 'click'").unwrap_err();
        assert_eq!(e.position, 12);
        assert!(e.message.contains("use `==`"));
        assert!(Filter::parse("").is_err());
        assert!(Filter::parse("a == 1 or b == 2")
            .unwrap_err()
            .message
            .contains("only `and`"));
        assert!(Filter::parse("a == 'open")
            .unwrap_err()
            .message
            .contains("unterminated"));
        assert!(Filter::parse("a > null").is_err());
        assert!(Filter::parse("a == 1 b == 2")
            .unwrap_err()
            .message
            .contains("`and`"));
    }

    #[test]
    fn matches_like_sql_with_nulls() {
        let f = Filter::parse("action_type != 'click'").unwrap();
        let e = event(&[("action_type", Value::Null)]);
        assert!(!f.matches(|k| e.get(k)), "a comparison with null is false");
        let e = event(&[("action_type", Value::String("view".into()))]);
        assert!(f.matches(|k| e.get(k)));

        let is_null = Filter::parse("amount == null").unwrap();
        let empty = event(&[]);
        assert!(is_null.matches(|k| empty.get(k)), "an absent field is null");
        let e = event(&[("amount", Value::Double(1.0))]);
        assert!(!is_null.matches(|k| e.get(k)));
    }

    #[test]
    fn string_equality_holds_only_for_the_same_string() {
        let eq = Filter::parse("action_type == 'click'").unwrap();
        let ne = Filter::parse("action_type != 'click'").unwrap();
        for (value, equal) in [
            (Value::String("click".into()), Some(true)),
            (Value::String("clicks".into()), Some(false)),
            (Value::String("clic".into()), Some(false)),
            (Value::String("".into()), Some(false)),
            (Value::Long(1), None),
            (Value::Null, None),
        ] {
            let e = event(&[("action_type", value.clone())]);
            assert_eq!(
                eq.matches(|k| e.get(k)),
                equal == Some(true),
                "{value:?} =="
            );
            assert_eq!(
                ne.matches(|k| e.get(k)),
                equal == Some(false),
                "{value:?} !="
            );
        }
        let before = Filter::parse("action_type < 'click'").unwrap();
        let e = event(&[("action_type", Value::String("add".into()))]);
        assert!(
            before.matches(|k| e.get(k)),
            "other comparisons still order strings"
        );
    }

    #[test]
    fn compares_integers_with_floats_numerically() {
        let f = Filter::parse("amount > 10").unwrap();
        let e = event(&[("amount", Value::Double(10.5))]);
        assert!(f.matches(|k| e.get(k)));
        let e = event(&[("amount", Value::Long(10))]);
        assert!(!f.matches(|k| e.get(k)));
    }
}
