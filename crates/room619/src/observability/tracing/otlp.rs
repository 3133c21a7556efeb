//! OTLP/gRPC span export, encoded straight from the SDK's span data.
//!
//! `opentelemetry-otlp` turns every batch into the generated
//! `opentelemetry-proto` messages first (an owned `Vec` for each id, a
//! `String` for each name, key and string value, a `Vec` of attributes per
//! span), then prost encodes them. Here each span is written as it ends
//! ([`Prepared::write`], from the [processor](super::processor)) from the
//! borrowed [`SpanData`], in two passes (its length, then its bytes): no
//! intermediate message, and no allocation per span but for a span's
//! `tracestate`, when it has one. [`OtlpExporter`] sends the encoded spans,
//! grouped by scope under the resource, in as few
//! `ExportTraceServiceRequest`s as keep each within the batch size and what
//! a collector takes by default (4 MiB) rather than being refused whole. A test decodes what
//! is written with `opentelemetry-proto` and compares it with that crate's
//! own conversion of the same spans.

use std::{
    fmt,
    ops::Range,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::BufMut;
use http::uri::PathAndQuery;
use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::SpanData,
};
use tonic::{
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
};

use crate::{Error, Result};

/// The collector's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Exports spans to an OpenTelemetry collector with OTLP over gRPC
/// (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
#[derive(Clone)]
pub(crate) struct OtlpExporter {
    grpc: Grpc<Channel>,
    failures: Arc<Failures>,
    /// The runtime the channel runs on, whose timers the waits between
    /// attempts use (exports run on a thread of their own).
    runtime: tokio::runtime::Handle,
}

