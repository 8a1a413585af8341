//! One event, one trace: the producer's span for an event, the processor's span for the
//! same record (a child of the producer's) and the processor's write of the values it
//! changed to Redis (a child of the processor's span) share one trace id.

mod common;

use common::*;
use freshet_testkit::otlp::OtlpReceiver;
use freshet_testkit::TestStack;
use std::collections::HashMap;

const EVENTS: u64 = 300;

#[tokio::test(flavor = "multi_thread")]
async fn the_processors_span_of_each_event_continues_the_producers_trace() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(dir.path(), "traced", 0);
    let mut processor = deployment.start_with(&stack, &["--otlp-endpoint", &receiver.endpoint()]);
    produce_traced(&stack, sim(5, 50), EVENTS, 0.0, Some(&receiver.endpoint())).await;

    wait_for_events(&deployment, EVENTS).await;
    // SIGTERM: the processor finishes its epoch and flushes its spans.
    processor.terminate();

    let spans = receiver.spans();
    let produced: HashMap<&str, &str> = spans
        .iter()
        .filter(|s| s.service == "freshet-producer" && s.name == "produce user_event")
        .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
        .collect();
    let processed: Vec<_> = spans
        .iter()
        .filter(|s| s.service == "freshet-processor" && s.name == "process user_event")
        .collect();
    assert_eq!(
        produced.len(),
        EVENTS as usize,
        "one producer trace per event"
    );
    assert_eq!(
        processed.len(),
        EVENTS as usize,
        "one processor span per record"
    );
    let mut processor_spans = HashMap::new();
    for span in processed {
        let parent = produced
            .get(span.trace_id.as_str())
            .unwrap_or_else(|| panic!("processor span {span:?} is in no producer trace"));
        assert_eq!(&span.parent_span_id, parent, "{span:?}");
        processor_spans.insert(span.span_id.as_str(), span.trace_id.as_str());
    }
    let writes: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "write features to redis")
        .collect();
    assert!(!writes.is_empty(), "no Redis write in any event's trace");
    for write in &writes {
        assert_eq!(write.service, "freshet-processor");
        let trace = processor_spans
            .get(write.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("Redis write {write:?} is not under a record's span"));
        assert_eq!(*trace, write.trace_id);
        assert!(
            ["user_click_stats", "user_purchase_stats"]
                .contains(&write.attributes["view"].as_str()),
            "{write:?}"
        );
    }
    // Every entity whose values changed has its write in some event's trace.
    let written: std::collections::BTreeSet<&str> = writes
        .iter()
        .map(|w| w.attributes["entity"].as_str())
        .collect();
    assert!(
        written.len() >= 10,
        "only {} entities traced",
        written.len()
    );
}
