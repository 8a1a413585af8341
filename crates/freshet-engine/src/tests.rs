//! Window semantics against hand-computed answers.

use super::*;
use freshet_core::duration::DurationMs;

fn feature(
    name: &str,
    aggregation: Aggregation,
    field: Option<&str>,
    filter: Option<&str>,
) -> CompiledFeature {
    CompiledFeature {
        name: name.into(),
        aggregation,
        field: field.map(Into::into),
        filter: filter.map(|f| Filter::parse(f).unwrap()),
        default: Aggregation::implicit_default(aggregation, freshet_core::ValueType::Long),
        integral: true,
    }
}

fn view(window: Window, features: Vec<CompiledFeature>, delay: i64) -> Arc<Vec<CompiledView>> {
    Arc::new(vec![CompiledView {
        name: "v".into(),
        entity: "user".into(),
        topic: "t".into(),
        entity_key_field: "user_id".into(),
        event_time_field: "timestamp".into(),
        watermark_delay_ms: delay,
        ttl_ms: 3_600_000,
        groups: vec![Group {
            window,
            features: (0..features.len()).collect(),
        }],
        features,
    }])
}

fn ev(entity: &str, time: i64, action: &str) -> Event {
    Event {
        entity: entity.into(),
        time,
        fields: Fields::from([
            ("action_type".to_string(), Value::String(action.into())),
            ("amount".to_string(), Value::Long(time / 1000)),
        ]),
    }
}

struct Run {
    engine: PartitionEngine,
    offset: i64,
}

impl Run {
    fn new(views: Arc<Vec<CompiledView>>) -> Self {
        Self {
            engine: PartitionEngine::new(views, "t"),
            offset: 0,
        }
    }

    fn push(&mut self, e: Event) -> Outcome {
        let outcome = self.engine.process(self.offset, Some(&e));
        self.offset += 1;
        outcome
    }

    fn value(&self, entity: &str, feature: &str) -> Value {
        self.engine.values(0, entity)[feature].clone()
    }
}

fn d(ms: i64) -> DurationMs {
    DurationMs(ms)
}

#[test]
fn tumbling_serves_the_last_closed_window_then_decays_to_the_default() {
    let clicks = feature(
        "clicks",
        Aggregation::Count,
        None,
        Some("action_type == 'click'"),
    );
    let mut run = Run::new(view(
        Window::Tumbling { size: d(60_000) },
        vec![clicks],
        5_000,
    ));
    run.push(ev("a", 1_000, "click"));
    run.push(ev("a", 30_000, "click"));
    run.push(ev("a", 61_000, "view"));
    assert_eq!(
        run.value("a", "clicks"),
        Value::Long(0),
        "W = 56 s: no window closed yet"
    );
    run.push(ev("b", 65_000, "view"));
    assert_eq!(
        run.value("a", "clicks"),
        Value::Long(2),
        "W = 60 s closes [0, 60 s)"
    );
    let updates = run.engine.drain_updates();
    let a = updates.iter().find(|u| u.entity == "a").unwrap();
    assert_eq!(
        (a.version, a.values["clicks"].clone()),
        (4, Value::Long(2)),
        "version of the record that closed it"
    );
    run.push(ev("b", 125_000, "view"));
    assert_eq!(
        run.value("a", "clicks"),
        Value::Long(0),
        "[60 s, 120 s) had a view and no click"
    );
    run.push(ev("b", 185_000, "view"));
    assert_eq!(
        run.value("a", "clicks"),
        Value::Long(0),
        "no event at all in [120 s, 180 s): default"
    );
    assert!(
        holds(&run.engine, "a"),
        "a's emptied state stays until its change is drained"
    );
    run.engine.drain_updates();
    run.engine.drain_touched();
    assert!(!holds(&run.engine, "a"), "a's state is cleaned up");
}

#[test]
fn an_event_on_a_boundary_belongs_to_the_window_it_starts() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Tumbling { size: d(60_000) }, vec![n], 0));
    run.push(ev("a", 59_999, "x"));
    run.push(ev("a", 60_000, "x"));
    run.push(ev("a", 60_001, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(1),
        "[0, 60 s) holds only 59.999 s"
    );
    run.push(ev("a", 120_000, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(2));
}

#[test]
fn events_behind_the_watermark_are_late_and_out_of_order_ones_within_it_count() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Tumbling { size: d(60_000) }, vec![n], 5_000));
    assert_eq!(run.push(ev("a", 100_000, "x")), Outcome::Applied);
    assert_eq!(run.push(ev("a", 94_999, "x")), Outcome::Late);
    assert_eq!(
        run.push(ev("a", 95_000, "x")),
        Outcome::Applied,
        "exactly on the watermark"
    );
    assert_eq!(run.push(ev("a", 97_000, "x")), Outcome::Applied);
    run.push(ev("b", 125_000, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(3),
        "three in [60 s, 120 s), the late one not"
    );
}

