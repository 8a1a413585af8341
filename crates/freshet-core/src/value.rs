//! Scalar values: what an event field holds, what a feature produces, what is served.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of an event field or a feature value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
}

impl ValueType {
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Long | Self::Float | Self::Double)
    }

    pub fn is_integral(self) -> bool {
        matches!(self, Self::Int | Self::Long)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::Int => "int",
            Self::Long => "long",
            Self::Float => "float",
            Self::Double => "double",
            Self::String => "string",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scalar value. Integers of every width are `Long`, floating point numbers `Double`.
///
/// Serialised as the plain JSON scalar (`3`, `2.5`, `"click"`, `true`, `null`), which is
/// also how values are stored in Redis (see [`crate::store_layout`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
}

impl Value {
    /// The value as a number, for comparisons and arithmetic across integer and float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Long(v) => Some(*v as f64),
            Value::Double(v) => Some(*v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this value may be stored in a field or feature of type `ty`
    /// (`null` fits everywhere; integers fit float types).
    pub fn fits(&self, ty: ValueType) -> bool {
        match self {
            Value::Null => true,
            Value::Bool(_) => ty == ValueType::Boolean,
            Value::Long(_) => ty.is_numeric(),
            Value::Double(_) => matches!(ty, ValueType::Float | ValueType::Double),
            Value::String(_) => ty == ValueType::String,
        }
    }

    /// Compact, unambiguous text: the JSON scalar.
    pub fn to_json_string(&self) -> String {
        let mut text = String::new();
        self.write_json(&mut text);
        text
    }

    /// Appends [`Value::to_json_string`]'s text to `out`, reusing its room.
    pub fn write_json(&self, out: &mut String) {
        let mut bytes = std::mem::take(out).into_bytes();
        serde_json::to_writer(&mut bytes, self).expect("scalars always serialise");
        *out = String::from_utf8(bytes).expect("JSON is UTF-8");
    }

    /// Reads the text [`Value::to_json_string`] writes, the same as deserialising it with
    /// serde would (integers as `Long`, other numbers as `Double`, exactly), but without
    /// serde's trial of each variant: this runs for every value served. `None` when the
    /// text is not a JSON scalar.
    pub fn from_json_str(text: &str) -> Option<Value> {
        match text.as_bytes().first()? {
            b'n' if text == "null" => Some(Value::Null),
            b't' if text == "true" => Some(Value::Bool(true)),
            b'f' if text == "false" => Some(Value::Bool(false)),
            b'"' => serde_json::from_str(text).ok().map(Value::String),
            b'-' | b'0'..=b'9' => {
                if let Ok(v) = text.parse::<i64>() {
                    return Some(Value::Long(v));
                }
                // JSON numbers only: Rust's parser would also take "inf" or "NaN".
                if text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                {
                    text.parse::<f64>().ok().map(Value::Double)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

impl Value {
    /// A JSON scalar read as a value of type `ty` (what another system, such as a Flink
    /// job's JSON rows, wrote for a feature of that type): numbers become `Long` for
    /// integral types (only when whole) and `Double` for float types. `None` when the JSON
    /// does not fit the type.
    pub fn from_json_as(json: &serde_json::Value, ty: ValueType) -> Option<Value> {
        use serde_json::Value as J;
        Some(match (json, ty) {
            (J::Null, _) => Value::Null,
            (J::Bool(b), ValueType::Boolean) => Value::Bool(*b),
            (J::Number(n), ValueType::Int | ValueType::Long) => Value::Long(n.as_i64()?),
            (J::Number(n), ValueType::Float | ValueType::Double) => Value::Double(n.as_f64()?),
            (J::String(s), ValueType::String) => Value::String(s.clone()),
            _ => return None,
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_text() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Long(-42),
            Value::Double(2.5),
            Value::String("a \"quoted\" click".into()),
        ] {
            let text = v.to_json_string();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v, "{text}");
        }
    }

    #[test]
    fn the_fast_reader_agrees_with_serde_on_every_kind_of_scalar() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-42",
            "9223372036854775807",
            "2.5",
            "-0.1",
            "0.30000000000000004",
            "12.345678901234567",
            "1e300",
            "-2.5E-7",
            "18446744073709551616",
            "\"a \\\"quoted\\\" click\"",
            "\"\"",
            "\"\\u00e9\"",
        ] {
            let serde: Value = serde_json::from_str(text).unwrap();
            assert_eq!(Value::from_json_str(text), Some(serde), "{text}");
        }
        for bad in [
            "", "nul", "True", "{oops", "inf", "NaN", "1.2.3x", "[1]", "'x'",
        ] {
            assert_eq!(Value::from_json_str(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_fit_float_types_but_not_the_reverse() {
        assert!(Value::Long(1).fits(ValueType::Double));
        assert!(!Value::Double(1.5).fits(ValueType::Long));
        assert!(!Value::String("1".into()).fits(ValueType::Long));
        assert!(Value::Null.fits(ValueType::String));
    }
}
