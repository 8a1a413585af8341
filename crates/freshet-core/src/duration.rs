//! Durations as written in feature definitions: a whole number followed by one unit,
//! `ms`, `s`, `m`, `h` or `d` (`500ms`, `10s`, `5m`, `1h`, `7d`).
//!
//! The syntax is deliberately strict: `5 minutes` or `1h30m` are rejected with a message
//! that shows the accepted form, so a definition means exactly one thing.

use std::fmt;

/// A non-negative duration in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(pub i64);

const UNITS: [(&str, i64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a duration string was rejected; the message says what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}; write a whole number followed by one unit (ms, s, m, h or d), e.g. \"30s\", \"5m\", \"1h\"")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl DurationMs {
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let digits_end = input
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(input.len());
        if digits_end == 0 {
            return Err(err("it does not start with a number"));
        }
        let unit = &input[digits_end..];
        if unit.is_empty() {
            return Err(err("the unit is missing"));
        }
        let factor = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| err("unknown unit"))?;
        let amount: i64 = input[..digits_end]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        amount
            .checked_mul(factor)
            .map(DurationMs)
            .ok_or_else(|| err("the number is too large"))
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for DurationMs {
    /// The shortest exact spelling in the definition syntax: 60000 ms prints as `1m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return write!(f, "0s");
        }
        for (name, factor) in UNITS {
            if self.0 % factor == 0 {
                return write!(f, "{}{}", self.0 / factor, name);
            }
        }
        unreachable!("every duration is a whole number of milliseconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(DurationMs::parse("500ms").unwrap(), DurationMs(500));
        assert_eq!(DurationMs::parse("10s").unwrap(), DurationMs(10_000));
        assert_eq!(DurationMs::parse("5m").unwrap(), DurationMs(300_000));
        assert_eq!(DurationMs::parse("1h").unwrap(), DurationMs(3_600_000));
        assert_eq!(DurationMs::parse("2d").unwrap(), DurationMs(172_800_000));
        assert_eq!(DurationMs::parse("0s").unwrap(), DurationMs(0));
    }

    #[test]
    fn rejects_prose_and_compound_durations_with_a_hint() {
        for bad in ["5 minutes", "1h30m", "m5", "", "5", "-5s", "5.5s", "5M"] {
            let e = DurationMs::parse(bad).unwrap_err();
            assert!(e.to_string().contains("e.g. \"30s\""), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_overflow() {
        let e = DurationMs::parse("99999999999999999d").unwrap_err();
        assert_eq!(e.reason, "the number is too large");
    }

    #[test]
    fn displays_shortest_exact_unit() {
        assert_eq!(DurationMs(60_000).to_string(), "1m");
        assert_eq!(DurationMs(90_000).to_string(), "90s");
        assert_eq!(DurationMs(1_500).to_string(), "1500ms");
        assert_eq!(DurationMs(86_400_000).to_string(), "1d");
        assert_eq!(DurationMs(0).to_string(), "0s");
    }
}
