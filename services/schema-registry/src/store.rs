//! The registry's state and its durable journal.
//!
//! Every change (a schema registered under a subject, a version deleted, a compatibility
//! level set) is appended to a JSON Lines journal and synced to disk before it is
//! acknowledged; on start the journal is replayed. This is the same design as Confluent's
//! registry, which keeps its log in a compacted Kafka topic; we keep it in a file because
//! the local broker (tansu's memory engine) forgets every topic when it stops, which would
//! silently renumber schemas that data on disk (processor state, backfill files) still
//! refers to. A file also lets the registry start before, and without, a broker.
//!
//! A crash can leave at most a partial last line; it was never acknowledged, so replay
//! drops it (and truncates it away). Any other unreadable line stops the start-up with
//! its line number: the journal is the registry's memory and must not be guessed at.

use crate::compat::CompatibilityLevel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Register {
        subject: String,
        version: u32,
        id: u32,
        schema: String,
    },
    DeleteVersion {
        subject: String,
        version: u32,
        permanent: bool,
    },
    SetCompatibility {
        /// `None` for the global level.
        subject: Option<String>,
        /// `None` removes a subject's own level.
        level: Option<CompatibilityLevel>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubjectVersion {
    pub version: u32,
    pub id: u32,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub versions: Vec<SubjectVersion>,
    /// Highest version ever given, so numbers are never reused after a permanent delete.
    pub last_version: u32,
    pub compatibility: Option<CompatibilityLevel>,
}

impl Subject {
    pub fn live_versions(&self) -> impl Iterator<Item = &SubjectVersion> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    pub fn is_live(&self) -> bool {
        self.live_versions().next().is_some()
    }
}

/// The registry's state, as rebuilt from the journal.
#[derive(Debug, Default)]
pub struct State {
    /// Schema text (normalised JSON) by global id.
    pub schemas: BTreeMap<u32, String>,
    /// Global id by normalised schema text: the same schema always gets the same id.
    pub ids: HashMap<String, u32>,
    pub subjects: BTreeMap<String, Subject>,
    pub global_compatibility: CompatibilityLevel,
}

impl State {
    pub fn next_id(&self) -> u32 {
        self.schemas.keys().next_back().map_or(1, |id| id + 1)
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Register {
                subject,
                version,
                id,
                schema,
            } => {
                self.schemas.insert(*id, schema.clone());
                self.ids.insert(schema.clone(), *id);
                let s = self.subjects.entry(subject.clone()).or_default();
                s.versions.push(SubjectVersion {
                    version: *version,
                    id: *id,
                    deleted: false,
                });
                s.last_version = s.last_version.max(*version);
            }
            Change::DeleteVersion {
                subject,
                version,
                permanent,
            } => {
                if let Some(s) = self.subjects.get_mut(subject) {
                    if *permanent {
                        s.versions.retain(|v| v.version != *version);
                    } else if let Some(v) = s.versions.iter_mut().find(|v| v.version == *version) {
                        v.deleted = true;
                    }
                }
            }
            Change::SetCompatibility {
                subject: None,
                level,
            } => {
                self.global_compatibility = level.unwrap_or_default();
            }
            Change::SetCompatibility {
                subject: Some(subject),
                level,
            } => {
                self.subjects
                    .entry(subject.clone())
                    .or_default()
                    .compatibility = *level;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the schema journal {}: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the schema journal {} is damaged at line {line}: {reason}; restore it from a backup or move it away to start empty", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot write to the schema journal {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// The state plus the journal it is persisted to.
pub struct Store {
    pub state: State,
    file: File,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the journal at `path` and replays it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |cause| StoreError::Open {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let mut state = State::default();
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(open_err)?;
            if read == 0 {
                break;
            }
            number += 1;
            if !line.ends_with('\n') {
                tracing::warn!(
                    journal = %path.display(),
                    line = number,
                    "dropping a partial last journal entry left by a crash"
                );
                break;
            }
            let change: Change =
                serde_json::from_str(line.trim_end()).map_err(|e| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    line: number,
                    reason: e.to_string(),
                })?;
            state.apply(&change);
            good_len += read as u64;
        }
        drop(reader);
        if file.metadata().map_err(open_err)?.len() != good_len {
            file.set_len(good_len).map_err(open_err)?;
            file.seek(SeekFrom::End(0)).map_err(open_err)?;
        }
        Ok(Self {
            state,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes the change durably, then applies it.
    pub fn commit(&mut self, change: Change) -> Result<(), StoreError> {
        let mut line = serde_json::to_string(&change).expect("changes serialise");
        line.push('\n');
        let write_err = |cause| StoreError::Write {
            path: self.path.clone(),
            cause,
        };
        self.file.write_all(line.as_bytes()).map_err(write_err)?;
        self.file.sync_data().map_err(write_err)?;
        self.state.apply(&change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(subject: &str, version: u32, id: u32) -> Change {
        Change::Register {
            subject: subject.into(),
            version,
            id,
            schema: format!("\"schema{id}\""),
        }
    }

    #[test]
    fn replays_the_journal_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut store = Store::open(&path).unwrap();
            store.commit(register("a", 1, 1)).unwrap();
            store.commit(register("a", 2, 2)).unwrap();
            store
                .commit(Change::DeleteVersion {
                    subject: "a".into(),
                    version: 1,
                    permanent: false,
                })
                .unwrap();
            store
                .commit(Change::SetCompatibility {
                    subject: None,
                    level: Some(CompatibilityLevel::Full),
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let a = &store.state.subjects["a"];
        assert_eq!(
            a.live_versions().map(|v| v.version).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(store.state.global_compatibility, CompatibilityLevel::Full);
        assert_eq!(store.state.next_id(), 3);
    }

    #[test]
    fn drops_a_partial_last_line_and_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut store = Store::open(&path).unwrap();
            store.commit(register("a", 1, 1)).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"register\",\"subj").unwrap();
        drop(f);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.state.next_id(), 2);
        store.commit(register("a", 2, 2)).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.state.subjects["a"].versions.len(), 2);
    }

    #[test]
    fn refuses_a_damaged_journal_with_the_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, "{\"op\":\"register\",\"subject\":\"a\",\"version\":1,\"id\":1,\"schema\":\"x\"}\nnot json\n{}\n").unwrap();
        let err = Store::open(&path)
            .err()
            .expect("a damaged journal is refused");
        assert!(matches!(err, StoreError::Corrupt { line: 2, .. }), "{err}");
    }
}
