//! How a piece of state ([`StatePart`]) is stored in the checkpoint and the changelog.
//!
//! **Format 1** (written since issue #27): a version byte `0x01`, then the piece in a compact
//! binary form. Integers are LEB128 varints (signed ones zigzag-encoded, so small negative
//! numbers stay short), floats their 8 little-endian IEEE 754 bytes, strings a length then
//! their UTF-8 bytes, lists a length then their items:
//!
//! ```text
//! piece    = 0x01 (0x00 accs | 0x01 sessions)
//! sessions = len (bounds accs)*  (0x00 | 0x01 bounds accs)   open, then the closed one
//! bounds   = start:i64 end:i64
//! accs     = len acc*
//! acc      = 0x00 count:i64 | 0x01 sum:i64 | 0x02 sum:f64 | 0x03 opt-value (min)
//!          | 0x04 opt-value (max) | 0x05 sum:f64 n:i64 (mean)
//!          | 0x06 (0x00 | 0x01 time:i64 value) (last) | 0x07 len string* (distinct, sorted)
//! value    = 0x00 (null) | 0x01 u8 (boolean) | 0x02 i64 | 0x03 f64 | 0x04 string
//! ```
//!
//! **Format 0**: the JSON text serde gives [`StatePart`], written by every version before
//! it. It always starts with `{`, never `0x01`, so [`decode`] tells the two apart by the
//! first byte and reads both: state saved by an earlier version is read as it is and
//! written back in format 1 when the piece next changes (no rewrite at start).
//!
//! The encoding is a function of the piece's value (a distinct set is written sorted,
//! whatever order its values came in), so equal pieces give equal bytes.

use crate::acc::{Acc, DistinctSet};
use crate::StatePart;
use freshet_core::window::WindowBounds;
use freshet_core::Value;
use integer_encoding::VarInt;

/// The first byte of a piece in format 1.
pub const FORMAT_1: u8 = 0x01;

/// A stored piece of state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    #[error("state piece in the JSON format of earlier versions: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state piece in binary format 1: {what} at byte {at}")]
    Binary { what: &'static str, at: usize },
    #[error("state piece of unknown format (first byte {0:#04x}); written by a newer version?")]
    UnknownFormat(u8),
    #[error("empty state piece")]
    Empty,
}

/// A piece in format 1, borrowed from the engine's state or from a [`StatePart`].
pub(crate) enum PieceRef<'a> {
    Window(&'a [Acc]),
    Sessions {
        open: &'a [(WindowBounds, Vec<Acc>)],
        closed: &'a Option<(WindowBounds, Vec<Acc>)>,
    },
}

/// The piece in format 1.
pub(crate) fn encode(piece: PieceRef<'_>) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(estimate(&piece)));
    out.byte(FORMAT_1);
    match piece {
        PieceRef::Window(accs) => {
            out.byte(0);
            out.accs(accs);
        }
        PieceRef::Sessions { open, closed } => {
            out.byte(1);
            out.len(open.len());
            for (bounds, accs) in open {
                out.bounds(bounds);
                out.accs(accs);
            }
            match closed {
                None => out.byte(0),
                Some((bounds, accs)) => {
                    out.byte(1);
                    out.bounds(bounds);
                    out.accs(accs);
                }
            }
        }
    }
    out.0
}

/// A piece in either format (see the module's documentation).
pub fn decode(bytes: &[u8]) -> Result<StatePart, StateDecodeError> {
    match bytes.first() {
        None => Err(StateDecodeError::Empty),
        Some(&FORMAT_1) => {
            let mut r = Reader { bytes, at: 1 };
            let piece = r.piece()?;
            if r.at != bytes.len() {
                return Err(r.error("bytes after the piece's end"));
            }
            Ok(piece)
        }
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&other) => Err(StateDecodeError::UnknownFormat(other)),
    }
}