/// Attempts of one request when the collector is unavailable for now.
const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; it quadruples after.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2 pings on a connection to the collector: a collector gone without
/// closing (a node lost) is noticed in this, plus the export timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter").finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter to the collector at `endpoint` (`http://host:4317`),
    /// connecting on the first export; connecting and each request may take
    /// `timeout` (a collector that drops packets costs that, not the
    /// system's TCP connect timeout). Call it inside a tokio runtime: the
    /// channel's connection runs there.
    ///
    /// # Errors
    ///
    /// `Config` when `endpoint` is not a URI, or asks for TLS (`https`),
    /// which this exporter does not speak; `Internal` outside a tokio
    /// runtime.
    pub(crate) fn new(endpoint: &str, timeout: Duration) -> Result<Self> {
        let invalid = |why: &dyn fmt::Display| {
            Error::config(format!("telemetry.otlp_endpoint `{endpoint}`: {why}"))
        };
        let endpoint_uri =
            Endpoint::from_shared(endpoint.to_owned()).map_err(|err| invalid(&err))?;
        match endpoint_uri.uri().scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    &"TLS is not supported: export to a collector over `http://` (a sidecar or node-local agent)",
                ));
            }
            _ => return Err(invalid(&"the endpoint must be an `http://host:port` URL")),
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::internal("the OTLP exporter must be made inside a tokio runtime")
        })?;
        let channel = endpoint_uri
            .timeout(timeout)
            .connect_timeout(timeout)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            grpc: Grpc::new(channel),
            failures: Arc::new(Failures::default()),
            runtime,
        })
    }

    /// Sends `spans` with `resource`, in requests of at most `max_spans`
    /// spans and [`MAX_REQUEST`] bytes, each written as it is sent. A
    /// request the collector cannot take for now (`UNAVAILABLE`, as while it
    /// restarts or cannot be reached, or `ABORTED`) is sent again, [`ATTEMPTS`]
    /// times in all with a backoff, as the OTLP specification asks; one that fails
    /// otherwise loses its spans, not the next requests'. One still
    /// unavailable after every attempt ends the export: the requests after it
    /// would wait as long for the same answer while spans pile up.
    ///
    /// # Errors
    ///
    /// The first failure: the collector could not be reached, or refused a
    /// request.
    pub(super) async fn export(
        &self,
        spans: &Encoded,
        resource: &EncodedResource,
        max_spans: usize,
    ) -> OTelSdkResult {
        let mut outcome = Ok(());
        for parts in spans.plan(resource, max_spans, MAX_REQUEST) {
            let request = bytes::Bytes::from(spans.request(resource, &parts));
            let (sent, unavailable) = match self.send(request).await {
                Ok(()) => (Ok(()), false),
                Err((error, unavailable)) => (Err(error), unavailable),
            };
            if outcome.is_ok() {
                outcome = sent;
            }
            if unavailable {
                break;
            }
        }
        outcome
    }

    /// Sends one request, again while the collector is unavailable for now;
    /// a refusal fails it (with whether the collector was unavailable to the
    /// last).
    async fn send(&self, request: bytes::Bytes) -> Result<(), (OTelSdkError, bool)> {
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 1;
        let response = loop {
            let status = match self.attempt(request.clone()).await {
                Ok(response) => break response,
                Err(status) => status,
            };
            // The codes OTLP calls retryable that fail fast (not a
            // `DEADLINE_EXCEEDED` after the whole timeout); a collector's
            // `RESOURCE_EXHAUSTED` asks for a wait this exporter cannot
            // read (`RetryInfo`): not retried.
            let passing = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Aborted
            );
            if !passing || attempt == ATTEMPTS {
                let error = self.failures.failed(format!(
                    "the collector answered {:?} (attempt {attempt} of at most {ATTEMPTS}): {}",
                    status.code(),
                    status.message()
                ));
                return Err((error, passing));
            }
            attempt += 1;
            // On the runtime, whose timers this thread cannot drive; a
            // runtime shut down meanwhile ends the wait (and the retries).
            let pause = self
                .runtime
                .spawn(tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())));
            if pause.await.is_err() {
                let error = self.failures.failed(format!(
                    "the collector answered {:?} and the runtime shut down: {}",
                    status.code(),
                    status.message()
                ));
                return Err((error, true));
            }
            backoff = backoff.saturating_mul(4);
        };
        if let Some(partial) = response.partial_success
            && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
        {
            tracing::warn!(
                rejected_spans = partial.rejected_spans,
                error = %partial.error_message,
                "the OTLP collector rejected spans"
            );
        }
        Ok(())
    }

    async fn attempt(
        &self,
        request: bytes::Bytes,
    ) -> std::result::Result<ExportResponse, tonic::Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|err| {
            tonic::Status::unavailable(format!("the collector is not reachable: {err}"))
        })?;
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(EXPORT_PATH),
                ExportCodec,
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// Failed exports, logged here (a `force_flush` caller sees the error, the
/// timer's and a full batch's exports have no caller) at most once per
/// [`FAILURE_LOG_INTERVAL`], with how many failed since the last line: a
/// collector that is down fails every batch, and a busy node sends several
/// a second.
#[derive(Default)]
struct Failures {
    /// When the last line was logged, and the failures since.
    last: Mutex<Option<(Instant, u64)>>,
}

/// How often a failing export is logged at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Failures {
    fn failed(&self, why: String) -> OTelSdkError {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let suppressed = match *last {
            Some((at, suppressed)) if now.duration_since(at) < FAILURE_LOG_INTERVAL => {
                *last = Some((at, suppressed + 1));
                None
            }
            Some((_, suppressed)) => Some(suppressed),
            None => Some(0),
        };
        if let Some(suppressed) = suppressed {
            *last = Some((now, 0));
            drop(last);
            tracing::warn!(
                error = %why,
                failed_since_last_warning = suppressed,
                "exporting spans failed"
            );
        }
        OTelSdkError::InternalFailure(why)
    }
}