#[test]
fn sliding_values_follow_the_latest_event_and_shrink_as_panes_leave() {
    let n = feature("n", Aggregation::Count, None, None);
    let sum = feature("s", Aggregation::Sum, Some("amount"), None);
    let mut run = Run::new(view(
        Window::Sliding {
            size: d(10_000),
            step: d(2_000),
        },
        vec![n, sum],
        60_000,
    ));
    run.push(ev("a", 1_000, "x"));
    run.push(ev("a", 3_000, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(2),
        "updated at once, window [-6 s, 4 s)"
    );
    run.push(ev("a", 11_500, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(2),
        "window [2 s, 12 s): the 1 s event left"
    );
    assert_eq!(run.value("a", "s"), Value::Long(3 + 11));
    run.push(ev("b", 13_000, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(1), "window [4 s, 14 s)");
    let updates = run.engine.drain_updates();
    assert_eq!(
        updates.iter().find(|u| u.entity == "a").unwrap().version,
        4,
        "the pane expiry is a change"
    );
    run.push(ev("b", 22_000, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(0));
    run.engine.drain_updates();
    run.engine.drain_touched();
    assert!(!holds(&run.engine, "a"));
}

#[test]
fn distinct_values_in_a_sliding_window_count_once_across_panes_and_leave_with_their_pane() {
    let kinds = feature(
        "kinds",
        Aggregation::ApproxCountDistinct,
        Some("action_type"),
        None,
    );
    let mut run = Run::new(view(
        Window::Sliding {
            size: d(3_000),
            step: d(1_000),
        },
        vec![kinds],
        60_000,
    ));
    run.push(ev("a", 0, "x"));
    run.push(ev("a", 1_000, "x"));
    run.push(ev("a", 1_500, "y"));
    run.push(ev("a", 2_000, "z"));
    assert_eq!(
        run.value("a", "kinds"),
        Value::Long(3),
        "[0 s, 3 s): x, y, z"
    );
    run.push(ev("a", 3_000, "w"));
    assert_eq!(
        run.value("a", "kinds"),
        Value::Long(4),
        "[1 s, 4 s): the pane at 0 s left, but x is also in the pane at 1 s"
    );
    run.push(ev("a", 4_000, "w"));
    assert_eq!(run.value("a", "kinds"), Value::Long(2), "[2 s, 5 s): z, w");
    run.push(ev("a", 4_200, "z"));
    assert_eq!(run.value("a", "kinds"), Value::Long(2), "z is in two panes");
    run.push(ev("a", 5_000, "v"));
    assert_eq!(
        run.value("a", "kinds"),
        Value::Long(3),
        "[3 s, 6 s): w, z, v"
    );
}

#[test]
fn an_engine_without_checkpoint_serves_the_same_values_and_keeps_no_changed_pieces() {
    let n = feature("n", Aggregation::Count, None, None);
    let views = view(
        Window::Sliding {
            size: d(10_000),
            step: d(1_000),
        },
        vec![n],
        2_000,
    );
    let mut checkpointed = Run::new(views.clone());
    let mut uncheckpointed = Run {
        engine: PartitionEngine::without_checkpoint(views, "t"),
        offset: 0,
    };
    for t in (0..60_000).step_by(700) {
        for run in [&mut checkpointed, &mut uncheckpointed] {
            run.push(ev(if t % 1_400 == 0 { "a" } else { "b" }, t, "x"));
        }
    }
    let updates = checkpointed.engine.drain_updates();
    assert_eq!(updates.len(), 2, "a and b");
    assert_eq!(uncheckpointed.engine.drain_updates(), updates);
    assert!(!checkpointed.engine.drain_touched().is_empty());
    assert!(
        uncheckpointed.engine.drain_touched().is_empty(),
        "nothing drains them in a backfill: kept, they grew with the input"
    );
}

/// A count over a sliding window of `size` ms in one-second panes, a minute's delay.
fn sliding_count(size: i64) -> Run {
    let n = feature("n", Aggregation::Count, None, None);
    Run::new(view(
        Window::Sliding {
            size: d(size),
            step: d(1_000),
        },
        vec![n],
        60_000,
    ))
}

/// A touched piece's state as the checkpoint would read it back.
fn decoded(touched: &TouchedPart) -> Option<StatePart> {
    touched
        .state
        .as_deref()
        .map(StatePart::decode)
        .transpose()
        .unwrap()
}

#[test]
fn an_epoch_checkpoints_only_the_windows_and_panes_it_changed() {
    let mut run = sliding_count(10_000);
    for t in (0..10_000).step_by(500) {
        run.push(ev("a", t, "x"));
    }
    assert_eq!(
        run.engine.drain_touched().len(),
        10,
        "ten panes written once"
    );
    run.push(ev("a", 9_700, "x"));
    let touched = run.engine.drain_touched();
    assert_eq!(
        touched
            .iter()
            .map(|t| (t.entity.as_str(), t.part))
            .collect::<Vec<_>>(),
        vec![(
            "a",
            PartKey::Window {
                group: 0,
                start: 9_000
            }
        )],
        "only the pane the event went to"
    );
    assert_eq!(
        decoded(&touched[0]),
        Some(StatePart::Window(vec![Acc::Count(3)]))
    );
    run.push(ev("b", 10_000, "x"));
    let touched = run.engine.drain_touched();
    let written: Vec<_> = touched
        .iter()
        .map(|t| (t.entity.as_str(), t.part, t.state.is_some()))
        .collect();
    assert_eq!(
        written,
        vec![
            ("a", PartKey::Window { group: 0, start: 0 }, false),
            (
                "b",
                PartKey::Window {
                    group: 0,
                    start: 10_000
                },
                true
            ),
        ],
        "the pane that left a's window is removed"
    );
}

#[test]
fn a_window_created_and_gone_between_two_checkpoints_is_neither_written_nor_deleted() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Tumbling { size: d(1_000) }, vec![n], 0));
    // Which pieces a checkpoint would write (true) or delete (false).
    let checkpoint = |run: &mut Run| -> Vec<(PartKey, bool)> {
        run.engine
            .drain_touched()
            .into_iter()
            .map(|t| (t.part, t.state.is_some()))
            .collect()
    };
    let window = |start| PartKey::Window { group: 0, start };
    run.push(ev("a", 500, "x"));
    assert_eq!(checkpoint(&mut run), vec![(window(0), true)]);
    // One epoch: [1 s, 2 s) is created and, once [2 s, 3 s) is served and [3 s, 4 s)
    // opens, dropped with [0, 1 s), which was checkpointed and so is deleted.
    for t in [1_500, 2_500, 3_500] {
        run.push(ev("a", t, "x"));
    }
    assert_eq!(
        checkpoint(&mut run),
        vec![
            (window(0), false),
            (window(2_000), true),
            (window(3_000), true)
        ]
    );
}

#[test]
fn a_piece_touched_again_after_many_others_is_written_once() {
    let mut run = sliding_count(20_000);
    // Twelve new panes, then the first again: far behind in the entity's list of
    // touched pieces, so it goes into the list twice.
    for t in (0..12_000).step_by(1_000) {
        run.push(ev("a", t, "x"));
    }
    run.push(ev("a", 500, "x"));
    let touched = run.engine.drain_touched();
    let starts: Vec<i64> = touched
        .iter()
        .map(|t| match t.part {
            PartKey::Window { start, .. } => start,
            PartKey::Sessions { .. } => panic!("no sessions here"),
        })
        .collect();
    assert_eq!(starts, (0..12_000).step_by(1_000).collect::<Vec<i64>>());
    assert_eq!(
        decoded(&touched[0]),
        Some(StatePart::Window(vec![Acc::Count(2)])),
        "written once, with both of its events"
    );
}

#[test]
fn sessions_merge_when_an_event_bridges_the_gap_and_serve_once_closed() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Session { gap: d(1_000) }, vec![n], 5_000));
    run.push(ev("a", 0, "x"));
    run.push(ev("a", 2_000, "x"));
    run.push(ev("a", 1_000, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(0), "nothing closed yet");
    run.push(ev("b", 8_000, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(0),
        "W = 3 s: [0, 3 s) closes only when W passes 3 s"
    );
    run.push(ev("b", 8_001, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(3),
        "one session of three events"
    );
    run.push(ev("a", 20_000, "x"));
    run.push(ev("b", 26_001, "x"));
    assert_eq!(
        run.value("a", "n"),
        Value::Long(1),
        "the latest closed session"
    );
}

#[test]
fn an_extended_session_closes_at_its_exact_time_with_one_timer_per_session() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Session { gap: d(1_000) }, vec![n], 0));
    // One session, extended by every event: its first timer (at 1,001) is early.
    for t in (0..5_000).step_by(500) {
        run.push(ev("a", t, "x"));
    }
    assert_eq!(
        run.engine.timers.len(),
        1,
        "a timer per session, not per event"
    );
    run.engine.drain_updates();
    // Crossing the early timer (but not the session's end, 5,500) changes nothing.
    run.push(ev("b", 5_400, "x"));
    let updated: Vec<String> = run
        .engine
        .drain_updates()
        .into_iter()
        .map(|u| u.entity)
        .collect();
    assert_eq!(updated, vec!["b"], "a's session is still open");
    assert_eq!(run.value("a", "n"), Value::Long(0));
    // The exact timer (5,501) closes it, under the version of the record that crossed it.
    run.push(ev("b", 5_501, "x"));
    let closed: Vec<(String, u64)> = run
        .engine
        .drain_updates()
        .into_iter()
        .filter(|u| u.entity == "a")
        .map(|u| (u.entity, u.version))
        .collect();
    assert_eq!(closed, vec![("a".to_string(), 12)]);
    assert_eq!(run.value("a", "n"), Value::Long(10));
}

