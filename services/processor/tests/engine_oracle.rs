//! The engine against the independent oracle without any server: 10,000 simulated events
//! in one partition, with drains at arbitrary points as epochs would make them.

mod common;

use common::*;
use freshet_core::definitions::Definitions;
use freshet_core::duration::DurationMs;
use freshet_core::Window;
use freshet_engine::{CompiledView, PartitionEngine};
use freshet_producer::simulate::Simulator;
use std::collections::HashMap;
use std::sync::Arc;

#[test]
fn the_engine_agrees_with_the_oracle_on_a_simulated_stream() {
    agrees_with_the_oracle(definitions());
}

/// Sessions of a minute served for two: most users pause longer than that between events,
/// so closed sessions expire (and their entities' state goes) within the stream.
#[test]
fn the_engine_agrees_with_the_oracle_when_closed_sessions_expire() {
    let mut defs = definitions();
    let view = defs
        .views
        .iter_mut()
        .find(|v| v.name == "user_purchase_stats")
        .unwrap();
    view.ttl = DurationMs(120_000);
    for f in &mut view.features {
        if let Window::Session { gap } = &mut f.window {
            *gap = DurationMs(60_000);
        }
    }
    agrees_with_the_oracle(defs);
}

fn agrees_with_the_oracle(defs: Definitions) {
    let events: Vec<_> = Simulator::new(sim(3, 200)).unwrap().take(10_000).collect();
    let expected = oracle(&defs, std::slice::from_ref(&events));
    let views = Arc::new(CompiledView::compile_all(&defs));
    let mut engine = PartitionEngine::new(views.clone(), TOPIC);
    let mut emitted = HashMap::new();
    for (offset, e) in events.iter().enumerate() {
        let value = apache_avro::to_value(e).unwrap();
        let event =
            freshet_engine::event_decoder::to_event(&value, "user_id", "timestamp").unwrap();
        engine.process(offset as i64, Some(&event));
        if offset % 37 == 0 {
            for u in engine.drain_updates() {
                emitted.insert((u.view.clone(), u.entity.clone()), u.values);
            }
        }
    }
    for u in engine.drain_updates() {
        emitted.insert((u.view.clone(), u.entity.clone()), u.values);
    }
    let mut wrong = Vec::new();
    for (key, values) in &expected {
        let got = emitted
            .get(key)
            .expect("every entity with events got an update");
        for (name, value) in values {
            if !close(value, &got[name]) {
                wrong.push(format!(
                    "{key:?} {name}: oracle {value}, engine {}",
                    got[name]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(expected.len() > 300);
}
