//! Window arithmetic: which windows an event time belongs to.
//!
//! All times are epoch milliseconds (`i64`, may be zero or negative) and windows are
//! half-open intervals `[start, end)`. Window starts are aligned to the epoch, the same
//! way Flink aligns its TUMBLE and HOP windows, so the processor and the compiled Flink SQL
//! put every event in the same windows.
//!
//! - Tumbling `size`: one window, `[floor(t / size) * size, +size)`.
//! - Sliding `size`, `step` (size a multiple of step): every window of length `size` whose
//!   start is a multiple of `step` and that contains `t`; there are `size / step` of them.
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

    /// The windows that contain event time `t`, in ascending order of start.
    ///
    /// Session windows are data-dependent: this returns the window the event opens on its
    /// own, to be merged with a [`SessionSet`].
    pub fn assign(&self, t: i64) -> Vec<WindowBounds> {
        match *self {
            Window::Tumbling { size } => vec![tumbling_window(t, size.0)],
            Window::Sliding { size, step } => sliding_windows(t, size.0, step.0).collect(),
            Window::Session { gap } => vec![WindowBounds {
                start: t,
                end: t.saturating_add(gap.0),
            }],
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

/// The tumbling window of length `size` that contains `t`.
pub fn tumbling_window(t: i64, size: i64) -> WindowBounds {
    assert!(size > 0, "window size must be positive");
    let start = t - t.rem_euclid(size);
    WindowBounds {
        start,
        end: start + size,
    }
}

/// All sliding windows of length `size`, starting on multiples of `step`, that contain `t`.
pub fn sliding_windows(t: i64, size: i64, step: i64) -> impl Iterator<Item = WindowBounds> {
    assert!(
        size > 0 && step > 0,
        "window size and step must be positive"
    );
    let last_start = t - t.rem_euclid(step);
    // Starts s with t - size < s <= t, aligned to step.
    let count = (size + step - 1) / step;
    (0..count).rev().filter_map(move |k| {
        let start = last_start - k * step;
        (start + size > t).then_some(WindowBounds {
            start,
            end: start + size,
        })
    })
}

/// The sliding window that ends at the latest step boundary at or before `t`: the window a
/// sliding feature serves once the watermark (or the latest event) has reached `t`.
pub fn sliding_window_ending_at_or_before(t: i64, size: i64, step: i64) -> WindowBounds {
    let end = t - t.rem_euclid(step);
    WindowBounds {
        start: end - size,
        end,
    }
}

/// The open sessions of one key, kept sorted and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSet {
    sessions: Vec<WindowBounds>,
}

/// What inserting an event into a [`SessionSet`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInsert {
    /// The session that now holds the event.
    pub session: WindowBounds,
    /// The sessions that existed before and were merged into `session` (empty when the
    /// event fell in a new session; one element when it only extended a session).
    pub merged: Vec<WindowBounds>,
}

impl SessionSet {
    pub fn sessions(&self) -> &[WindowBounds] {
        &self.sessions
    }

    /// Adds an event at `t` with inactivity gap `gap`, merging every session it touches.
    pub fn insert(&mut self, t: i64, gap: i64) -> SessionInsert {
        let mut session = WindowBounds {
            start: t,
            end: t.saturating_add(gap),
        };
        let mut merged = Vec::new();
        self.sessions.retain(|s| {
            if s.touches(&session) {
                merged.push(*s);
                false
            } else {
                true
            }
        });
        for m in &merged {
            session = session.cover(m);
        }
        let at = self.sessions.partition_point(|s| s.start < session.start);
        self.sessions.insert(at, session);
        SessionInsert { session, merged }
    }

    /// Removes and returns the sessions that end at or before `watermark`: they are closed.
    pub fn close_until(&mut self, watermark: i64) -> Vec<WindowBounds> {
        let split = self.sessions.partition_point(|s| s.end <= watermark);
        self.sessions.drain(..split).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64, end: i64) -> WindowBounds {
        WindowBounds { start, end }
    }

    #[test]
    fn tumbling_puts_boundary_events_in_the_window_they_start() {
        assert_eq!(tumbling_window(0, 60_000), w(0, 60_000));
        assert_eq!(tumbling_window(59_999, 60_000), w(0, 60_000));
        assert_eq!(tumbling_window(60_000, 60_000), w(60_000, 120_000));
    }

    #[test]
    fn tumbling_handles_negative_times() {
        assert_eq!(tumbling_window(-1, 60_000), w(-60_000, 0));
        assert_eq!(tumbling_window(-60_000, 60_000), w(-60_000, 0));
        assert_eq!(tumbling_window(-60_001, 60_000), w(-120_000, -60_000));
    }

