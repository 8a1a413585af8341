//! History recomputed from events by the processor's engine (through backfill's replay):
//! each spine row is answered from its partition's engine at the moment the partition's
//! clock is about to pass the row's time, so no event after it can reach its values.
//!
//! Only the spine's entities are asked for ([`PartitionEngine::take_update`]): the update
//! a drain would emit for the row's entity, if it changed since it was last asked, else
//! the values it had then. Draining every changed entity before each due row built
//! updates for all the entities the input touched, most of them in no row.

use crate::asof::{Answers, AsOf};
use crate::request::RequestedView;
use crate::spine::Spine;
use freshet_backfill::LaneObserver;
use freshet_engine::PartitionEngine;
use std::collections::HashMap;

/// The spine rows of one input partition and the latest values of its entities.
#[derive(Default)]
struct LaneRows {
    /// (time, spine row), by time.
    rows: Vec<(i64, u32)>,
    /// The next row to answer.
    next: usize,
    /// Per entity of these rows, per requested view: the latest update drained so far.
    latest: HashMap<String, Vec<Option<AsOf>>>,
}

/// Answers spine rows while history goes through the engines ([`LaneObserver`]).
pub struct Recompute<'a> {
    views: &'a [RequestedView],
    spine: &'a Spine,
    /// Per source topic: the requested views it feeds and its lanes by partition.
    topics: HashMap<String, (Vec<usize>, Vec<LaneRows>)>,
    /// Per requested view: its position among the engines' views (all engines share
    /// one list), found the first time an engine is seen.
    engine_views: Option<Vec<Option<usize>>>,
    answers: Answers,
}

impl<'a> Recompute<'a> {
    /// `partitions` gives each requested view's topic's partition count: a row goes to
    /// the partition its entity's events are in (records are keyed by entity).
    pub fn new(
        views: &'a [RequestedView],
        spine: &'a Spine,
        partitions: impl Fn(&str) -> i32,
    ) -> Self {
        let mut topics: HashMap<String, (Vec<usize>, Vec<LaneRows>)> = HashMap::new();
        for (v, view) in views.iter().enumerate() {
            let (topic_views, lanes) = topics.entry(view.topic.clone()).or_insert_with(|| {
                let count = partitions(&view.topic);
                (
                    Vec::new(),
                    (0..count).map(|_| LaneRows::default()).collect(),
                )
            });
            topic_views.push(v);
            if topic_views.len() > 1 {
                continue;
            }
            for (row, (entity, &time)) in spine.entities.iter().zip(&spine.times).enumerate() {
                let p = freshet_kafka::partition_for_key(entity.as_bytes(), lanes.len() as i32);
                let lane = &mut lanes[p as usize];
                lane.rows.push((time, row as u32));
                lane.latest
                    .entry(entity.clone())
                    .or_insert_with(|| vec![None; views.len()]);
            }
        }
        for (_, lanes) in topics.values_mut() {
            for lane in lanes {
                lane.rows.sort_unstable();
            }
        }
        Self {
            views,
            spine,
            topics,
            engine_views: None,
            answers: Answers::unanswered(views.len(), spine.rows()),
        }
    }

    pub fn into_answers(self) -> Answers {
        self.answers
    }

    /// Answers the lane's rows with a time before `before` from the engine's values now,
    /// taking each row's entity's changes into the lane's latest values. Returns whether
    /// every row of the lane is answered.
    fn answer_until(
        &mut self,
        topic: &str,
        partition: i32,
        engine: &mut PartitionEngine,
        before: Option<i64>,
    ) -> bool {
        let Some((topic_views, lanes)) = self.topics.get_mut(topic) else {
            return true;
        };
        let Some(lane) = lanes.get_mut(partition as usize) else {
            return true;
        };
        let due = |lane: &LaneRows| {
            lane.rows
                .get(lane.next)
                .is_some_and(|&(time, _)| before.is_none_or(|b| time < b))
        };
        if !due(lane) {
            return lane.next == lane.rows.len();
        }
        let views = self.views;
        let engine_views = self.engine_views.get_or_insert_with(|| {
            views
                .iter()
                .map(|v| engine.view_position(&v.name))
                .collect()
        });
        while due(lane) {
            let row = lane.rows[lane.next].1 as usize;
            lane.next += 1;
            let entity = &self.spine.entities[row];
            let latest = lane
                .latest
                .get_mut(entity)
                .expect("every row's entity has a place in its lane");
            for &v in topic_views.iter() {
                let taken =
                    engine_views[v].and_then(|position| engine.take_update(position, entity));
                if let Some(update) = taken {
                    latest[v] = Some(AsOf::from_map(
                        &views[v],
                        update.event_time_ms,
                        update.version,
                        update.values,
                    ));
                }
                self.answers.per_view[v][row] = latest[v].clone();
            }
        }
        lane.next == lane.rows.len()
    }
}

impl LaneObserver for Recompute<'_> {
    fn clock_moves(
        &mut self,
        topic: &str,
        partition: i32,
        engine: &mut PartitionEngine,
        to: i64,
    ) -> bool {
        self.answer_until(topic, partition, engine, Some(to))
    }

    fn input_ended(&mut self, topic: &str, partition: i32, engine: &mut PartitionEngine) {
        self.answer_until(topic, partition, engine, None);
    }
}
