//! Events from a JSON Lines file: one `UserEvent` object per line.
//!
//! ```json
//! {"user_id": 1, "action_type": "click", "item_id": 42, "amount": null, "timestamp": 1700000000000}
//! ```
//!
//! Blank lines are skipped. A line that is not a valid event yields an error naming the
//! line and what is wrong; the caller decides whether to skip it.

use crate::event::UserEvent;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}: not a user event: {reason}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

pub struct Replay {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    line: usize,
}

impl Replay {
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        let file = File::open(path).map_err(|cause| ReplayError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            lines: BufReader::new(file).lines(),
            line: 0,
        })
    }
}

impl Iterator for Replay {
    type Item = Result<UserEvent, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(cause) => {
                    return Some(Err(ReplayError::Io {
                        path: self.path.clone(),
                        cause,
                    }))
                }
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&text).map_err(|e| ReplayError::BadLine {
                    path: self.path.clone(),
                    line: self.line,
                    reason: e.to_string(),
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"user_id\":1,\"action_type\":\"click\",\"item_id\":2,\"timestamp\":5}\n\n{\"user_id\":\"x\"}\n{\"user_id\":3,\"action_type\":\"purchase\",\"item_id\":4,\"amount\":9.5,\"timestamp\":6,\"session_id\":\"s\"}\n",
        )
        .unwrap();
        let items: Vec<_> = Replay::open(&path).unwrap().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().user_id, 1);
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("events.jsonl:3: not a user event"), "{err}");
        assert_eq!(items[2].as_ref().unwrap().amount, Some(9.5));
    }
}
