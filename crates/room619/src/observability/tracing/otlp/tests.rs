use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, StringValue, Value,
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::{
    tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};
use prost::Message as _;

use super::{Encoded, EncodedResource, OtlpExporter, Part, Prepared, varint_len};

fn context(trace: u128, span: u64, remote: bool, state: TraceState) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        state,
    )
}

fn at(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A span with nothing but ids, times and a name.
pub(in crate::observability::tracing) fn plain(
    scope: &InstrumentationScope,
    span: u64,
) -> SpanData {
    SpanData {
        span_context: context(7, span, false, TraceState::NONE),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed("plain"),
        start_time: at(1_700_000_000_000_000_000),
        end_time: at(1_700_000_000_000_050_000),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// Every kind of value, at and away from its default.
fn every_value() -> Vec<KeyValue> {
    vec![
        KeyValue::new("s", "ü ünicode"),
        KeyValue::new("empty", ""),
        KeyValue::new("t", true),
        KeyValue::new("f", false),
        KeyValue::new("zero", 0_i64),
        KeyValue::new("negative", -42_i64),
        KeyValue::new("big", i64::MAX),
        KeyValue::new("float", 0.25_f64),
        KeyValue::new("nan-free zero", 0.0_f64),
        KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, 300]))),
        KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, -0.0]))),
        KeyValue::new(
            "strings",
            Value::Array(Array::String(vec![
                StringValue::from("a"),
                StringValue::from(""),
            ])),
        ),
        KeyValue::new("no elements", Value::Array(Array::I64(Vec::new()))),
        KeyValue::new("", "an empty key"),
        KeyValue::new("long", "x".repeat(300)),
        // The longest whose every length takes one byte (127), and one more.
        KeyValue::new("edge", "e".repeat(117)),
        KeyValue::new("edge+1", "e".repeat(116)),
    ]
}

/// A batch over two scopes, the first again after the second, with every
/// field of a span set somewhere.
fn batch() -> Vec<SpanData> {
    let room619 = InstrumentationScope::builder("room619").build();
    let other = InstrumentationScope::builder("other")
        .with_version("1.2.3")
        .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
        .with_attributes([KeyValue::new("scope.attr", 1_i64)])
        .build();
    let mut full = plain(&room619, 2);
    full.span_context = context(
        u128::MAX - 5,
        u64::MAX - 3,
        true,
        TraceState::from_key_value([("vendor", "value"), ("other", "1")])
            .unwrap_or_else(|err| panic!("{err}")),
    );
    full.parent_span_id = SpanId::from(99);
    full.parent_span_is_remote = true;
    full.span_kind = SpanKind::Server;
    full.name = Cow::Owned("GET /users/{id}".to_owned());
    full.attributes = every_value();
    full.dropped_attributes_count = 3;
    full.events.events.push(Event::new(
        "exception",
        at(1_700_000_000_000_010_000),
        vec![KeyValue::new("exception.message", "boom")],
        1,
    ));
    full.events
        .events
        .push(Event::new("", SystemTime::UNIX_EPOCH, Vec::new(), 0));
    full.events.dropped_count = 4;
    full.links.links.push(Link::new(
        context(
            5,
            6,
            true,
            TraceState::from_key_value([("k", "v")]).unwrap_or_else(|err| panic!("{err}")),
        ),
        vec![KeyValue::new("link.attr", true)],
        2,
    ));
    full.links.links.push(Link::new(
        context(8, 9, false, TraceState::NONE),
        Vec::new(),
        0,
    ));
    full.links.dropped_count = 5;
    full.status = Status::error("the handler failed");

    let mut client = plain(&other, 3);
    client.span_kind = SpanKind::Client;
    client.status = Status::Ok;
    client.parent_span_id = SpanId::from(2);
    let mut producer = plain(&room619, 4);
    producer.span_kind = SpanKind::Producer;
    producer.start_time = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    let mut consumer = plain(&other, 5);
    consumer.span_kind = SpanKind::Consumer;
    consumer.name = Cow::Borrowed("");
    vec![plain(&room619, 1), full, client, producer, consumer]
}

