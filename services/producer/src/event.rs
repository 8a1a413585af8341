//! The user event and its schema versions.

use serde::{Deserialize, Serialize};

/// Version 1: user_id, action_type, item_id, amount, timestamp.
pub const SCHEMA_V1: &str = include_str!("../../../features/schemas/user_event.v1.avsc");
/// Version 2 adds an optional `session_id` (default null), so v1 and v2 events resolve to
/// the v2 reader schema.
pub const SCHEMA_V2: &str = include_str!("../../../features/schemas/user_event.v2.avsc");

/// One user action, as the `user_events` source defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEvent {
    pub user_id: i64,
    /// `click`, `view` or `purchase`.
    pub action_type: String,
    pub item_id: i64,
    /// Purchase amount; `None` for clicks and views.
    #[serde(default)]
    pub amount: Option<f64>,
    /// Event time, epoch milliseconds.
    pub timestamp: i64,
    /// The browsing session (written only with schema version 2).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A user event as schema version 1 writes it: without `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserEventV1<'a> {
    pub user_id: i64,
    pub action_type: &'a str,
    pub item_id: i64,
    pub amount: Option<f64>,
    pub timestamp: i64,
}

impl<'a> From<&'a UserEvent> for UserEventV1<'a> {
    fn from(e: &'a UserEvent) -> Self {
        Self {
            user_id: e.user_id,
            action_type: &e.action_type,
            item_id: e.item_id,
            amount: e.amount,
            timestamp: e.timestamp,
        }
    }
}

/// Which schema version events are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaVersion {
    V1,
    V2,
}

impl SchemaVersion {
    pub fn schema(self) -> &'static str {
        match self {
            SchemaVersion::V1 => SCHEMA_V1,
            SchemaVersion::V2 => SCHEMA_V2,
        }
    }

    /// The event as a reader of this version sees it (v1 has no session).
    pub fn project(self, event: &UserEvent) -> UserEvent {
        match self {
            SchemaVersion::V1 => UserEvent {
                session_id: None,
                ..event.clone()
            },
            SchemaVersion::V2 => event.clone(),
        }
    }
}
