//! A seeded simulation of user behaviour.
//!
//! - **Users** `1..=users` with Zipf-skewed activity: user 1 is the most active, a few
//!   users produce most events and there is a long tail. With some probability the next
//!   event continues the previous user's burst, as real sessions do.
//! - **Sessions**: a user's session ends after 30 minutes of event time without activity;
//!   each session has an id.
//! - **Actions**: views far more often than clicks, clicks more than purchases; items are
//!   Zipf-skewed too; purchases carry a log-normal amount (in cents precision).
//! - **Event time** advances steadily from `start_ms` at `events_per_second`; a fraction of
//!   events is jittered back by up to `max_jitter_ms` (out of order but within a typical
//!   watermark delay), and a fraction arrives late by `late_min_ms..max_lateness_ms`.
//!
//! Everything is drawn from one ChaCha8 generator seeded with `seed`, whose output is
//! stable across platforms and versions, so a seed and start time reproduce a run exactly.

use crate::event::UserEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Zipf};
use std::collections::HashMap;

const SESSION_GAP_MS: i64 = 30 * 60 * 1000;
/// Probability that the next event continues the previous user's burst.
const BURST_CONTINUE: f64 = 0.35;
/// The action mix: views, clicks, purchases.
const P_VIEW: f64 = 0.75;
const P_CLICK: f64 = 0.20;

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub users: u32,
    pub items: u32,
    /// Event time of the first event, epoch milliseconds.
    pub start_ms: i64,
    /// How fast event time advances, in events per second of event time.
    pub events_per_second: f64,
    /// Fraction of events that arrive late, `late_min_ms..=max_lateness_ms` behind.
    pub late_fraction: f64,
    pub late_min_ms: i64,
    pub max_lateness_ms: i64,
    /// Fraction of events slightly out of order, up to `max_jitter_ms` behind.
    pub jitter_fraction: f64,
    pub max_jitter_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 1_000,
            items: 10_000,
            start_ms: 0,
            events_per_second: 100.0,
            late_fraction: 0.01,
            late_min_ms: 10_000,
            max_lateness_ms: 60_000,
            jitter_fraction: 0.10,
            max_jitter_ms: 2_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimConfigError {
    #[error("--users must be at least 1")]
    NoUsers,
    #[error("--items must be at least 1")]
    NoItems,
    #[error(
        "the late and out-of-order fractions must each be between 0 and 1, and add up to at most 1"
    )]
    BadFractions,
    #[error("the lateness range {0}..{1} ms is empty or negative")]
    BadLateness(i64, i64),
}

struct Session {
    id: String,
    last_ms: i64,
}

pub struct Simulator {
    config: SimConfig,
    rng: ChaCha8Rng,
    users: Zipf<f64>,
    items: Zipf<f64>,
    amounts: LogNormal<f64>,
    sessions: HashMap<i64, Session>,
    session_counter: u64,
    previous_user: Option<i64>,
    produced: u64,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Result<Self, SimConfigError> {
        if config.users == 0 {
            return Err(SimConfigError::NoUsers);
        }
        if config.items == 0 {
            return Err(SimConfigError::NoItems);
        }
        let fractions_ok = (0.0..=1.0).contains(&config.late_fraction)
            && (0.0..=1.0).contains(&config.jitter_fraction)
            && config.late_fraction + config.jitter_fraction <= 1.0;
        if !fractions_ok {
            return Err(SimConfigError::BadFractions);
        }
        if config.late_min_ms < 0 || config.max_lateness_ms < config.late_min_ms {
            return Err(SimConfigError::BadLateness(
                config.late_min_ms,
                config.max_lateness_ms,
            ));
        }
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            users: Zipf::new(config.users as f64, 1.1).expect("n >= 1 and s > 0"),
            items: Zipf::new(config.items as f64, 1.05).expect("n >= 1 and s > 0"),
            amounts: LogNormal::new(3.0, 0.8).expect("finite parameters"),
            sessions: HashMap::new(),
            session_counter: 0,
            previous_user: None,
            produced: 0,
            config,
        })
    }

    fn nominal_time(&self) -> i64 {
        let step_ms = 1_000.0 / self.config.events_per_second.max(f64::MIN_POSITIVE);
        self.config.start_ms + (self.produced as f64 * step_ms) as i64
    }

    fn session_of(&mut self, user: i64, now: i64) -> String {
        let counter = &mut self.session_counter;
        let session = self.sessions.entry(user).or_insert_with(|| {
            *counter += 1;
            Session {
                id: format!("s{user}-{counter}"),
                last_ms: now,
            }
        });
        if now - session.last_ms > SESSION_GAP_MS {
            *counter += 1;
            session.id = format!("s{user}-{counter}");
        }
        session.last_ms = session.last_ms.max(now);
        session.id.clone()
    }
}

impl Iterator for Simulator {
    type Item = UserEvent;

