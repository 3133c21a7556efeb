//! OTLP/gRPC span export, encoded straight from the SDK's span data.
//!
//! `opentelemetry-otlp` turns every batch into the generated
//! `opentelemetry-proto` messages first (an owned `Vec` for each id, a
//! `String` for each name, key and string value, a `Vec` of attributes per
//! span), then prost encodes them. [`OtlpExporter`] writes the same
//! `ExportTraceServiceRequest` from the borrowed [`SpanData`] in two passes
//! (lengths, then bytes) into tonic's send buffer: no intermediate message,
//! and no allocation per span but for a span's `tracestate`, when it has
//! one. A batch larger than a collector takes by
//! default (4 MiB) goes in several requests rather than being refused
//! whole. A test decodes what it writes with `opentelemetry-proto` and
//! compares it with that crate's own conversion of the same spans.

use std::{
    fmt,
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
    trace::{SpanData, SpanExporter},
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
    resource: Arc<EncodedResource>,
    failures: Arc<Failures>,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter").finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter to the collector at `endpoint` (`http://host:4317`),
    /// connecting on the first export; each export may take `timeout`. Call
    /// it inside a tokio runtime: the channel's connection runs there.
    ///
    /// # Errors
    ///
    /// `Config` when `endpoint` is not a URI, or asks for TLS (`https`),
    /// which this exporter does not speak.
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
        let channel = endpoint_uri.timeout(timeout).connect_lazy();
        Ok(Self {
            grpc: Grpc::new(channel),
            resource: Arc::new(EncodedResource::new(&Resource::builder_empty().build())),
            failures: Arc::new(Failures::default()),
        })
    }

    /// Sends one request; a refusal fails it (and the rest of the batch:
    /// the SDK's processor does not retry).
    async fn send(&self, batch: Batch) -> OTelSdkResult {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|err| {
            self.failures
                .failed(format!("the collector is not reachable: {err}"))
        })?;
        let response = grpc
            .unary(
                tonic::Request::new(batch),
                PathAndQuery::from_static(EXPORT_PATH),
                ExportCodec,
            )
            .await
            .map_err(|status| {
                self.failures.failed(format!(
                    "the collector answered {:?}: {}",
                    status.code(),
                    status.message()
                ))
            })?;
        if let Some(partial) = response.into_inner().partial_success
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
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for request in Batch::split(batch, &self.resource, MAX_REQUEST) {
            self.send(request).await?;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Arc::new(EncodedResource::new(resource));
    }
}

