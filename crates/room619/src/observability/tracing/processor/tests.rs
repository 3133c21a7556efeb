use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use opentelemetry::{
    InstrumentationScope,
    trace::{Span as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value,
};
use opentelemetry_sdk::{Resource, error::OTelSdkError, trace::SdkTracerProvider};

use super::{Dropped, OtlpProcessor, Schedule, SpanProcessor as _, take_dropped};
use crate::observability::tracing::otlp::{
    OtlpExporter,
    tests::{Collector, plain, serve},
};

/// A processor exporting to a collector in this test, on `schedule`.
async fn processor(schedule: Schedule) -> (OtlpProcessor, Collector) {
    let collector = Collector::default();
    (processor_to(&collector, schedule).await, collector)
}

/// A processor exporting to `collector`, served here, on `schedule`.
async fn processor_to(collector: &Collector, schedule: Schedule) -> OtlpProcessor {
    let endpoint = serve(collector.clone()).await;
    let exporter =
        OtlpExporter::new(&endpoint, Duration::from_secs(5)).unwrap_or_else(|err| panic!("{err}"));
    OtlpProcessor::with_schedule(exporter, schedule).unwrap_or_else(|err| panic!("{err}"))
}

/// Nothing leaves unless asked: no batch fills, the delay is long.
const NEVER: Schedule = Schedule {
    batch: 1_000,
    queue: 2_000,
    delay: Duration::from_secs(3_600),
};

/// The ids (last byte) of the spans `collector` was sent, in order.
fn received_ids(collector: &Collector) -> Vec<u8> {
    requests(collector)
        .iter()
        .flat_map(|request| &request.resource_spans)
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.span_id[7])
        .collect()
}

fn requests(collector: &Collector) -> Vec<ExportTraceServiceRequest> {
    collector
        .received
        .lock()
        .unwrap_or_else(|err| panic!("{err}"))
        .clone()
}