    fn next(&mut self) -> Option<UserEvent> {
        let nominal = self.nominal_time();
        let user = match self.previous_user {
            Some(u) if self.rng.random_bool(BURST_CONTINUE) => u,
            _ => self.users.sample(&mut self.rng) as i64,
        };
        self.previous_user = Some(user);
        let roll: f64 = self.rng.random();
        let action = if roll < P_VIEW {
            "view"
        } else if roll < P_VIEW + P_CLICK {
            "click"
        } else {
            "purchase"
        };
        let item_id = self.items.sample(&mut self.rng) as i64;
        let amount = (action == "purchase")
            .then(|| (self.amounts.sample(&mut self.rng) * 100.0).round() / 100.0);
        let lateness_roll: f64 = self.rng.random();
        let timestamp = if lateness_roll < self.config.late_fraction {
            nominal
                - self
                    .rng
                    .random_range(self.config.late_min_ms..=self.config.max_lateness_ms)
        } else if lateness_roll < self.config.late_fraction + self.config.jitter_fraction {
            nominal - self.rng.random_range(0..=self.config.max_jitter_ms)
        } else {
            nominal
        };
        let session_id = Some(self.session_of(user, nominal));
        self.produced += 1;
        Some(UserEvent {
            user_id: user,
            action_type: action.to_string(),
            item_id,
            amount,
            timestamp,
            session_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(config: SimConfig, n: usize) -> Vec<UserEvent> {
        Simulator::new(config).unwrap().take(n).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        let a = events(SimConfig::default(), 500);
        assert_eq!(a, events(SimConfig::default(), 500));
        let b = events(
            SimConfig {
                seed: 43,
                ..SimConfig::default()
            },
            500,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn activity_is_skewed_towards_a_few_users() {
        let evs = events(SimConfig::default(), 20_000);
        let mut per_user: HashMap<i64, usize> = HashMap::new();
        for e in &evs {
            *per_user.entry(e.user_id).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_user.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_1_percent: usize = counts.iter().take(10).sum();
        assert!(
            top_1_percent * 100 / evs.len() > 25,
            "top 10 of 1000 users: {top_1_percent} of {}",
            evs.len()
        );
        assert!(
            per_user.len() > 300,
            "a long tail of users: {}",
            per_user.len()
        );
        assert!(
            per_user[&1] >= counts[0] / 2,
            "user 1 is among the most active"
        );
    }

    #[test]
    fn views_outnumber_clicks_outnumber_purchases_and_only_purchases_have_amounts() {
        let evs = events(SimConfig::default(), 20_000);
        let count = |a: &str| evs.iter().filter(|e| e.action_type == a).count();
        let (views, clicks, purchases) = (count("view"), count("click"), count("purchase"));
        assert!(
            views > 3 * clicks && clicks > 2 * purchases && purchases > 0,
            "{views} {clicks} {purchases}"
        );
        for e in &evs {
            assert_eq!(e.amount.is_some(), e.action_type == "purchase", "{e:?}");
            if let Some(a) = e.amount {
                assert!(
                    a > 0.0 && ((a * 100.0).round() - a * 100.0).abs() < 1e-6,
                    "{a}"
                );
            }
        }
    }

    #[test]
    fn event_times_advance_with_the_configured_fractions_late_or_out_of_order() {
        let config = SimConfig {
            start_ms: 1_700_000_000_000,
            events_per_second: 1_000.0,
            late_fraction: 0.05,
            jitter_fraction: 0.10,
            ..SimConfig::default()
        };
        let evs = events(config.clone(), 20_000);
        let mut late = 0;
        let mut jittered = 0;
        for (i, e) in evs.iter().enumerate() {
            let nominal = config.start_ms + i as i64;
            let behind = nominal - e.timestamp;
            assert!((0..=config.max_lateness_ms).contains(&behind), "{behind}");
            if behind >= config.late_min_ms {
                late += 1;
            } else if behind > 0 {
                jittered += 1;
            }
        }
        let share = |n: usize| n as f64 / evs.len() as f64;
        assert!(
            (0.04..0.06).contains(&share(late)),
            "late share {}",
            share(late)
        );
        assert!(
            (0.08..0.11).contains(&share(jittered)),
            "jittered share {}",
            share(jittered)
        );
    }

    #[test]
    fn sessions_change_after_thirty_minutes_of_inactivity() {
        let mut sim = Simulator::new(SimConfig::default()).unwrap();
        let first = sim.session_of(7, 0);
        assert_eq!(
            sim.session_of(7, SESSION_GAP_MS),
            first,
            "exactly the gap: same session"
        );
        let next = sim.session_of(7, 2 * SESSION_GAP_MS + 1);
        assert_ne!(next, first);
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let bad = |c: SimConfig| Simulator::new(c).err().unwrap().to_string();
        assert!(bad(SimConfig {
            users: 0,
            ..SimConfig::default()
        })
        .contains("--users"));
        assert!(bad(SimConfig {
            late_fraction: 0.8,
            jitter_fraction: 0.5,
            ..SimConfig::default()
        })
        .contains("fractions"));
    }
}