    #[test]
    fn sliding_assigns_size_over_step_windows() {
        // 10 s windows every 2 s: an event at 11 s is in windows starting 2, 4, 6, 8, 10 s.
        let got: Vec<_> = sliding_windows(11_000, 10_000, 2_000).collect();
        assert_eq!(
            got,
            vec![
                w(2_000, 12_000),
                w(4_000, 14_000),
                w(6_000, 16_000),
                w(8_000, 18_000),
                w(10_000, 20_000)
            ]
        );
        for win in &got {
            assert!(win.contains(11_000));
        }
    }

    #[test]
    fn sliding_boundary_event_is_excluded_from_the_window_it_ends() {
        let got: Vec<_> = sliding_windows(10_000, 10_000, 5_000).collect();
        assert_eq!(got, vec![w(5_000, 15_000), w(10_000, 20_000)]);
    }

    #[test]
    fn sliding_with_step_equal_to_size_is_tumbling() {
        for t in [-7_000, -1, 0, 1, 59_999, 60_000, 123_456] {
            let got: Vec<_> = sliding_windows(t, 60_000, 60_000).collect();
            assert_eq!(got, vec![tumbling_window(t, 60_000)], "t = {t}");
        }
    }

    #[test]
    fn sliding_handles_negative_times() {
        let got: Vec<_> = sliding_windows(-1, 4, 2).collect();
        assert_eq!(got, vec![w(-4, 0), w(-2, 2)]);
    }

    #[test]
    fn sliding_served_window_ends_at_latest_step_boundary() {
        assert_eq!(
            sliding_window_ending_at_or_before(25_000, 60_000, 10_000),
            w(-40_000, 20_000)
        );
        assert_eq!(
            sliding_window_ending_at_or_before(30_000, 60_000, 10_000),
            w(-30_000, 30_000)
        );
    }

    #[test]
    fn sessions_open_extend_and_merge() {
        let mut s = SessionSet::default();
        let first = s.insert(1_000, 500);
        assert_eq!(
            first,
            SessionInsert {
                session: w(1_000, 1_500),
                merged: vec![]
            }
        );
        // Far apart: a second session.
        s.insert(3_000, 500);
        assert_eq!(s.sessions(), &[w(1_000, 1_500), w(3_000, 3_500)]);
        // Inside the first: extends it.
        let ext = s.insert(1_200, 500);
        assert_eq!(ext.session, w(1_000, 1_700));
        assert_eq!(ext.merged, vec![w(1_000, 1_500)]);
        // Bridges the gap between both: one session.
        let bridge = s.insert(2_600, 500);
        assert_eq!(bridge.session, w(2_600, 3_500));
        let bridge = s.insert(1_700, 900);
        assert_eq!(bridge.session, w(1_000, 3_500));
        assert_eq!(bridge.merged.len(), 2);
        assert_eq!(s.sessions(), &[w(1_000, 3_500)]);
    }

    #[test]
    fn session_event_exactly_gap_after_the_last_touches_and_merges() {
        let mut s = SessionSet::default();
        s.insert(0, 1_000);
        let next = s.insert(1_000, 1_000);
        assert_eq!(next.session, w(0, 2_000));
        assert_eq!(s.sessions().len(), 1);
    }

    #[test]
    fn out_of_order_session_events_merge_backwards() {
        let mut s = SessionSet::default();
        s.insert(10_000, 1_000);
        let early = s.insert(9_500, 1_000);
        assert_eq!(early.session, w(9_500, 11_000));
        s.insert(-5_000, 1_000);
        assert_eq!(s.sessions(), &[w(-5_000, -4_000), w(9_500, 11_000)]);
    }

    #[test]
    fn closing_sessions_removes_only_those_ended_by_the_watermark() {
        let mut s = SessionSet::default();
        s.insert(0, 100);
        s.insert(1_000, 100);
        assert_eq!(s.close_until(99), vec![]);
        assert_eq!(s.close_until(100), vec![w(0, 100)]);
        assert_eq!(s.sessions(), &[w(1_000, 1_100)]);
    }

    #[test]
    fn window_slugs_name_the_window() {
        let d = DurationMs;
        assert_eq!(Window::Tumbling { size: d(60_000) }.slug(), "tumble_1m");
        assert_eq!(
            Window::Sliding {
                size: d(600_000),
                step: d(10_000)
            }
            .slug(),
            "hop_10m_10s"
        );
        assert_eq!(Window::Session { gap: d(1_800_000) }.slug(), "session_30m");
    }
}