pub(in crate::observability::tracing) fn resource() -> Resource {
    Resource::builder_empty()
        .with_schema_url(
            [
                KeyValue::new("service.name", "users"),
                KeyValue::new("host.cores", 2_i64),
            ],
            "https://opentelemetry.io/schemas/1.30.0",
        )
        .build()
}

/// What `opentelemetry-otlp` would send for `spans`.
fn reference(spans: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(resource),
        ),
    }
}

/// `request` with its resource's attributes in key order: a `Resource`
/// keeps them in a hash map, whose order differs from one map to the next.
fn sorted(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = &mut resource_spans.resource {
            resource.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
    request
}

/// `spans`, encoded as the processor does when each ends.
fn queue(spans: &[SpanData]) -> Encoded {
    let mut encoded = Encoded::default();
    for span in spans {
        let prepared = Prepared::of(span);
        let mut record = Vec::new();
        prepared.write(span, &mut record);
        assert_eq!(record.len(), prepared.record_len());
        encoded.push(&span.instrumentation_scope, &record);
    }
    assert_eq!(encoded.len(), spans.len());
    encoded
}

/// The one request that sends `spans` with `resource`.
fn encoded(spans: &[SpanData], resource: &Resource) -> Vec<u8> {
    let encoded = queue(spans);
    let resource = EncodedResource::new(resource);
    let plan = encoded.plan(&resource, usize::MAX, usize::MAX);
    assert_eq!(plan.len(), 1);
    written(&encoded, &resource, &plan[0])
}

/// The request that holds `parts`, checked to be as long as planned.
fn written(encoded: &Encoded, resource: &EncodedResource, parts: &[Part]) -> Vec<u8> {
    let request = encoded.request(resource, parts);
    assert_eq!(
        request.len(),
        encoded.request_len(resource, parts),
        "the planned length is the written one"
    );
    request
}

#[test]
fn a_batch_decodes_to_what_opentelemetry_proto_makes_of_it() {
    let bytes = encoded(&batch(), &resource());
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice())
        .unwrap_or_else(|err| panic!("the request does not decode: {err}"));
    assert_eq!(
        sorted(decoded.clone()),
        sorted(reference(batch(), &resource()))
    );
    let scopes = &decoded.resource_spans[0].scope_spans;
    assert_eq!(scopes.len(), 2, "spans grouped by scope");
    assert_eq!(scopes[0].spans.len(), 3);
}

#[test]
fn an_empty_resource_decodes_too() {
    let empty = Resource::builder_empty().build();
    let bytes = encoded(&batch(), &empty);
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice())
        .unwrap_or_else(|err| panic!("the request does not decode: {err}"));
    assert_eq!(sorted(decoded), sorted(reference(batch(), &empty)));
}

#[test]
fn nothing_waiting_is_no_request() {
    let encoded = Encoded::default();
    assert!(encoded.is_empty());
    let resource = EncodedResource::new(&resource());
    assert!(encoded.plan(&resource, 512, usize::MAX).is_empty());

    // Cleared after an export, the scopes stay (with their room) but an
    // empty one is not sent.
    let mut encoded = queue(&batch());
    encoded.clear();
    assert!(encoded.is_empty());
    assert!(encoded.plan(&resource, 512, usize::MAX).is_empty());
    let room619 = InstrumentationScope::builder("room619").build();
    let one = queue(&[plain(&room619, 1)]);
    let mut record = Vec::new();
    Prepared::of(&plain(&room619, 1)).write(&plain(&room619, 1), &mut record);
    encoded.push(&room619, &record);
    let plan = encoded.plan(&resource, 512, usize::MAX);
    assert_eq!(plan.len(), 1);
    assert_eq!(
        written(&encoded, &resource, &plan[0]),
        written(&one, &resource, &one.plan(&resource, 512, usize::MAX)[0]),
        "the same request as from fresh buffers"
    );
}