/// Room for most pieces, so the buffer is allocated once: a few bytes per accumulator, more
/// for distinct sets and strings.
fn estimate(piece: &PieceRef<'_>) -> usize {
    let accs = |accs: &[Acc]| -> usize {
        accs.iter()
            .map(|acc| match acc {
                Acc::Distinct(set) => 4 + set.iter().map(|v| v.len() + 2).sum::<usize>(),
                _ => 12,
            })
            .sum::<usize>()
            + 2
    };
    2 + match piece {
        PieceRef::Window(a) => accs(a),
        PieceRef::Sessions { open, closed } => {
            open.iter().map(|(_, a)| 20 + accs(a)).sum::<usize>()
                + closed.as_ref().map_or(1, |(_, a)| 21 + accs(a))
                + 2
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn varint(&mut self, v: impl VarInt) {
        let mut buf = [0u8; 10];
        let n = v.encode_var(&mut buf);
        self.0.extend_from_slice(&buf[..n]);
    }

    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn bounds(&mut self, b: &WindowBounds) {
        self.varint(b.start);
        self.varint(b.end);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.byte(0),
            Value::Bool(b) => {
                self.byte(1);
                self.byte(u8::from(*b));
            }
            Value::Long(n) => {
                self.byte(2);
                self.varint(*n);
            }
            Value::Double(d) => {
                self.byte(3);
                self.f64(*d);
            }
            Value::String(s) => {
                self.byte(4);
                self.str(s);
            }
        }
    }

    fn opt_value(&mut self, v: &Option<Value>) {
        match v {
            None => self.byte(0),
            Some(v) => {
                self.byte(1);
                self.value(v);
            }
        }
    }

    fn accs(&mut self, accs: &[Acc]) {
        self.len(accs.len());
        for acc in accs {
            self.acc(acc);
        }
    }

    fn acc(&mut self, acc: &Acc) {
        match acc {
            Acc::Count(n) => {
                self.byte(0);
                self.varint(*n);
            }
            Acc::SumLong(n) => {
                self.byte(1);
                self.varint(*n);
            }
            Acc::SumDouble(d) => {
                self.byte(2);
                self.f64(*d);
            }
            Acc::Min(v) => {
                self.byte(3);
                self.opt_value(v);
            }
            Acc::Max(v) => {
                self.byte(4);
                self.opt_value(v);
            }
            Acc::Mean { sum, n } => {
                self.byte(5);
                self.f64(*sum);
                self.varint(*n);
            }
            Acc::Last(last) => {
                self.byte(6);
                match last {
                    None => self.byte(0),
                    Some((time, v)) => {
                        self.byte(1);
                        self.varint(*time);
                        self.value(v);
                    }
                }
            }
            Acc::Distinct(set) => {
                self.byte(7);
                self.len(set.len());
                for v in set.sorted() {
                    self.str(v);
                }
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> StateDecodeError {
        StateDecodeError::Binary { what, at: self.at }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, StateDecodeError> {
        let b = *self.bytes.get(self.at).ok_or_else(|| self.error(what))?;
        self.at += 1;
        Ok(b)
    }

    fn varint<T: VarInt>(&mut self, what: &'static str) -> Result<T, StateDecodeError> {
        let (v, n) = T::decode_var(&self.bytes[self.at..]).ok_or_else(|| self.error(what))?;
        self.at += n;
        Ok(v)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StateDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error(what))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// A list's length, checked against the bytes left (each item takes at least one), so
    /// a corrupt length cannot ask for a huge allocation.
    fn len(&mut self, what: &'static str) -> Result<usize, StateDecodeError> {
        let at = self.at;
        let n: u64 = self.varint(what)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.at)
            .ok_or(StateDecodeError::Binary { what, at })
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, StateDecodeError> {
        let b = self.take(8, what)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, StateDecodeError> {
        let n = self.len(what)?;
        let at = self.at;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| StateDecodeError::Binary {
            what: "a string that is not UTF-8",
            at,
        })
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, StateDecodeError> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => {
                self.at -= 1;
                Err(self.error(what))
            }
        }
    }

    fn piece(&mut self) -> Result<StatePart, StateDecodeError> {
        match self.byte("the piece's kind")? {
            0 => Ok(StatePart::Window(self.accs()?)),
            1 => {
                let n = self.len("the number of open sessions")?;
                let mut open = Vec::with_capacity(n);
                for _ in 0..n {
                    open.push((self.bounds()?, self.accs()?));
                }
                let closed = if self.flag("whether a closed session follows")? {
                    Some((self.bounds()?, self.accs()?))
                } else {
                    None
                };
                Ok(StatePart::Sessions { open, closed })
            }
            _ => {
                self.at -= 1;
                Err(self.error("the piece's kind"))
            }
        }
    }

    fn bounds(&mut self) -> Result<WindowBounds, StateDecodeError> {
        Ok(WindowBounds {
            start: self.varint("a session's start")?,
            end: self.varint("a session's end")?,
        })
    }

    fn value(&mut self) -> Result<Value, StateDecodeError> {
        Ok(match self.byte("a value's type")? {
            0 => Value::Null,
            1 => Value::Bool(self.flag("a boolean")?),
            2 => Value::Long(self.varint("an integer")?),
            3 => Value::Double(self.f64("a float")?),
            4 => Value::String(self.str("a string")?.to_owned()),
            _ => {
                self.at -= 1;
                return Err(self.error("a value's type"));
            }
        })
    }

    fn opt_value(&mut self, what: &'static str) -> Result<Option<Value>, StateDecodeError> {
        Ok(if self.flag(what)? {
            Some(self.value()?)
        } else {
            None
        })
    }

    fn accs(&mut self) -> Result<Vec<Acc>, StateDecodeError> {
        let n = self.len("the number of aggregates")?;
        let mut accs = Vec::with_capacity(n);
        for _ in 0..n {
            accs.push(self.acc()?);
        }
        Ok(accs)
    }

    fn acc(&mut self) -> Result<Acc, StateDecodeError> {
        Ok(match self.byte("an aggregate's kind")? {
            0 => Acc::Count(self.varint("a count")?),
            1 => Acc::SumLong(self.varint("an integer sum")?),
            2 => Acc::SumDouble(self.f64("a float sum")?),
            3 => Acc::Min(self.opt_value("whether a minimum follows")?),
            4 => Acc::Max(self.opt_value("whether a maximum follows")?),
            5 => Acc::Mean {
                sum: self.f64("a mean's sum")?,
                n: self.varint("a mean's count")?,
            },
            6 => Acc::Last(if self.flag("whether a last value follows")? {
                Some((self.varint("a last value's time")?, self.value()?))
            } else {
                None
            }),
            7 => {
                let n = self.len("the number of distinct values")?;
                let mut set = DistinctSet::default();
                for _ in 0..n {
                    set.insert(self.str("a distinct value")?);
                }
                Acc::Distinct(set)
            }
            _ => {
                self.at -= 1;
                return Err(self.error("an aggregate's kind"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(start: i64, end: i64) -> WindowBounds {
        WindowBounds { start, end }
    }

    fn distinct(values: &[&str]) -> Acc {
        let mut set = DistinctSet::default();
        for v in values {
            set.insert(v);
        }
        Acc::Distinct(set)
    }

    /// Every kind of aggregate and value, with edge values.
    fn every_kind() -> Vec<Acc> {
        vec![
            Acc::Count(0),
            Acc::Count(i64::MAX),
            Acc::SumLong(-1),
            Acc::SumLong(i64::MIN),
            Acc::SumDouble(-0.5),
            Acc::SumDouble(f64::MAX),
            Acc::Min(None),
            Acc::Min(Some(Value::Long(-300))),
            Acc::Max(Some(Value::String("zürich \"quoted\"".into()))),
            Acc::Max(Some(Value::Double(1e-300))),
            Acc::Mean { sum: 0.0, n: 0 },
            Acc::Mean { sum: 12.25, n: 7 },
            Acc::Last(None),
            Acc::Last(Some((1_700_000_000_000, Value::Bool(true)))),
            Acc::Last(Some((-5, Value::Null))),
            distinct(&[]),
            distinct(&["\"b\"", "\"a\"", "3"]),
            Acc::Distinct((0..40).fold(DistinctSet::default(), |mut set, i| {
                set.insert(&i.to_string());
                set
            })),
        ]
    }

    fn pieces() -> Vec<StatePart> {
        vec![
            StatePart::Window(vec![]),
            StatePart::Window(every_kind()),
            StatePart::Sessions {
                open: vec![],
                closed: None,
            },
            StatePart::Sessions {
                open: vec![
                    (bounds(1_000, 61_000), vec![Acc::Count(2)]),
                    (bounds(100_000, 160_001), every_kind()),
                ],
                closed: Some((bounds(-60_000, 0), vec![Acc::SumDouble(2.5)])),
            },
        ]
    }

    #[test]
    fn every_piece_reads_back_as_it_was_written() {
        for piece in pieces() {
            let bytes = piece.encode();
            assert_eq!(bytes[0], FORMAT_1);
            assert_eq!(decode(&bytes).unwrap(), piece, "{bytes:?}");
        }
    }

    #[test]
    fn pieces_saved_as_json_by_earlier_versions_are_read() {
        // Text as the JSON format wrote it (captured before format 1 existed).
        let saved = br#"{"Window":[{"Count":3},{"SumDouble":2.5},{"Min":null},{"Max":"x"},{"Mean":{"sum":3.0,"n":2}},{"Last":[10,true]},{"Distinct":["\"a\"","\"b\""]}]}"#;
        assert_eq!(
            decode(saved).unwrap(),
            StatePart::Window(vec![
                Acc::Count(3),
                Acc::SumDouble(2.5),
                Acc::Min(None),
                Acc::Max(Some(Value::String("x".into()))),
                Acc::Mean { sum: 3.0, n: 2 },
                Acc::Last(Some((10, Value::Bool(true)))),
                distinct(&["\"b\"", "\"a\""]),
            ])
        );
        let sessions =
            br#"{"Sessions":{"open":[[{"start":0,"end":60000},[{"Count":1}]]],"closed":null}}"#;
        assert_eq!(
            decode(sessions).unwrap(),
            StatePart::Sessions {
                open: vec![(bounds(0, 60_000), vec![Acc::Count(1)])],
                closed: None,
            }
        );
        // And every piece the JSON format can hold reads back the same as its format 1 form.
        for piece in pieces() {
            let json = serde_json::to_vec(&piece).unwrap();
            assert_eq!(decode(&json).unwrap(), piece);
            assert_eq!(decode(&json).unwrap().encode(), piece.encode());
        }
    }

    #[test]
    fn format_1_is_smaller_than_the_json_it_replaces() {
        for piece in pieces() {
            let (binary, json) = (piece.encode(), serde_json::to_vec(&piece).unwrap());
            assert!(
                binary.len() * 2 < json.len(),
                "{} bytes against {} of JSON",
                binary.len(),
                json.len()
            );
        }
        // A window of a count and an integer sum: 8 bytes.
        let small = StatePart::Window(vec![Acc::Count(3), Acc::SumLong(120)]).encode();
        assert_eq!(small, [FORMAT_1, 0, 2, 0, 6, 1, 0xF0, 0x01]);
    }

    #[test]
    fn equal_sets_give_equal_bytes_whatever_order_their_values_came_in() {
        let a = StatePart::Window(vec![distinct(&["\"x\"", "\"y\"", "\"z\""])]);
        let b = StatePart::Window(vec![distinct(&["\"z\"", "\"x\"", "\"y\""])]);
        assert_eq!(a.encode(), b.encode());
    }

    #[test]
    fn damaged_pieces_are_refused_with_what_and_where() {
        let good = pieces()[3].encode();
        // Every cut short piece is refused, none panics.
        for end in 1..good.len() {
            let err = decode(&good[..end]).unwrap_err();
            assert!(
                matches!(err, StateDecodeError::Binary { at, .. } if at <= end),
                "cut at {end}: {err}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing).unwrap_err().to_string(),
            format!(
                "state piece in binary format 1: bytes after the piece's end at byte {}",
                good.len()
            )
        );
        assert_eq!(
            decode(&[FORMAT_1, 0, 1, 9]).unwrap_err().to_string(),
            "state piece in binary format 1: an aggregate's kind at byte 3"
        );
        // A length larger than what is left is refused before anything is allocated.
        assert_eq!(
            decode(&[FORMAT_1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
                .unwrap_err()
                .to_string(),
            "state piece in binary format 1: the number of aggregates at byte 2"
        );
        assert_eq!(
            decode(&[FORMAT_1, 0, 1, 7, 1, 1, 0xFF])
                .unwrap_err()
                .to_string(),
            "state piece in binary format 1: a string that is not UTF-8 at byte 6"
        );
        assert!(matches!(decode(&[]), Err(StateDecodeError::Empty)));
        assert_eq!(
            decode(&[0x02, 0]).unwrap_err().to_string(),
            "state piece of unknown format (first byte 0x02); written by a newer version?"
        );
        assert!(matches!(
            decode(b"{\"Window\":"),
            Err(StateDecodeError::Json(_))
        ));
    }
}
