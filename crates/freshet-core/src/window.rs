//! Windows as declared: the kind and its durations ([`Window`]), and an interval of event
//! time ([`WindowBounds`]).
//!
//! All times are epoch milliseconds (`i64`, may be zero or negative) and windows are
//! half-open intervals `[start, end)`, aligned to the epoch the way Flink aligns its
//! TUMBLE and HOP windows. Which window an event falls in, which is served and when each
//! closes is the engine's (`freshet_engine::windows`), written there once.
//!
//! - Tumbling `size`: one window, `[floor(t / size) * size, +size)`.
//! - Sliding `size`, `step` (size a multiple of step): every window of length `size` whose
//!   start is a multiple of `step` and that contains `t`.
//! - Session `gap`: an event opens `[t, t + gap)`; sessions that overlap or touch merge,
//!   as in Flink (an event exactly `gap` after the previous one extends the session).

use crate::duration::DurationMs;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The window of a feature, as declared in its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Tumbling { size: DurationMs },
    Sliding { size: DurationMs, step: DurationMs },
    Session { gap: DurationMs },
}

/// A half-open interval of event time, `[start, end)` in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowBounds {
    pub start: i64,
    pub end: i64,
}

impl WindowBounds {
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    /// Overlapping or touching: the condition under which two sessions merge.
    pub fn touches(&self, other: &WindowBounds) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn cover(&self, other: &WindowBounds) -> WindowBounds {
        WindowBounds {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl Window {
    /// A short, stable name for the window, used to group features that share a window
    /// (e.g. `tumble_1m`, `hop_10m_10s`, `session_30m`).
    pub fn slug(&self) -> String {
        match self {
            Window::Tumbling { size } => format!("tumble_{size}"),
            Window::Sliding { size, step } => format!("hop_{size}_{step}"),
            Window::Session { gap } => format!("session_{gap}"),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Tumbling { size } => write!(f, "tumbling {size}"),
            Window::Sliding { size, step } => write!(f, "sliding {size} every {step}"),
            Window::Session { gap } => write!(f, "session gap {gap}"),
        }
    }
}