#[test]
fn varint_lengths_match_the_bytes_written() {
    for value in [
        0,
        1,
        127,
        128,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let mut buf = Vec::new();
        super::put_varint(&mut buf, value);
        assert_eq!(buf.len(), varint_len(value), "{value}");
        let mut slice = buf.as_slice();
        assert_eq!(prost::encoding::decode_varint(&mut slice).ok(), Some(value));
    }
}

/// A collector that keeps what it is sent and answers as told.
#[derive(Clone, Default)]
pub(in crate::observability::tracing) struct Collector {
    pub(in crate::observability::tracing) received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Rejected spans to report (a partial success), or below 0: refuse.
    pub(in crate::observability::tracing) rejected: i64,
    /// Requests that arrived, answered yet or not.
    pub(in crate::observability::tracing) arrived: Arc<std::sync::atomic::AtomicUsize>,
    /// How long to wait before answering.
    pub(in crate::observability::tracing) delay: Duration,
    /// Requests still to answer `UNAVAILABLE` (as a restarting collector).
    pub(in crate::observability::tracing) unavailable: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let unavailable = self.unavailable.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |left| left.checked_sub(1),
        );
        if unavailable.is_ok() {
            return Err(tonic::Status::unavailable("restarting"));
        }
        if self.rejected < 0 {
            return Err(tonic::Status::resource_exhausted("the collector is full"));
        }
        self.received
            .lock()
            .unwrap_or_else(|err| panic!("{err}"))
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected,
                error_message: "too many attributes".to_owned(),
            }),
        }))
    }
}