fn mixed_view() -> Arc<Vec<CompiledView>> {
    let mut v = view(
        Window::Tumbling { size: d(10_000) },
        vec![feature(
            "clicks",
            Aggregation::Count,
            None,
            Some("action_type == 'click'"),
        )],
        2_000,
    );
    let view = Arc::get_mut(&mut v).unwrap();
    view[0]
        .features
        .push(feature("recent", Aggregation::Count, None, None));
    view[0]
        .features
        .push(feature("per_session", Aggregation::Count, None, None));
    view[0].features.push(feature(
        "amounts",
        Aggregation::ApproxCountDistinct,
        Some("amount"),
        None,
    ));
    view[0].groups.push(Group {
        window: Window::Sliding {
            size: d(6_000),
            step: d(1_000),
        },
        features: vec![1, 3],
    });
    view[0].groups.push(Group {
        window: Window::Session { gap: d(3_000) },
        features: vec![2],
    });
    v
}

fn stream() -> Vec<Event> {
    (0..400)
        .map(|i| {
            let t =
                i * 137 - if i % 7 == 0 { 1_500 } else { 0 } - if i % 31 == 0 { 9_000 } else { 0 };
            ev(
                ["a", "b", "c"][(i % 3) as usize],
                t,
                if i % 4 == 0 { "click" } else { "view" },
            )
        })
        .collect()
}

