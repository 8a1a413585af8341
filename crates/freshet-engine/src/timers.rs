//! A partition engine's timers: when to look at an entity's state in a view again (to
//! serve a window that closed, drop a pane that left the sliding window, close a session).
//!
//! Timers are kept by time, each time with the list of (view, slot, session) due then.
//! Many entities share a time: every entity with an event in a pane gets a timer at the
//! pane's end, every entity with a window gets one at its end. A set ordered by the whole
//! (time, view, slot, session) tuple, as before, searched through tens of thousands of
//! entries for every new pane or window (a tenth of the engine's instructions, per
//! cachegrind); the map by time holds a few hundred times, and a timer is a push to its
//! time's list.
//!
//! The set also held each timer once. Here a timer set again before it fires is listed
//! twice, and the lists are sorted and rid of repeats when they fall due: the timers then
//! fire once each, in the set's order.

use super::entities::Slot;
use std::collections::BTreeMap;

/// (view, slot, whether it is a session's)
type Due = (u32, Slot, bool);

#[derive(Debug, Default)]
pub(super) struct Timers {
    by_time: BTreeMap<i64, Vec<Due>>,
}

impl Timers {
    pub fn insert(&mut self, (at, view, slot, session): (i64, u32, Slot, bool)) {
        self.by_time
            .entry(at)
            .or_default()
            .push((view, slot, session));
    }

    /// The earliest time with timers, if it is at or before `clock`, and its timers, each
    /// once, in order; they leave the set. Timers set while these are handled go to their
    /// times' lists, a list for this time again included.
    pub fn pop_due(&mut self, clock: i64) -> Option<(i64, Vec<Due>)> {
        let first = self.by_time.first_entry()?;
        if *first.key() > clock {
            return None;
        }
        let (at, mut due) = first.remove_entry();
        due.sort_unstable();
        due.dedup();
        Some((at, due))
    }

    /// Every timer once, ordered by time, view, slot, kind.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (i64, u32, Slot, bool)> {
        let mut all: Vec<_> = self
            .by_time
            .iter()
            .flat_map(|(&at, due)| due.iter().map(move |&(v, s, k)| (at, v, s, k)))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.iter().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_by_time_each_once_in_order() {
        let mut timers = Timers::default();
        for t in [(20, 0, 5, false), (10, 1, 2, true), (10, 0, 9, false)] {
            timers.insert(t);
        }
        timers.insert((10, 1, 2, true));
        assert_eq!(timers.len(), 3, "a timer set twice is one timer");
        assert_eq!(timers.pop_due(9), None, "nothing due before 10");
        assert_eq!(
            timers.pop_due(15),
            Some((10, vec![(0, 9, false), (1, 2, true)]))
        );
        assert_eq!(timers.pop_due(15), None, "20 is not due at 15");
        timers.insert((12, 0, 1, false));
        assert_eq!(timers.pop_due(30), Some((12, vec![(0, 1, false)])));
        assert_eq!(timers.pop_due(30), Some((20, vec![(0, 5, false)])));
        assert_eq!(timers.pop_due(30), None);
        assert_eq!(timers.len(), 0);
    }
}