/// Failed exports, logged here (the SDK's batch processor drops the error:
/// its own logging is a feature room619 does not turn on) at most once per
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
struct EncodedResource {
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    fn new(resource: &Resource) -> Self {
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
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One request: spans, the resource they ran in, and the plan of their
/// encoding.
struct Batch {
    spans: Vec<SpanData>,
    resource: Arc<EncodedResource>,
    plan: Plan,
}

impl Batch {
    /// `spans` in as few requests as keep each at most `max` bytes (a span
    /// larger than that on its own goes alone), in their order.
    fn split(spans: Vec<SpanData>, resource: &Arc<EncodedResource>, max: usize) -> Vec<Self> {
        let plan = Plan::new(&spans, resource);
        if plan.request_len() <= max {
            return vec![Self {
                spans,
                resource: Arc::clone(resource),
                plan,
            }];
        }
        // What a request holds besides its spans, at most: the resource and
        // every scope's header.
        let overhead = plan.request_len()
            - plan
                .spans
                .iter()
                .map(|span| len_field_len(2, span.len))
                .sum::<usize>();
        let mut batches = Vec::new();
        let (mut chunk, mut chunk_len) = (Vec::new(), overhead);
        for (span, prepared) in spans.into_iter().zip(&plan.spans) {
            let len = len_field_len(2, prepared.len);
            if !chunk.is_empty() && chunk_len + len > max {
                batches.push(std::mem::take(&mut chunk));
                chunk_len = overhead;
            }
            chunk.push(span);
            chunk_len += len;
        }
        batches.push(chunk);
        batches
            .into_iter()
            .map(|spans| Self {
                plan: Plan::new(&spans, resource),
                spans,
                resource: Arc::clone(resource),
            })
            .collect()
    }

    /// Writes the `ExportTraceServiceRequest` its plan describes: one
    /// `ResourceSpans` with a `ScopeSpans` for each instrumentation scope,
    /// in the order scopes first appear (as `opentelemetry-proto` groups
    /// them).
    fn encode(&self, buf: &mut impl BufMut) {
        let plan = &self.plan;
        put_len_prefix(buf, 1, plan.resource_spans_len);
        put_len_prefix(buf, 1, self.resource.body.len());
        buf.put_slice(&self.resource.body);
        for scope in &plan.scopes {
            let instrumentation = &self.spans[scope.spans[0]].instrumentation_scope;
            put_len_prefix(buf, 2, scope.len);
            put_len_prefix(buf, 1, scope_len(instrumentation));
            put_scope(buf, instrumentation);
            for &index in &scope.spans {
                let (span, prepared) = (&self.spans[index], &plan.spans[index]);
                put_len_prefix(buf, 2, prepared.len);
                put_span(buf, span, prepared.trace_state.as_deref());
            }
            put_str(buf, 3, instrumentation.schema_url().unwrap_or_default());
        }
        put_str(buf, 3, &self.resource.schema_url);
    }

    /// The request in a buffer of its own.
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode(&mut buf);
        buf
    }
}

/// The lengths a batch's nested messages are prefixed with, worked out
/// before any byte is written.
struct Plan {
    spans: Vec<PreparedSpan>,
    scopes: Vec<ScopePlan>,
    resource_spans_len: usize,
}

struct PreparedSpan {
    len: usize,
    /// The W3C `tracestate`, when the span has one.
    trace_state: Option<String>,
}

struct ScopePlan {
    /// Indexes into the batch of the scope's spans (never empty: the first
    /// span names the scope).
    spans: Vec<usize>,
    len: usize,
}

impl Plan {
    fn new(spans: &[SpanData], resource: &EncodedResource) -> Self {
        let mut scopes: Vec<ScopePlan> = Vec::new();
        let prepared = spans
            .iter()
            .enumerate()
            .map(|(index, span)| {
                let scope = &span.instrumentation_scope;
                match scopes
                    .iter_mut()
                    .find(|plan| spans[plan.spans[0]].instrumentation_scope == *scope)
                {
                    Some(plan) => plan.spans.push(index),
                    None => scopes.push(ScopePlan {
                        spans: vec![index],
                        len: 0,
                    }),
                }
                let trace_state = trace_state(&span.span_context);
                PreparedSpan {
                    len: span_len(span, trace_state.as_deref()),
                    trace_state,
                }
            })
            .collect::<Vec<_>>();
        let mut resource_spans_len =
            len_field_len(1, resource.body.len()) + str_len(3, &resource.schema_url);
        for scope in &mut scopes {
            let instrumentation = &spans[scope.spans[0]].instrumentation_scope;
            scope.len = len_field_len(1, scope_len(instrumentation))
                + scope
                    .spans
                    .iter()
                    .map(|&index| len_field_len(2, prepared[index].len))
                    .sum::<usize>()
                + str_len(3, instrumentation.schema_url().unwrap_or_default());
            resource_spans_len += len_field_len(2, scope.len);
        }
        Self {
            spans: prepared,
            scopes,
            resource_spans_len,
        }
    }

    /// The length of the whole `ExportTraceServiceRequest`.
    fn request_len(&self) -> usize {
        len_field_len(1, self.resource_spans_len)
    }
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
    str_len(1, attribute.key.as_str()) + len_field_len(2, any_value_len(&attribute.value))
}

fn put_key_value(buf: &mut impl BufMut, field: u32, attribute: &KeyValue) {
    let key = attribute.key.as_str();
    let value_len = any_value_len(&attribute.value);
    put_len_prefix(buf, field, str_len(1, key) + len_field_len(2, value_len));
    put_str(buf, 1, key);
    put_len_prefix(buf, 2, value_len);
    put_any_value(buf, &attribute.value);
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

// --- The gRPC codec: a batch out, the collector's answer in.

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
    type Encode = Batch;
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
    type Item = Batch;
    type Error = tonic::Status;

    fn encode(&mut self, batch: Batch, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        // Written to a vector of the request's exact size, then copied
        // into tonic's buffer at once: a byte put through tonic's buffer
        // takes a generic `BufMut` path, and a span is written a few bytes
        // at a time.
        let mut request = Vec::with_capacity(batch.plan.request_len());
        batch.encode(&mut request);
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
mod tests;