/// Waits (on a blocking thread: the export runs on this runtime) until
/// `collector` has `count` spans, for at most ten seconds.
async fn wait_for(collector: &Collector, count: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = received_ids(collector);
        if ids.len() >= count || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `processor.force_flush()`, off the runtime's threads.
async fn flush(processor: &std::sync::Arc<OtlpProcessor>) -> Result<(), OTelSdkError> {
    let processor = std::sync::Arc::clone(processor);
    tokio::task::spawn_blocking(move || processor.force_flush())
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_sends_every_ended_span_with_the_providers_resource() {
    let collector = Collector::default();
    let processor = processor_to(&collector, NEVER).await;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name("users").build())
        .build();
    let tracer = provider.tracer("room619");
    for name in ["first", "second"] {
        tracer.start(name).end();
    }
    let flushed = {
        let provider = provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .unwrap_or_else(|err| panic!("{err}"))
    };
    assert!(flushed.is_ok(), "{flushed:?}");
    let requests = requests(&collector);
    assert_eq!(requests.len(), 1, "one request for both");
    let resource_spans = &requests[0].resource_spans[0];
    let attributes: HashMap<_, _> = resource_spans
        .resource
        .iter()
        .flat_map(|resource| &resource.attributes)
        .filter_map(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(value) => {
                    Some((attribute.key.as_str(), value.as_str()))
                }
                _ => None,
            },
        )
        .collect();
    assert_eq!(attributes.get("service.name"), Some(&"users"));
    let scope = &resource_spans.scope_spans[0];
    assert_eq!(
        scope.scope.as_ref().map(|scope| scope.name.as_str()),
        Some("room619")
    );
    let names: Vec<&str> = scope.spans.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);

    // Nothing waits: shutting down sends nothing more.
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(flushed.is_ok(), "{flushed:?}");
    assert_eq!(self::requests(&collector).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_goes_without_waiting_for_the_delay() {
    let (processor, collector) = processor(Schedule { batch: 4, ..NEVER }).await;
    let scope = InstrumentationScope::builder("room619").build();
    for id in 1..=3 {
        processor.on_end(plain(&scope, id));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received_ids(&collector).is_empty(), "three spans wait");
    processor.on_end(plain(&scope, 4));
    assert_eq!(wait_for(&collector, 4).await, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_after_the_delay_even_when_few() {
    let (processor, collector) = processor(Schedule {
        delay: Duration::from_millis(200),
        ..NEVER
    })
    .await;
    let scope = InstrumentationScope::builder("room619").build();
    processor.on_end(plain(&scope, 7));
    assert_eq!(wait_for(&collector, 1).await, [7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_spans_that_find_it_full() {
    let (processor, collector) = processor(Schedule { queue: 3, ..NEVER }).await;
    let processor = std::sync::Arc::new(processor);
    let scope = InstrumentationScope::builder("room619").build();
    for id in 1..=5 {
        processor.on_end(plain(&scope, id));
    }
    assert_eq!(
        processor.shared.lock().dropped,
        Dropped {
            queue_full: 2,
            too_large: 0
        }
    );
    assert!(flush(&processor).await.is_ok());
    assert_eq!(received_ids(&collector), [1, 2, 3]);
    // The queue has room again.
    processor.on_end(plain(&scope, 6));
    assert!(flush(&processor).await.is_ok());
    assert_eq!(received_ids(&collector), [1, 2, 3, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_waits_and_later_spans_are_dropped() {
    let (processor, collector) = processor(NEVER).await;
    let processor = std::sync::Arc::new(processor);
    let scope = InstrumentationScope::builder("room619").build();
    processor.on_end(plain(&scope, 1));
    let stopped = {
        let processor = std::sync::Arc::clone(&processor);
        tokio::task::spawn_blocking(move || {
            processor.shutdown_with_timeout(Duration::from_secs(10))
        })
        .await
        .unwrap_or_else(|err| panic!("{err}"))
    };
    assert!(stopped.is_ok(), "{stopped:?}");
    assert_eq!(received_ids(&collector), [1]);
    assert!(
        processor
            .worker
            .lock()
            .unwrap_or_else(|err| panic!("{err}"))
            .is_none(),
        "the export thread was joined"
    );

    processor.on_end(plain(&scope, 2));
    assert!(matches!(
        flush(&processor).await,
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert!(matches!(
        processor.shutdown_with_timeout(Duration::from_secs(1)),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert_eq!(received_ids(&collector), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_processor_still_sends_what_waits() {
    let (processor, collector) = processor(NEVER).await;
    let scope = InstrumentationScope::builder("room619").build();
    processor.on_end(plain(&scope, 3));
    drop(processor);
    assert_eq!(wait_for(&collector, 1).await, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_export_fails_the_flush_with_the_collectors_answer() {
    let collector = Collector {
        rejected: -1,
        ..Collector::default()
    };
    let processor = std::sync::Arc::new(processor_to(&collector, NEVER).await);
    processor.on_end(plain(&InstrumentationScope::builder("room619").build(), 1));
    let err = flush(&processor)
        .await
        .err()
        .unwrap_or_else(|| panic!("a refused export is an error"));
    assert!(err.to_string().contains("ResourceExhausted"), "{err}");
    // The spans are gone with the failed export: the next flush has none.
    assert!(flush(&processor).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_asked_during_a_failing_export_is_told_of_its_failure() {
    let collector = Collector {
        rejected: -1,
        delay: Duration::from_millis(500),
        ..Collector::default()
    };
    let processor =
        std::sync::Arc::new(processor_to(&collector, Schedule { batch: 1, ..NEVER }).await);
    // A full batch: the export starts, and the collector holds it.
    processor.on_end(plain(&InstrumentationScope::builder("room619").build(), 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.arrived.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the batch was not exported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The span ended before the flush, and is in the failing export: the
    // flush fails, though the export it waits for (of nothing) does not.
    let err = flush(&processor)
        .await
        .err()
        .unwrap_or_else(|| panic!("the flush did not see the failure"));
    assert!(err.to_string().contains("ResourceExhausted"), "{err}");
    assert!(flush(&processor).await.is_ok(), "the failure is told once");
}

/// `OTEL_BSP_*` variables set, and the batch, queue and delay they make.
type Case = (
    &'static [(&'static str, &'static str)],
    (usize, usize, Duration),
);

#[test]
fn the_schedule_reads_the_sdks_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    };
    let ms = Duration::from_millis;
    let cases: [Case; 4] = [
        (&[], (512, 2_048, ms(5_000))),
        (
            &[
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", " 100 "),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ],
            (64, 100, ms(250)),
        ),
        // Nonsense is ignored; a batch is never larger than the queue.
        (
            &[
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "1000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "-5"),
            ],
            (1_000, 1_000, ms(5_000)),
        ),
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")], (512, 2_048, ms(5_000))),
    ];
    for (set, expected) in cases {
        let schedule = Schedule::from_vars(vars(set));
        assert_eq!(
            (schedule.batch, schedule.queue, schedule.delay),
            expected,
            "{set:?}"
        );
    }
}

#[test]
fn dropped_spans_are_counted_and_told_once_a_minute_and_at_the_end() {
    let mut last = None;
    let mut dropped = Dropped::default();
    assert_eq!(
        take_dropped(&mut dropped, &mut last, false),
        None,
        "nothing dropped"
    );
    dropped.queue_full = 3;
    let told = take_dropped(&mut dropped, &mut last, false);
    assert_eq!(told.map(|told| told.queue_full), Some(3));
    assert_eq!(dropped, Dropped::default());
    dropped.too_large = 2;
    assert_eq!(
        take_dropped(&mut dropped, &mut last, false),
        None,
        "told a moment ago"
    );
    assert_eq!(dropped.too_large, 2, "kept for the next warning");
    let told = take_dropped(&mut dropped, &mut last, true);
    assert_eq!(
        told.map(|told| told.too_large),
        Some(2),
        "the last count is told"
    );
    dropped.queue_full = 1;
    last = last.and_then(|at: Instant| at.checked_sub(super::DROPPED_LOG_INTERVAL));
    assert!(take_dropped(&mut dropped, &mut last, false).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_larger_than_a_request_is_dropped_and_counted() {
    let (processor, collector) = processor(NEVER).await;
    let processor = std::sync::Arc::new(processor);
    let scope = InstrumentationScope::builder("room619").build();
    let mut huge = plain(&scope, 1);
    huge.attributes = vec![opentelemetry::KeyValue::new(
        "payload",
        "x".repeat(super::MAX_SPAN),
    )];
    processor.on_end(huge);
    processor.on_end(plain(&scope, 2));
    assert_eq!(processor.shared.lock().dropped.too_large, 1);
    assert!(flush(&processor).await.is_ok());
    assert_eq!(received_ids(&collector), [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_sends_requests_of_at_most_the_batch_size() {
    let (processor, collector) = processor(Schedule { batch: 2, ..NEVER }).await;
    let processor = std::sync::Arc::new(processor);
    let scope = InstrumentationScope::builder("room619").build();
    {
        // Five spans at once, before the export thread can take two.
        let mut state = processor.shared.lock();
        for id in 1..=5 {
            let span = plain(&scope, id);
            let prepared = crate::observability::tracing::otlp::Prepared::of(&span);
            let mut record = Vec::new();
            prepared.write(&span, &mut record);
            state.spans.push(&scope, &record);
        }
    }
    assert!(flush(&processor).await.is_ok());
    let sizes: Vec<usize> = requests(&collector)
        .iter()
        .map(|request| request.resource_spans[0].scope_spans[0].spans.len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(received_ids(&collector), [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_too_long_to_reach_means_no_timed_exports() {
    let (processor, collector) = processor(Schedule {
        delay: Duration::MAX,
        ..NEVER
    })
    .await;
    let processor = std::sync::Arc::new(processor);
    processor.on_end(plain(&InstrumentationScope::builder("room619").build(), 1));
    // The export thread did not die computing its next export's time.
    assert!(flush(&processor).await.is_ok());
    assert_eq!(received_ids(&collector), [1]);
}
