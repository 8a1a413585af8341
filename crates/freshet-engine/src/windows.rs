//! The time arithmetic of each window kind, in one place: which window or pane an event
//! time falls in, which one is served at a clock, and when each timer fires. The engine
//! (`lib.rs`) keeps the state and calls these; nothing else derives them.
//!
//! Times are epoch milliseconds; windows are aligned to the epoch (as Flink's are) and
//! half-open, `[start, end)`. `delay` is the source's watermark delay: the watermark is
//! `clock - delay`.

/// `t` rounded down to a multiple of `size` (also for negative times).
pub fn floor_to(t: i64, size: i64) -> i64 {
    t - t.rem_euclid(size)
}

/// Tumbling windows of `size`: the value served is the last **closed** window's.
pub mod tumbling {
    use super::floor_to;

    /// The start of the window `t` falls in.
    pub fn window_start(t: i64, size: i64) -> i64 {
        floor_to(t, size)
    }

    /// The start of the window served at `watermark`: the last one that closed, ending at
    /// `floor(watermark / size) * size`. Windows starting before it can be dropped.
    pub fn served_start(watermark: i64, size: i64) -> i64 {
        floor_to(watermark, size) - size
    }

    /// The two timers of the window starting at `start`: when it starts being served
    /// (the watermark passes its end) and when the next one replaces it.
    pub fn timers(start: i64, size: i64, delay: i64) -> [i64; 2] {
        [start + size + delay, start + 2 * size + delay]
    }

    /// The starts of the windows whose timers (see [`timers`]) fire at `at`.
    pub fn windows_with_timer_at(at: i64, size: i64, delay: i64) -> [i64; 2] {
        [at - delay - size, at - delay - 2 * size]
    }
}

/// Sliding windows of `size` every `step`, kept as panes of `step`: the value served is the
/// step-aligned window containing the latest event time.
pub mod sliding {
    use super::floor_to;

    /// The start of the pane `t` falls in.
    pub fn pane_start(t: i64, step: i64) -> i64 {
        floor_to(t, step)
    }

    /// The end of the window served at `clock`: `floor(clock / step) * step + step`.
    pub fn served_end(clock: i64, step: i64) -> i64 {
        floor_to(clock, step) + step
    }

    /// The start of the window served at `clock`; panes starting before it can be dropped,
    /// and an event whose pane starts before it no longer counts.
    pub fn served_start(clock: i64, size: i64, step: i64) -> i64 {
        served_end(clock, step) - size
    }

    /// When the pane starting at `pane` leaves every window that can still be served.
    pub fn pane_timer(pane: i64, size: i64) -> i64 {
        pane + size
    }
}

/// Session windows: events closer than `gap` merge into one session; the value served is
/// the latest closed session's, until the view's ttl has passed.
pub mod session {
    use freshet_core::window::WindowBounds;

    /// The session an event at `t` opens on its own.
    pub fn of_event(t: i64, gap: i64) -> WindowBounds {
        WindowBounds {
            start: t,
            end: t.saturating_add(gap),
        }
    }

    /// When the session closes: the first clock whose watermark is past its end.
    pub fn close_timer(session: &WindowBounds, delay: i64) -> i64 {
        session.end + delay + 1
    }

    /// When the closed session stops being served: once the watermark is more than the
    /// view's ttl past its end.
    pub fn expiry_timer(session: &WindowBounds, delay: i64, ttl: i64) -> i64 {
        close_timer(session, delay).saturating_add(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_serves_the_last_closed_window_and_its_timers_find_it_again() {
        let (size, delay) = (60_000, 5_000);
        assert_eq!(tumbling::window_start(-1, size), -60_000);
        assert_eq!(tumbling::window_start(119_999, size), 60_000);
        // At watermark 125,000 the window [60,000, 120,000) is the last closed one.
        assert_eq!(tumbling::served_start(125_000, size), 60_000);
        assert_eq!(tumbling::served_start(119_999, size), 0);
        let [served, replaced] = tumbling::timers(60_000, size, delay);
        assert_eq!((served, replaced), (125_000, 185_000));
        assert!(tumbling::windows_with_timer_at(served, size, delay).contains(&60_000));
        assert!(tumbling::windows_with_timer_at(replaced, size, delay).contains(&60_000));
        assert_eq!(tumbling::served_start(served - delay, size), 60_000);
        assert_eq!(tumbling::served_start(replaced - delay, size), 120_000);
    }

    #[test]
    fn sliding_serves_the_window_of_the_latest_event_and_drops_panes_when_they_leave_it() {
        let (size, step) = (600_000, 10_000);
        assert_eq!(sliding::pane_start(25_000, step), 20_000);
        assert_eq!(sliding::served_end(25_000, step), 30_000);
        assert_eq!(sliding::served_start(25_000, size, step), -570_000);
        // A pane's timer is the first clock at which it is out of the served window.
        let pane = 20_000;
        let at = sliding::pane_timer(pane, size);
        assert!(sliding::served_start(at, size, step) > pane);
        assert!(sliding::served_start(at - 1, size, step) <= pane);
    }

    #[test]
    fn a_session_closes_once_the_watermark_passes_its_end_and_expires_a_ttl_later() {
        let s = session::of_event(1_000, 500);
        assert_eq!((s.start, s.end), (1_000, 1_500));
        assert_eq!(session::close_timer(&s, 100), 1_601);
        assert_eq!(session::expiry_timer(&s, 100, 3_600_000), 3_601_601);
        assert_eq!(session::expiry_timer(&s, 100, i64::MAX), i64::MAX);
    }
}