/// The resource every batch is sent with, encoded once: the body of an OTLP
/// `Resource` and the resource's schema URL.
#[derive(Debug)]
pub(super) struct EncodedResource {
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub(super) fn new(resource: &Resource) -> Self {
        let attributes: Vec<KeyValue> = resource
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
            .collect();
        let mut body = Vec::with_capacity(attributes_len(1, &attributes));
        put_attributes(&mut body, 1, &attributes);
        Self {
            body,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// The largest request sent: an OpenTelemetry Collector takes at most 4 MiB
/// by default (`max_recv_msg_size_mib`), and refuses a larger request whole.
pub(super) const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Finished spans, encoded as they end, waiting to be exported: for each
/// instrumentation scope, in the order scopes first appear (as
/// `opentelemetry-proto` groups them), its spans as the `spans` fields of an
/// OTLP `ScopeSpans`, one after another. The `SpanData` is not kept: no copy
/// of it through a channel into a batch, no batch to plan, only bytes.
#[derive(Default)]
pub(super) struct Encoded {
    /// Every scope seen, its spans' bytes cleared (not freed) after each
    /// export; a scope with none waiting is left out of a request.
    scopes: Vec<ScopeSpans>,
    spans: usize,
}

struct ScopeSpans {
    scope: InstrumentationScope,
    /// `ScopeSpans.spans` fields (2): key, length, `Span`, for each span.
    spans: Vec<u8>,
}

/// What a span's encoding needs worked out before its first byte is
/// written.
pub(super) struct Prepared {
    len: usize,
    /// The W3C `tracestate`, when the span has one.
    trace_state: Option<String>,
}

impl Prepared {
    pub(super) fn of(span: &SpanData) -> Self {
        let trace_state = trace_state(&span.span_context);
        Self {
            len: span_len(span, trace_state.as_deref()),
            trace_state,
        }
    }

    /// The length of the span's record: key, length and `Span`.
    pub(super) fn record_len(&self) -> usize {
        len_field_len(2, self.len)
    }

    /// Writes `span`'s record (a `ScopeSpans.spans` field) to `buf`.
    pub(super) fn write(&self, span: &SpanData, buf: &mut Vec<u8>) {
        buf.reserve(self.record_len());
        put_len_prefix(buf, 2, self.len);
        put_span(buf, span, self.trace_state.as_deref());
    }
}

impl Encoded {
    /// How many spans wait.
    pub(super) fn len(&self) -> usize {
        self.spans
    }

    pub(super) fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Appends a span of `scope`, its `record` written by
    /// [`Prepared::write`].
    pub(super) fn push(&mut self, scope: &InstrumentationScope, record: &[u8]) {
        let index = if let Some(index) = self.scopes.iter().position(|spans| spans.scope == *scope)
        {
            index
        } else {
            self.scopes.push(ScopeSpans {
                scope: scope.clone(),
                spans: Vec::new(),
            });
            self.scopes.len() - 1
        };
        self.scopes[index].spans.extend_from_slice(record);
        self.spans += 1;
    }

    /// Forgets the spans, keeping the room they took for the next ones.
    pub(super) fn clear(&mut self) {
        for scope in &mut self.scopes {
            scope.spans.clear();
        }
        self.spans = 0;
    }

    /// How these spans go in `ExportTraceServiceRequest`s of at most
    /// `max_spans` spans and `max_bytes` bytes (a span larger than that on
    /// its own goes alone): the spans of each scope in their order, as few
    /// requests as that allows. None when no span waits.
    pub(super) fn plan(
        &self,
        resource: &EncodedResource,
        max_spans: usize,
        max_bytes: usize,
    ) -> Vec<Vec<Part>> {
        // What a request holds besides its spans, at most: the resource
        // and every scope's header, each length prefix at its longest.
        let overhead = self.request_len(
            resource,
            &(0..self.scopes.len())
                .map(|scope| Part { scope, spans: 0..0 })
                .collect::<Vec<_>>(),
        ) + 4 * (1 + self.scopes.len());
        let mut requests = Vec::new();
        let (mut parts, mut len, mut count) = (Vec::<Part>::new(), overhead, 0);
        for (scope, spans) in self.scopes.iter().enumerate() {
            let mut start = 0;
            for end in record_ends(&spans.spans) {
                let record = end - start;
                if !parts.is_empty() && (len + record > max_bytes || count == max_spans) {
                    requests.push(std::mem::take(&mut parts));
                    (len, count) = (overhead, 0);
                }
                match parts.last_mut() {
                    Some(part) if part.scope == scope => part.spans.end = end,
                    _ => parts.push(Part {
                        scope,
                        spans: start..end,
                    }),
                }
                (len, count) = (len + record, count + 1);
                start = end;
            }
        }
        if !parts.is_empty() {
            requests.push(parts);
        }
        requests
    }

    /// The length of the `ExportTraceServiceRequest` that holds `parts`.
    fn request_len(&self, resource: &EncodedResource, parts: &[Part]) -> usize {
        len_field_len(1, self.resource_spans_len(resource, parts))
    }

    /// The length of the one `ResourceSpans` that holds `parts`.
    fn resource_spans_len(&self, resource: &EncodedResource, parts: &[Part]) -> usize {
        len_field_len(1, resource.body.len())
            + parts
                .iter()
                .map(|part| len_field_len(2, self.scope_spans_len(part)))
                .sum::<usize>()
            + str_len(3, &resource.schema_url)
    }

    /// The length of the `ScopeSpans` that holds `part`.
    fn scope_spans_len(&self, part: &Part) -> usize {
        let scope = &self.scopes[part.scope].scope;
        len_field_len(1, scope_len(scope))
            + part.spans.len()
            + str_len(3, scope.schema_url().unwrap_or_default())
    }

    /// The `ExportTraceServiceRequest` that holds `parts` (one request of
    /// a [`plan`](Self::plan)): one `ResourceSpans`, and a `ScopeSpans` for
    /// each part.
    pub(super) fn request(&self, resource: &EncodedResource, parts: &[Part]) -> Vec<u8> {
        let resource_spans_len = self.resource_spans_len(resource, parts);
        let mut buf = Vec::with_capacity(len_field_len(1, resource_spans_len));
        put_len_prefix(&mut buf, 1, resource_spans_len);
        put_len_prefix(&mut buf, 1, resource.body.len());
        buf.put_slice(&resource.body);
        for part in parts {
            let ScopeSpans { scope, spans } = &self.scopes[part.scope];
            put_len_prefix(&mut buf, 2, self.scope_spans_len(part));
            put_len_prefix(&mut buf, 1, scope_len(scope));
            put_scope(&mut buf, scope);
            buf.put_slice(&spans[part.spans.clone()]);
            put_str(&mut buf, 3, scope.schema_url().unwrap_or_default());
        }
        put_str(&mut buf, 3, &resource.schema_url);
        buf
    }
}

/// Some of one scope's encoded spans: a byte range of its `spans`.
pub(super) struct Part {
    scope: usize,
    spans: Range<usize>,
}

/// Where each span written by [`Prepared::write`] ends in `spans`: past its
/// key (one byte), its length and the `Span` it gives the length of.
fn record_ends(spans: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let mut rest = spans.get(at + 1..).filter(|rest| !rest.is_empty())?;
        let before = rest.len();
        let len = prost::encoding::decode_varint(&mut rest).ok()?;
        let end = at + 1 + (before - rest.len()) + usize::try_from(len).ok()?;
        at = end.min(spans.len());
        Some(at)
    })
}

/// The span context's `tracestate` header, unless it has none.
fn trace_state(context: &SpanContext) -> Option<String> {
    (context.trace_state() != &TraceState::NONE)
        .then(|| context.trace_state().header())
        .filter(|header| !header.is_empty())
}

// --- Messages. Each `*_len` is the length of what the `put_*` beside it
// writes; fields at their default value are left out, as protobuf does.

/// `InstrumentationScope`: name, version, attributes.
fn scope_len(scope: &InstrumentationScope) -> usize {
    str_len(1, scope.name())
        + str_len(2, scope.version().unwrap_or_default())
        + scope
            .attributes()
            .map(|attribute| len_field_len(3, key_value_len(attribute)))
            .sum::<usize>()
}

fn put_scope(buf: &mut impl BufMut, scope: &InstrumentationScope) {
    put_str(buf, 1, scope.name());
    put_str(buf, 2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        put_key_value(buf, 3, attribute);
    }
}

/// OTLP `Span`.
fn span_len(span: &SpanData, state: Option<&str>) -> usize {
    let events: usize = span
        .events
        .iter()
        .map(|event| {
            len_field_len(
                11,
                fixed64_len(1, nanos(event.timestamp))
                    + str_len(2, &event.name)
                    + attributes_len(3, &event.attributes)
                    + uint_len(4, event.dropped_attributes_count),
            )
        })
        .sum();
    let links: usize = span
        .links
        .iter()
        .map(|link| len_field_len(13, link_len(link)))
        .sum();
    len_field_len(1, 16)
        + len_field_len(2, 8)
        + str_len(3, state.unwrap_or_default())
        + if span.parent_span_id == SpanId::INVALID {
            0
        } else {
            len_field_len(4, 8)
        }
        + key_len(16)
        + 4
        + str_len(5, &span.name)
        + uint_len(6, span_kind(&span.span_kind))
        + fixed64_len(7, nanos(span.start_time))
        + fixed64_len(8, nanos(span.end_time))
        + attributes_len(9, &span.attributes)
        + uint_len(10, span.dropped_attributes_count)
        + events
        + uint_len(12, span.events.dropped_count)
        + links
        + uint_len(14, span.links.dropped_count)
        + len_field_len(15, status_len(&span.status))
}

fn put_span(buf: &mut impl BufMut, span: &SpanData, state: Option<&str>) {
    let context = &span.span_context;
    put_bytes(buf, 1, &context.trace_id().to_bytes());
    put_bytes(buf, 2, &context.span_id().to_bytes());
    put_str(buf, 3, state.unwrap_or_default());
    if span.parent_span_id != SpanId::INVALID {
        put_bytes(buf, 4, &span.parent_span_id.to_bytes());
    }
    put_key(buf, 16, FIXED32);
    buf.put_u32_le(span_flags(context, span.parent_span_is_remote));
    put_str(buf, 5, &span.name);
    put_uint(buf, 6, span_kind(&span.span_kind));
    put_fixed64(buf, 7, nanos(span.start_time));
    put_fixed64(buf, 8, nanos(span.end_time));
    put_attributes(buf, 9, &span.attributes);
    put_uint(buf, 10, span.dropped_attributes_count);
    for event in span.events.iter() {
        let time = nanos(event.timestamp);
        put_len_prefix(
            buf,
            11,
            fixed64_len(1, time)
                + str_len(2, &event.name)
                + attributes_len(3, &event.attributes)
                + uint_len(4, event.dropped_attributes_count),
        );
        put_fixed64(buf, 1, time);
        put_str(buf, 2, &event.name);
        put_attributes(buf, 3, &event.attributes);
        put_uint(buf, 4, event.dropped_attributes_count);
    }
    put_uint(buf, 12, span.events.dropped_count);
    for link in span.links.iter() {
        put_len_prefix(buf, 13, link_len(link));
        let context = &link.span_context;
        put_bytes(buf, 1, &context.trace_id().to_bytes());
        put_bytes(buf, 2, &context.span_id().to_bytes());
        put_str(buf, 3, trace_state(context).as_deref().unwrap_or_default());
        put_attributes(buf, 4, &link.attributes);
        put_uint(buf, 5, link.dropped_attributes_count);
        put_key(buf, 6, FIXED32);
        buf.put_u32_le(span_flags(context, context.is_remote()));
    }
    put_uint(buf, 14, span.links.dropped_count);
    put_len_prefix(buf, 15, status_len(&span.status));
    put_status(buf, &span.status);
}

/// `Span.Link` (its trace state worked out again: links are rare).
fn link_len(link: &opentelemetry::trace::Link) -> usize {
    let context = &link.span_context;
    len_field_len(1, 16)
        + len_field_len(2, 8)
        + str_len(3, trace_state(context).as_deref().unwrap_or_default())
        + attributes_len(4, &link.attributes)
        + uint_len(5, link.dropped_attributes_count)
        + key_len(6)
        + 4
}

/// OTLP span flags: the W3C trace flags, and whether the parent is remote
/// (bits 8 and 9, as `opentelemetry-proto` sets them).
fn span_flags(context: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

/// `Span.SpanKind`.
fn span_kind(kind: &SpanKind) -> u32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status`: the message (errors only), and the code.
fn status_len(status: &Status) -> usize {
    match status {
        Status::Unset => 0,
        Status::Ok => uint_len(3, 1),
        Status::Error { description } => str_len(2, description) + uint_len(3, 2),
    }
}

fn put_status(buf: &mut impl BufMut, status: &Status) {
    match status {
        Status::Unset => {}
        Status::Ok => put_uint(buf, 3, 1),
        Status::Error { description } => {
            put_str(buf, 2, description);
            put_uint(buf, 3, 2);
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

// --- Attributes.

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|attribute| len_field_len(field, key_value_len(attribute)))
        .sum()
}

fn put_attributes(buf: &mut impl BufMut, field: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        put_key_value(buf, field, attribute);
    }
}

/// `KeyValue`: the key, and the value as an `AnyValue` (always present).
fn key_value_len(attribute: &KeyValue) -> usize {
    if let Some((key, value)) = short_string(attribute) {
        return short_len(key, value);
    }
    str_len(1, attribute.key.as_str()) + len_field_len(2, any_value_len(&attribute.value))
}

fn put_key_value(buf: &mut impl BufMut, field: u32, attribute: &KeyValue) {
    if let Some((key, value)) = short_string(attribute) {
        // Every length fits in one byte: a span's usual attribute (a
        // method, a route, an id) is written in four copies.
        put_key(buf, field, LEN);
        buf.put_slice(&[one_byte(short_len(key, value)), 0x0a, one_byte(key.len())]);
        buf.put_slice(key.as_bytes());
        buf.put_slice(&[0x12, one_byte(value.len() + 2), 0x0a, one_byte(value.len())]);
        buf.put_slice(value.as_bytes());
        return;
    }
    let key = attribute.key.as_str();
    let value_len = any_value_len(&attribute.value);
    put_len_prefix(buf, field, str_len(1, key) + len_field_len(2, value_len));
    put_str(buf, 1, key);
    put_len_prefix(buf, 2, value_len);
    put_any_value(buf, &attribute.value);
}

/// The key and value of a `KeyValue` with a non-empty key and a string
/// value, short enough that its length and every length inside it take one
/// byte.
fn short_string(attribute: &KeyValue) -> Option<(&str, &str)> {
    let Value::String(value) = &attribute.value else {
        return None;
    };
    let (key, value) = (attribute.key.as_str(), value.as_str());
    (!key.is_empty() && short_len(key, value) < 0x80).then_some((key, value))
}

/// The length of a `KeyValue` of `key` and the string `value`, lengths of
/// one byte: the key (key, length, bytes), then the `AnyValue` (key,
/// length) holding the string (key, length, bytes).
fn short_len(key: &str, value: &str) -> usize {
    2 + key.len() + 2 + 2 + value.len()
}

/// `len`, known to be below 0x80, as its one-byte varint.
fn one_byte(len: usize) -> u8 {
    len.to_le_bytes()[0]
}

/// One value of an attribute or of an array.
enum Scalar<'a> {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(&'a str),
}

/// `AnyValue`, a oneof: its one field is written even at its default.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(value) => scalar_len(&Scalar::Bool(*value)),
        Value::I64(value) => scalar_len(&Scalar::I64(*value)),
        Value::F64(value) => scalar_len(&Scalar::F64(*value)),
        Value::String(value) => scalar_len(&Scalar::Str(value.as_str())),
        Value::Array(array) => len_field_len(5, array_len(array)),
        other => scalar_len(&Scalar::Str(&other.as_str())),
    }
}

fn put_any_value(buf: &mut impl BufMut, value: &Value) {
    match value {
        Value::Bool(value) => put_scalar(buf, &Scalar::Bool(*value)),
        Value::I64(value) => put_scalar(buf, &Scalar::I64(*value)),
        Value::F64(value) => put_scalar(buf, &Scalar::F64(*value)),
        Value::String(value) => put_scalar(buf, &Scalar::Str(value.as_str())),
        Value::Array(array) => {
            put_len_prefix(buf, 5, array_len(array));
            for_each_element(array, |element| {
                put_len_prefix(buf, 1, scalar_len(&element));
                put_scalar(buf, &element);
            });
        }
        other => put_scalar(buf, &Scalar::Str(&other.as_str())),
    }
}

/// `ArrayValue`: each element an `AnyValue`.
fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |element| {
        len += len_field_len(1, scalar_len(&element));
    });
    len
}

/// Calls `each` with every element of `array`; an array of a kind this
/// version does not know is written as one string, as it displays.
fn for_each_element(array: &Array, mut each: impl FnMut(Scalar<'_>)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|&value| each(Scalar::Bool(value))),
        Array::I64(values) => values.iter().for_each(|&value| each(Scalar::I64(value))),
        Array::F64(values) => values.iter().for_each(|&value| each(Scalar::F64(value))),
        Array::String(values) => values
            .iter()
            .for_each(|value| each(Scalar::Str(value.as_str()))),
        other => each(Scalar::Str(&other.to_string())),
    }
}

/// A scalar `AnyValue`'s one field: `string_value` (1), `bool_value` (2),
/// `int_value` (3) or `double_value` (4).
fn scalar_len(scalar: &Scalar<'_>) -> usize {
    match scalar {
        Scalar::Bool(_) => key_len(2) + 1,
        Scalar::I64(value) => key_len(3) + varint_len(value.cast_unsigned()),
        Scalar::F64(_) => key_len(4) + 8,
        Scalar::Str(value) => len_field_len(1, value.len()),
    }
}

fn put_scalar(buf: &mut impl BufMut, scalar: &Scalar<'_>) {
    match scalar {
        Scalar::Bool(value) => {
            put_key(buf, 2, VARINT);
            buf.put_u8(u8::from(*value));
        }
        Scalar::I64(value) => {
            put_key(buf, 3, VARINT);
            put_varint(buf, value.cast_unsigned());
        }
        Scalar::F64(value) => {
            put_key(buf, 4, FIXED64);
            buf.put_f64_le(*value);
        }
        Scalar::Str(value) => put_bytes(buf, 1, value.as_bytes()),
    }
}

// --- Wire format.

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint_len(value: u64) -> usize {
    // 7 bits a byte; at least one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8(value.to_le_bytes()[0] | 0x80);
        value >>= 7;
    }
    buf.put_u8(value.to_le_bytes()[0]);
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

fn put_key(buf: &mut impl BufMut, field: u32, wire_type: u32) {
    put_varint(buf, u64::from(field << 3 | wire_type));
}

/// A length-delimited field of `len` bytes.
fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

fn put_len_prefix(buf: &mut impl BufMut, field: u32, len: usize) {
    put_key(buf, field, LEN);
    put_varint(buf, len as u64);
}

fn put_bytes(buf: &mut impl BufMut, field: u32, bytes: &[u8]) {
    put_len_prefix(buf, field, bytes.len());
    buf.put_slice(bytes);
}

/// A string field, left out when empty.
fn str_len(field: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        len_field_len(field, value.len())
    }
}

fn put_str(buf: &mut impl BufMut, field: u32, value: &str) {
    if !value.is_empty() {
        put_bytes(buf, field, value.as_bytes());
    }
}

/// An unsigned varint field, left out when 0.
fn uint_len(field: u32, value: u32) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + varint_len(u64::from(value))
    }
}

fn put_uint(buf: &mut impl BufMut, field: u32, value: u32) {
    if value != 0 {
        put_key(buf, field, VARINT);
        put_varint(buf, u64::from(value));
    }
}

/// A `fixed64` field, left out when 0.
fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(field) + 8 }
}

fn put_fixed64(buf: &mut impl BufMut, field: u32, value: u64) {
    if value != 0 {
        put_key(buf, field, FIXED64);
        buf.put_u64_le(value);
    }
}

// --- The gRPC codec: a request out, the collector's answer in.

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `ExportTracePartialSuccess`: spans the collector did not take, and why.
#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = bytes::Bytes;
    type Decode = ExportResponse;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for ExportCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        request: bytes::Bytes,
        buf: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        // Written whole beforehand ([`Encoded::request`]): a byte put
        // through tonic's buffer takes a generic `BufMut` path, and a span
        // is written a few bytes at a time.
        buf.put_slice(&request);
        Ok(())
    }
}

impl Decoder for ExportCodec {
    type Item = ExportResponse;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ExportResponse>, tonic::Status> {
        prost::Message::decode(buf).map(Some).map_err(|err| {
            tonic::Status::internal(format!("the collector's answer does not decode: {err}"))
        })
    }
}

#[cfg(test)]
pub(super) mod tests;