pub(in crate::observability::tracing) async fn serve(collector: Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn exports_reach_a_collector_as_sent() {
    let collector = Collector::default();
    let endpoint = serve(collector.clone()).await;
    let exporter =
        OtlpExporter::new(&endpoint, Duration::from_secs(5)).unwrap_or_else(|err| panic!("{err}"));
    let encoded_resource = EncodedResource::new(&resource());
    for _ in 0..2 {
        exporter
            .export(&queue(&batch()), &encoded_resource, 512)
            .await
            .unwrap_or_else(|err| panic!("export failed: {err}"));
    }
    let received = collector
        .received
        .lock()
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(received.len(), 2);
    assert_eq!(
        sorted(received[1].clone()),
        sorted(reference(batch(), &resource()))
    );
}

#[tokio::test]
async fn a_partial_success_is_a_success_and_a_refusal_an_error() {
    let partial = Collector {
        rejected: 2,
        ..Collector::default()
    };
    let exporter = OtlpExporter::new(&serve(partial.clone()).await, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    let resource = EncodedResource::new(&resource());
    assert!(
        exporter
            .export(&queue(&batch()), &resource, 512)
            .await
            .is_ok()
    );
    assert_eq!(
        partial
            .received
            .lock()
            .unwrap_or_else(|err| panic!("{err}"))
            .len(),
        1
    );

    let full = Collector {
        rejected: -1,
        ..Collector::default()
    };
    let exporter = OtlpExporter::new(&serve(full).await, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    let err = exporter
        .export(&queue(&batch()), &resource, 512)
        .await
        .err()
        .unwrap_or_else(|| panic!("a refused export is an error"));
    assert!(err.to_string().contains("ResourceExhausted"), "{err}");
}

/// A collector restarting (`UNAVAILABLE`) gets the request again after a
/// backoff; one still unavailable after every attempt fails the export.
#[tokio::test]
async fn an_unavailable_collector_is_sent_the_request_again() {
    let restarting = Collector {
        unavailable: Arc::new(2.into()),
        ..Collector::default()
    };
    let exporter = OtlpExporter::new(&serve(restarting.clone()).await, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    let resource = EncodedResource::new(&resource());
    exporter
        .export(&queue(&batch()), &resource, 512)
        .await
        .unwrap_or_else(|err| panic!("export failed: {err}"));
    let arrived = restarting.arrived.load(std::sync::atomic::Ordering::SeqCst);
    let received = restarting
        .received
        .lock()
        .unwrap_or_else(|err| panic!("{err}"))
        .len();
    assert_eq!((arrived, received), (3, 1));

    let down = Collector {
        unavailable: Arc::new(usize::MAX.into()),
        ..Collector::default()
    };
    let exporter = OtlpExporter::new(&serve(down.clone()).await, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    let err = exporter
        .export(&queue(&batch()), &resource, 512)
        .await
        .err()
        .unwrap_or_else(|| panic!("a collector always unavailable fails the export"));
    assert!(err.to_string().contains("attempt 3 of at most 3"), "{err}");
    assert_eq!(down.arrived.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A collector whose packets are dropped (no answer to the connection at
/// all) costs the export timeout, not the system's TCP connect timeout.
#[tokio::test]
async fn a_collector_that_never_answers_the_connection_costs_the_timeout() {
    // A listener whose backlog is full: further connections get no SYN-ACK.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("{err}"));
    let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
    let _held: Vec<std::net::TcpStream> = (0..512)
        .map_while(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            socket.set_nonblocking(true).ok()?;
            // Non-blocking: "in progress" is the expected answer.
            let _in_progress = socket.connect(&addr.into());
            Some(socket.into())
        })
        .collect();
    let exporter = OtlpExporter::new(&format!("http://{addr}"), Duration::from_millis(500))
        .unwrap_or_else(|err| panic!("{err}"));
    let resource = EncodedResource::new(&resource());
    let spans = queue(&batch());
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        exporter.export(&spans, &resource, 512),
    )
    .await
    .unwrap_or_else(|_| panic!("the export hung"));
    assert!(outcome.is_err());
    // Three attempts of 500 ms and two backoffs, far below Linux's ~2 min.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn an_unreachable_collector_fails_the_export_without_hanging() {
    // A port bound but not listened on, and kept so for the test: a
    // connection to it is refused, and no other test can take it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .unwrap_or_else(|err| panic!("{err}"));
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap_or_else(|err| panic!("{err}"));
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_socket())
        .unwrap_or_else(|| panic!("no local address"));
    let exporter = OtlpExporter::new(&format!("http://{addr}"), Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    let resource = EncodedResource::new(&resource());
    let spans = queue(&batch());
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        exporter.export(&spans, &resource, 512),
    )
    .await
    .unwrap_or_else(|_| panic!("the export hung"));
    assert!(outcome.is_err());
}

#[tokio::test]
async fn endpoints_that_are_not_plain_http_are_refused() {
    for endpoint in ["https://collector:4317", "collector:4317", "not a uri"] {
        let err = OtlpExporter::new(endpoint, Duration::from_secs(1))
            .err()
            .unwrap_or_else(|| panic!("`{endpoint}` was accepted"));
        assert!(err.to_string().contains(endpoint), "{err}");
    }
}

#[test]
fn failing_exports_are_logged_once_a_minute_with_a_count() {
    use crate::observability::test_lines::Lines;

    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.make_writer())
        .with_ansi(false)
        .finish();
    let failures = super::Failures::default();
    tracing::subscriber::with_default(subscriber, || {
        for attempt in 0..3 {
            let err = failures.failed(format!("attempt {attempt}"));
            assert!(
                err.to_string().contains(&format!("attempt {attempt}")),
                "{err}"
            );
        }
        assert_eq!(lines.text().lines().count(), 1, "{}", lines.text());
        assert!(lines.text().contains("attempt 0"), "{}", lines.text());

        // A minute later, the next failure is logged with the count since.
        let mut last = failures.last.lock().unwrap_or_else(|err| panic!("{err}"));
        let (at, suppressed) = last.unwrap_or_else(|| panic!("nothing recorded"));
        assert_eq!(suppressed, 2);
        *last = Some((
            at.checked_sub(super::FAILURE_LOG_INTERVAL)
                .unwrap_or_else(|| panic!("the clock is too young")),
            suppressed,
        ));
        drop(last);
        failures.failed("attempt 3".to_owned());
    });
    let text = lines.text();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("attempt 3") && text.contains("failed_since_last_warning=2"),
        "{text}"
    );
}

/// The scopes and span ids (last byte) of each request of `plan`, each
/// request checked to decode and to be as long as planned.
fn sent(
    encoded: &Encoded,
    resource: &EncodedResource,
    plan: &[Vec<Part>],
) -> Vec<Vec<(String, Vec<u8>)>> {
    plan.iter()
        .map(|parts| {
            let bytes = written(encoded, resource, parts);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice())
                .unwrap_or_else(|err| panic!("a request does not decode: {err}"));
            assert_eq!(decoded.resource_spans.len(), 1);
            decoded.resource_spans[0]
                .scope_spans
                .iter()
                .map(|scope| {
                    (
                        scope
                            .scope
                            .as_ref()
                            .map(|scope| scope.name.clone())
                            .unwrap_or_default(),
                        scope.spans.iter().map(|span| span.span_id[7]).collect(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn spans_too_many_for_one_request_go_in_several_that_fit() {
    let room619 = InstrumentationScope::builder("room619").build();
    let other = InstrumentationScope::builder("other").build();
    let spans: Vec<SpanData> = (0..40)
        .map(|n| {
            // Two scopes, in turn: each request groups its spans by scope.
            let mut span = plain(if n % 2 == 0 { &room619 } else { &other }, n + 1);
            // About a kilobyte each.
            span.attributes = vec![KeyValue::new("payload", "x".repeat(1000))];
            span
        })
        .chain(std::iter::once({
            // One span larger than a request may be: it goes alone.
            let mut span = plain(&room619, 99);
            span.attributes = vec![KeyValue::new("payload", "y".repeat(20_000))];
            span
        }))
        .collect();
    let encoded = queue(&spans);
    let resource = EncodedResource::new(&resource());
    let max = 10_000;
    let plan = encoded.plan(&resource, usize::MAX, max);
    // 41 kB of spans, at most 9 a request (with the overhead), the large
    // one alone: 6 or 7 requests, not one a span.
    assert!((6..=7).contains(&plan.len()), "{} requests", plan.len());
    let requests = sent(&encoded, &resource, &plan);
    for (request, parts) in requests.iter().zip(&plan) {
        let scopes: Vec<&str> = request.iter().map(|(scope, _)| scope.as_str()).collect();
        let mut unique = scopes.clone();
        unique.dedup();
        assert_eq!(scopes, unique, "a scope once a request");
        let bytes = encoded.request_len(&resource, parts);
        let count: usize = request.iter().map(|(_, ids)| ids.len()).sum();
        assert!(bytes <= max || count == 1, "{bytes} bytes in {count} spans");
    }
    // Each scope's spans in the order they ended, every span once.
    let of = |name: &str| -> Vec<u8> {
        requests
            .iter()
            .flatten()
            .filter(|(scope, _)| scope == name)
            .flat_map(|(_, ids)| ids.clone())
            .collect()
    };
    let expected = |parity: u8| -> Vec<u8> { (1..=40).filter(|id| id % 2 == parity).collect() };
    assert_eq!(of("room619"), [expected(1), vec![99]].concat());
    assert_eq!(of("other"), expected(0));
}

#[test]
fn a_request_holds_at_most_the_batch_size() {
    let room619 = InstrumentationScope::builder("room619").build();
    let other = InstrumentationScope::builder("other").build();
    let spans: Vec<SpanData> = (1..=7)
        .map(|id| plain(if id == 4 { &other } else { &room619 }, id))
        .collect();
    let encoded = queue(&spans);
    let resource = EncodedResource::new(&resource());
    let plan = encoded.plan(&resource, 3, usize::MAX);
    let requests = sent(&encoded, &resource, &plan);
    let shape: Vec<Vec<(&str, Vec<u8>)>> = requests
        .iter()
        .map(|request| {
            request
                .iter()
                .map(|(scope, ids)| (scope.as_str(), ids.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        shape,
        [
            vec![("room619", vec![1, 2, 3])],
            vec![("room619", vec![5, 6, 7])],
            vec![("other", vec![4])],
        ]
    );
}