fn last_per_entity(updates: Vec<FeatureUpdate>) -> BTreeMap<String, FeatureUpdate> {
    updates.into_iter().map(|u| (u.entity.clone(), u)).collect()
}

#[test]
fn where_epochs_are_cut_changes_no_version_and_no_value() {
    let events = stream();
    let mut every_record = Run::new(mixed_view());
    let mut all_updates = Vec::new();
    for e in &events {
        every_record.push(e.clone());
        all_updates.extend(every_record.engine.drain_updates());
    }
    let mut once = Run::new(mixed_view());
    for e in &events {
        once.push(e.clone());
    }
    let final_once = last_per_entity(once.engine.drain_updates());
    // The values under a version are the same however the epochs were cut.
    let by_version: HashMap<(String, u64), BTreeMap<String, Value>> = all_updates
        .iter()
        .map(|u| ((u.entity.clone(), u.version), u.values.clone()))
        .collect();
    for u in final_once.values() {
        assert_eq!(
            by_version.get(&(u.entity.clone(), u.version)),
            Some(&u.values),
            "{}",
            u.entity
        );
    }
    assert_eq!(last_per_entity(all_updates), final_once);
}

#[test]
fn taking_one_entitys_update_is_what_a_drain_would_emit_for_it() {
    let events = stream();
    let (mut drained, mut taken) = (Run::new(mixed_view()), Run::new(mixed_view()));
    let (mut from_drains, mut from_takes) = (Vec::new(), Vec::new());
    for (i, e) in events.iter().enumerate() {
        drained.push(e.clone());
        taken.push(e.clone());
        if i % 5 != 4 {
            continue;
        }
        // Every fifth record: a drain of everything, against `b` taken alone, then a drain.
        let updates = drained.engine.drain_updates();
        from_drains.extend(updates.iter().filter(|u| u.entity == "b").cloned());
        let took = taken.engine.take_update(0, "b");
        assert_eq!(
            took.as_ref(),
            updates.iter().find(|u| u.entity == "b"),
            "record {i}"
        );
        assert_eq!(taken.engine.take_update(0, "b"), None, "taken once");
        from_takes.extend(took);
        let rest = taken.engine.drain_updates();
        assert!(rest.iter().all(|u| u.entity != "b"), "record {i}");
        assert_eq!(
            rest.len(),
            updates.len() - usize::from(updates.iter().any(|u| u.entity == "b"))
        );
    }
    assert!(from_takes.len() > 40, "{}", from_takes.len());
    assert_eq!(from_takes, from_drains);
    assert_eq!(taken.engine.take_update(0, "nobody"), None);
    let name = mixed_view()[0].name.clone();
    assert_eq!(taken.engine.view_position(&name), Some(0));
    assert_eq!(taken.engine.view_position("other"), None);
}

#[test]
fn a_restored_checkpoint_continues_exactly_like_an_uninterrupted_run() {
    for cut in [1, 37, 150, 151, 299] {
        restored_run_matches(mixed_view, &stream(), cut);
    }
}

/// Sessions of one second that are served for five: each entity's bursts of events are
/// ten seconds apart, so its sessions close, expire and its state leaves between them.
fn expiring_sessions() -> Arc<Vec<CompiledView>> {
    let n = feature("n", Aggregation::Count, None, None);
    let mut v = view(Window::Session { gap: d(1_000) }, vec![n], 200);
    Arc::get_mut(&mut v).unwrap()[0].ttl_ms = 5_000;
    v
}

fn bursts() -> Vec<Event> {
    (0..300)
        .map(|i| ev(["a", "b", "c", "d", "e"][(i / 7) % 5], i as i64 * 300, "x"))
        .collect()
}

#[test]
fn a_restored_checkpoint_expires_sessions_exactly_like_an_uninterrupted_run() {
    for cut in [1, 20, 36, 150, 299] {
        restored_run_matches(expiring_sessions, &bursts(), cut);
    }
}

#[test]
fn a_closed_session_is_served_for_the_views_ttl_then_the_entity_leaves() {
    let mut run = Run::new(expiring_sessions());
    run.push(ev("a", 0, "x"));
    run.push(ev("a", 500, "x"));
    // [0, 1,500] closes once W = C - 200 passes its end.
    run.push(ev("b", 1_701, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(2));
    run.engine.drain_updates();
    // Served while W is at most 5 s past its end...
    run.push(ev("b", 6_700, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(2));
    // ...then the default, as an update under the version of the record that crossed.
    run.push(ev("c", 6_701, "x"));
    assert_eq!(run.value("a", "n"), Value::Long(0));
    let a: Vec<(u64, Value)> = run
        .engine
        .drain_updates()
        .into_iter()
        .filter(|u| u.entity == "a")
        .map(|u| (u.version, u.values["n"].clone()))
        .collect();
    assert_eq!(a, vec![(5, Value::Long(0))]);
    let slot_of_a = run.engine.entities.find("a").expect("a is held");
    run.engine.drain_touched();
    assert!(!holds(&run.engine, "a"), "nothing left of a");
    assert_eq!(
        run.engine
            .timers
            .iter()
            .filter(|t| t.2 == slot_of_a)
            .count(),
        0,
        "nor a timer"
    );
}

/// The pieces of state a checkpoint holds, kept from an engine's drains.
#[derive(Default)]
struct Saved(BTreeMap<(usize, String, PartKey), StatePart>);

impl Saved {
    /// Takes the pieces changed since the last drain, encoded as the checkpoint stores them.
    fn keep(&mut self, engine: &mut PartitionEngine) {
        for touched in engine.drain_touched() {
            let key = (touched.view, touched.entity.into_string(), touched.part);
            match touched.state {
                Some(bytes) => self.0.insert(key, StatePart::decode(&bytes).unwrap()),
                None => self.0.remove(&key),
            };
        }
    }

    /// A run restored from the pieces kept, where `run` is.
    fn restore(self, views: Arc<Vec<CompiledView>>, run: &Run) -> Run {
        let mut pieces: HashMap<StateKey, Vec<(PartKey, StatePart)>> = HashMap::new();
        for ((view, entity, part), state) in self.0 {
            pieces
                .entry((view, entity))
                .or_default()
                .push((part, state));
        }
        let engine = PartitionEngine::restore(
            views,
            "t",
            run.engine.next_offset(),
            run.engine.clock(),
            pieces,
        )
        .unwrap();
        Run {
            engine,
            offset: run.offset,
        }
    }
}

fn restored_run_matches(views: fn() -> Arc<Vec<CompiledView>>, events: &[Event], cut: usize) {
    // Both runs drain after every record from the cut on, so every update must match, not
    // only the last: a timer the restore did not rebuild would leave one out.
    let mut straight = Run::new(views());
    for e in &events[..cut] {
        straight.push(e.clone());
    }
    straight.engine.drain_updates();
    let mut straight_updates = Vec::new();
    for e in &events[cut..] {
        straight.push(e.clone());
        straight_updates.extend(straight.engine.drain_updates());
    }

    let mut first = Run::new(views());
    for e in &events[..cut] {
        first.push(e.clone());
    }
    first.engine.drain_updates();
    let mut saved = Saved::default();
    saved.keep(&mut first.engine);
    let mut resumed = saved.restore(views(), &first);
    let mut updates = Vec::new();
    for e in &events[cut..] {
        resumed.push(e.clone());
        updates.extend(resumed.engine.drain_updates());
    }
    assert!(!updates.is_empty());
    assert_eq!(updates, straight_updates, "cut at {cut}");
    // Emptied states leave once their changes are drained.
    straight.engine.drain_touched();
    resumed.engine.drain_touched();
    assert_eq!(
        resumed.engine.entity_count(),
        straight.engine.entity_count()
    );
}

#[test]
fn a_timer_left_by_a_merged_session_changes_nothing() {
    let n = feature("n", Aggregation::Count, None, None);
    let mut run = Run::new(view(Window::Session { gap: d(1_000) }, vec![n], 0));
    run.push(ev("a", 0, "x"));
    run.push(ev("a", 500, "x"));
    run.engine.drain_updates();
    // The first session's end (1 s) passes; the merged session ends at 1.5 s.
    run.push(ev("b", 1_200, "x"));
    let updates = run.engine.drain_updates();
    assert!(
        updates.iter().all(|u| u.entity != "a"),
        "a's value did not change, so no new version: {updates:?}"
    );
    run.push(ev("b", 1_600, "x"));
    let a = run
        .engine
        .drain_updates()
        .into_iter()
        .find(|u| u.entity == "a")
        .expect("a's session closed");
    assert_eq!((a.version, a.values["n"].clone()), (4, Value::Long(2)));
}

#[test]
fn a_timer_left_on_a_slot_another_entity_now_holds_changes_nothing() {
    // a's session closes at 1,701 and expires at 6,701; once drained, a leaves and its
    // slot is free. b then gets it.
    let before = [ev("a", 0, "x"), ev("a", 500, "x"), ev("c", 7_000, "x")];
    let after = [
        ev("b", 7_100, "x"),
        ev("b", 7_600, "x"),
        ev("c", 9_000, "x"),
        ev("b", 9_100, "x"),
        ev("c", 16_000, "x"),
        ev("c", 30_000, "x"),
    ];
    let mut runs = [Run::new(expiring_sessions()), Run::new(expiring_sessions())];
    let mut updates = [Vec::new(), Vec::new()];
    for (run, updates) in runs.iter_mut().zip(&mut updates) {
        for e in &before {
            run.push(e.clone());
        }
        let slot_of_a = run.engine.entities.find("a").expect("a is held");
        run.engine.drain_updates();
        run.engine.drain_touched();
        assert!(!holds(&run.engine, "a"));
        run.push(after[0].clone());
        assert_eq!(run.engine.entities.find("b"), Some(slot_of_a));
        updates.extend(run.engine.drain_updates());
    }
    // Timers a could have left on the slot, of both kinds, every 100 ms from now on: none
    // is one b's state needs unless b set it too.
    let slot = runs[1].engine.entities.find("b").unwrap();
    for at in (7_101..20_000).step_by(100) {
        for session in [false, true] {
            runs[1].engine.timers.insert((at, 0, slot, session));
        }
    }
    for (run, updates) in runs.iter_mut().zip(&mut updates) {
        for e in &after[1..] {
            run.push(e.clone());
            updates.extend(run.engine.drain_updates());
        }
    }
    assert!(
        updates[0]
            .iter()
            .any(|u| u.entity == "b" && u.values["n"] == Value::Long(2)),
        "b's session closed and was served: {:?}",
        updates[0]
    );
    assert_eq!(updates[0], updates[1]);
}

#[test]
fn checkpointed_floats_come_back_bit_for_bit() {
    // serde_json parses floats exactly only with its float_roundtrip feature; without it a
    // restored sum can differ in the last bit from an uninterrupted run's.
    for x in [
        23.839999999999996_f64,
        0.1 + 0.2,
        281.04999999999995,
        1e-300,
        123456.789e10,
    ] {
        let acc = Acc::SumDouble(x);
        let back: Acc = serde_json::from_str(&serde_json::to_string(&acc).unwrap()).unwrap();
        assert_eq!(back, acc, "{x:?}");
    }
}

#[test]
fn other_timers_firing_beside_an_open_session_leave_its_timers_alone() {
    let views = Arc::new(vec![CompiledView {
        name: "v".into(),
        entity: "user".into(),
        topic: "t".into(),
        entity_key_field: "user_id".into(),
        event_time_field: "timestamp".into(),
        watermark_delay_ms: 0,
        ttl_ms: 3_600_000,
        groups: vec![
            Group {
                window: Window::Session { gap: d(600_000) },
                features: vec![0],
            },
            Group {
                window: Window::Tumbling { size: d(1_000) },
                features: vec![1],
            },
        ],
        features: vec![
            feature("in_session", Aggregation::Count, None, None),
            feature("per_second", Aggregation::Count, None, None),
        ],
    }]);
    let mut run = Run::new(views);
    // One session, extended every second for 200 s, while a one-second window closes
    // every second. Each window's timers used to set the session's exact timer again, at
    // a time each extension had moved: 200 stale timers by the end.
    for t in (0..200_000).step_by(1_000) {
        run.push(ev("a", t, "x"));
    }
    let sessions = run.engine.timers.iter().filter(|t| t.3).count();
    assert_eq!(sessions, 1, "{:?}", run.engine.timers);
    assert!(run.engine.timers.len() <= 4, "{:?}", run.engine.timers);
    assert_eq!(run.value("a", "per_second"), Value::Long(1));
    // The session still closes at its exact end, 199 s + 600 s.
    run.push(ev("b", 799_000, "x"));
    assert_eq!(run.value("a", "in_session"), Value::Long(0), "still open");
    run.push(ev("b", 799_001, "x"));
    assert_eq!(run.value("a", "in_session"), Value::Long(200), "closed");
}

/// Whether the engine holds state for `entity` in the first view.
fn holds(engine: &PartitionEngine, entity: &str) -> bool {
    engine
        .entities
        .find(entity)
        .and_then(|slot| engine.entities.get(0, slot))
        .is_some()
}

/// Runs `events` and collects every window the engine reports closing before each clock
/// move, as (group, start, end, count).
fn closing(views: Arc<Vec<CompiledView>>, events: Vec<Event>) -> Vec<(String, i64, i64, Value)> {
    let mut run = Run::new(views);
    let mut out = Vec::new();
    for e in events {
        for w in run.engine.windows_closing(e.time) {
            out.push((w.group, w.start, w.end, w.values["n"].clone()));
        }
        run.push(e);
    }
    out
}

#[test]
fn closing_tumbling_windows_are_reported_once_when_the_watermark_reaches_their_end() {
    let n = || vec![feature("n", Aggregation::Count, None, None)];
    let views = view(Window::Tumbling { size: d(60_000) }, n(), 5_000);
    let closed = closing(
        views,
        vec![
            ev("u", 10_000, "click"),
            ev("u", 50_000, "click"),
            // Moves the watermark to 60,000: the first window ends there and closes.
            ev("u", 65_000, "click"),
            // Late (behind 60,000): no window changes.
            ev("u", 1_000, "click"),
            // Jumps over two window ends at once: both close, the empty one is no window.
            ev("u", 300_000, "click"),
        ],
    );
    assert_eq!(
        closed,
        vec![
            ("tumble_1m".into(), 0, 60_000, Value::Long(2)),
            ("tumble_1m".into(), 60_000, 120_000, Value::Long(1)),
        ]
    );
}

#[test]
fn closing_sliding_windows_are_each_window_the_clock_leaves_with_the_union_of_its_panes() {
    let n = || vec![feature("n", Aggregation::Count, None, None)];
    let views = view(
        Window::Sliding {
            size: d(30_000),
            step: d(10_000),
        },
        n(),
        0,
    );
    let closed = closing(
        views,
        vec![
            ev("u", 1_000, "click"),
            // The clock leaves the window ending at 10,000.
            ev("u", 12_000, "click"),
            // The clock leaves the windows ending at 20,000 and 30,000.
            ev("u", 35_000, "click"),
            // Leaves those ending at 40,000 .. 100,000; after 60,000 the only pane left
            // (30,000) is out of them, and nothing is reported.
            ev("u", 100_000, "click"),
        ],
    );
    assert_eq!(
        closed,
        vec![
            ("hop_30s_10s".into(), -20_000, 10_000, Value::Long(1)),
            ("hop_30s_10s".into(), -10_000, 20_000, Value::Long(2)),
            ("hop_30s_10s".into(), 0, 30_000, Value::Long(2)),
            ("hop_30s_10s".into(), 10_000, 40_000, Value::Long(2)),
            ("hop_30s_10s".into(), 20_000, 50_000, Value::Long(1)),
            ("hop_30s_10s".into(), 30_000, 60_000, Value::Long(1)),
        ]
    );
}

#[test]
fn closing_sessions_are_reported_when_the_watermark_passes_their_end() {
    let n = || vec![feature("n", Aggregation::Count, None, None)];
    let views = view(Window::Session { gap: d(10_000) }, n(), 1_000);
    let closed = closing(
        views,
        vec![
            ev("u", 0, "click"),
            ev("u", 5_000, "click"),
            // Watermark 14,000: the session [0, 15,000) is still open.
            ev("u", 14_000, "view"),
            // Watermark 40,000: the session (now [0, 24,000)) closes.
            ev("u", 41_000, "click"),
        ],
    );
    assert_eq!(
        closed,
        vec![("session_10s".into(), 0, 24_000, Value::Long(3))]
    );
}

/// An idle advance to `to` does for every entity what an event at `to` of an entity seen
/// nowhere else would, under the version of the last record instead of its own.
#[test]
fn an_idle_advance_closes_what_an_event_at_that_time_would_close() {
    let events = stream();
    let last = events.iter().map(|e| e.time).max().unwrap();
    for to in [last + 1, last + 2_500, last + 9_999, last + 60_000] {
        let (mut advanced, mut with_event) = (Run::new(mixed_view()), Run::new(mixed_view()));
        for e in &events {
            advanced.push(e.clone());
            with_event.push(e.clone());
        }
        advanced.engine.drain_updates();
        with_event.engine.drain_updates();
        let next_offset = advanced.engine.next_offset();
        assert!(advanced.engine.advance_clock(to));
        assert_eq!(advanced.engine.clock(), Some(to));
        assert_eq!(advanced.engine.next_offset(), next_offset, "no record");
        with_event.push(ev("elsewhere", to, "view"));
        let by_advance = last_per_entity(advanced.engine.drain_updates());
        let mut by_event = last_per_entity(with_event.engine.drain_updates());
        by_event.remove("elsewhere");
        assert_eq!(
            by_advance.keys().collect::<Vec<_>>(),
            by_event.keys().collect::<Vec<_>>(),
            "to {to}"
        );
        for (entity, update) in &by_advance {
            assert_eq!(update.values, by_event[entity].values, "{entity}, to {to}");
            assert_eq!(update.version, next_offset as u64, "{entity}, to {to}");
            assert_eq!(update.event_time_ms, to);
        }
        if to >= last + 9_999 {
            // Every tumbling window and session is closed: nothing is left to close.
            assert!(!by_advance.is_empty());
            assert!(by_advance
                .values()
                .all(|u| u.values["per_session"] != Value::Long(0)));
        }
    }
}

#[test]
fn an_idle_advance_needs_a_clock_and_never_moves_it_back() {
    let mut run = Run::new(mixed_view());
    assert!(!run.engine.advance_clock(10_000), "no record yet");
    assert_eq!(run.engine.clock(), None);
    run.push(ev("a", 5_000, "click"));
    run.engine.drain_updates();
    assert!(!run.engine.advance_clock(5_000));
    assert!(!run.engine.advance_clock(1_000));
    assert_eq!(run.engine.clock(), Some(5_000));
    assert!(run.engine.drain_updates().is_empty(), "nothing changed");
}

#[test]
fn a_checkpoint_taken_after_an_idle_advance_restores_the_advanced_state() {
    // The state an advance leaves is checkpointed like any other: a restored engine goes
    // on exactly like the one that advanced.
    let events = stream();
    let last = events.iter().map(|e| e.time).max().unwrap();
    let (before, after) = events.split_at(250);
    let mut straight = Run::new(mixed_view());
    let mut first = Run::new(mixed_view());
    for e in before {
        straight.push(e.clone());
        first.push(e.clone());
    }
    let mut saved = Saved::default();
    saved.keep(&mut first.engine);
    let to = before.iter().map(|e| e.time).max().unwrap() + 4_000;
    assert!(straight.engine.advance_clock(to));
    assert!(first.engine.advance_clock(to));
    straight.engine.drain_updates();
    first.engine.drain_updates();
    saved.keep(&mut first.engine);
    let mut resumed = saved.restore(mixed_view(), &first);
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    for e in after {
        straight.push(e.clone());
        resumed.push(e.clone());
        expected.extend(straight.engine.drain_updates());
        got.extend(resumed.engine.drain_updates());
    }
    assert!(straight.engine.advance_clock(last + 20_000));
    assert!(resumed.engine.advance_clock(last + 20_000));
    expected.extend(straight.engine.drain_updates());
    got.extend(resumed.engine.drain_updates());
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}
