//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in and out
//! of HTTP headers (gRPC metadata included) and bus message headers. Without
//! the `otel` feature every function does nothing.

use http::HeaderMap;
use tracing::Span;

use super::request_scope::RequestScope;
use crate::bus::Headers;

/// The W3C trace context header.
#[cfg(feature = "otel")]
const TRACEPARENT: &str = "traceparent";

/// [`TRACEPARENT`] as a header name: looked up on every request, and a
/// `&str` key is parsed and lower-cased on each lookup.
#[cfg(feature = "otel")]
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// The W3C baggage header, as a header name (see [`TRACEPARENT_HEADER`]).
#[cfg(feature = "otel")]
const BAGGAGE_HEADER: http::HeaderName = http::HeaderName::from_static("baggage");

/// Makes `span` a child of the caller's span named in `headers`, if any (a
/// disabled span, with no subscriber recording it, has no trace to join).
/// A caller's `baggage` without a well-formed `traceparent` goes on too:
/// the span starts a trace of its own, which carries it (with an
/// OpenTelemetry layer; without one, there is no trace to carry it in).
pub(crate) fn continue_from_http(span: &Span, headers: &HeaderMap) {
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        match crate::rpc::find_header(headers, &TRACEPARENT_HEADER) {
            Some(value) if is_traceparent(value.as_bytes()) => {
                otel::set_parent(span, &otel::HttpHeaders(headers));
            }
            _ if crate::rpc::find_header(headers, &BAGGAGE_HEADER).is_some() => {
                otel::set_parent(span, &otel::BaggageOnly(&otel::HttpHeaders(headers)));
            }
            _ => {}
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// Whether `value` is a `traceparent` as W3C Trace Context writes it:
/// `version-traceid-parentid-flags`, lowercase hex of exactly 2, 32, 16 and
/// 2 digits, version `ff` invalid, version `00` exactly 55 characters (a
/// later version may add fields after a `-`); ids of all zeros are refused
/// by the propagator. A malformed one is ignored, and the request starts a
/// trace of its own.
#[cfg(feature = "otel")]
fn is_traceparent(value: &[u8]) -> bool {
    let hex = |field: &[u8]| {
        field
            .iter()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
    };
    let Some(head) = value.get(..55) else {
        return false;
    };
    let version = &head[..2];
    let fits = match version {
        b"00" => value.len() == 55,
        b"ff" => false,
        _ => value.len() == 55 || value[55] == b'-',
    };
    fits && hex(version)
        && head[2] == b'-'
        && hex(&head[3..35])
        && head[35] == b'-'
        && hex(&head[36..52])
        && head[52] == b'-'
        && hex(&head[53..55])
}

/// Writes the trace context of `span` into outgoing `headers`.
pub(crate) fn inject_http(span: &Span, headers: &mut HeaderMap) {
    #[cfg(feature = "otel")]
    otel::inject(span, &mut otel::HttpHeadersMut(headers));
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// Makes `span` a child of the publisher's span named in message `headers`.
pub(crate) fn continue_from_bus(span: &Span, headers: &Headers) {
    #[cfg(feature = "otel")]
    match headers.get(TRACEPARENT) {
        Some(value) if is_traceparent(value.as_bytes()) => {
            otel::set_parent(span, &otel::BusHeaders(headers));
        }
        _ if headers.get("baggage").is_some() => {
            otel::set_parent(span, &otel::BaggageOnly(&otel::BusHeaders(headers)));
        }
        _ => {}
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// Writes the current span's trace context into a message's `headers`,
/// unless they already carry one.
pub(crate) fn inject_bus(headers: &mut Headers) {
    // With no `tracing` subscriber (or one that records nothing) there is no
    // span, and no context: one atomic load says so.
    #[cfg(feature = "otel")]
    if tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::OFF
        && headers.get(TRACEPARENT).is_none()
    {
        let span = Span::current();
        // Outside any span (or in a disabled one) there is no context to send.
        if !span.is_none() {
            otel::inject(&span, &mut otel::BusHeadersMut(headers));
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}

/// Sets an attribute of the span's OpenTelemetry span only (not a `tracing`
/// field: log layers do no work for it), such as a status code.
pub(crate) fn set_attribute(span: &Span, key: &'static str, value: i64) {
    #[cfg(feature = "otel")]
    otel::set_attribute(span, key, value);
    #[cfg(not(feature = "otel"))]
    let _ = (span, key, value);
}

/// Sets a sampled server span's last attribute (its status code) and ends
/// it now, when the answer is finished: not later, when the last clone of
/// the span or a child that outlived the request lets it close.
/// When `failed`, the span's status is `Error` (the semantic conventions:
/// a 5xx answer, a gRPC code that says the server failed).
pub(crate) fn finish_server(span: &Span, key: &'static str, value: i64, failed: bool) {
    #[cfg(feature = "otel")]
    otel::finish_server(span, key, value, failed);
    #[cfg(not(feature = "otel"))]
    let _ = (span, key, value, failed);
}

/// Marks `span` failed (OpenTelemetry status `Error`), with its
/// `error.type` (the status code, or `_OTHER` when there was none).
pub(crate) fn set_error(span: &Span, error_type: std::borrow::Cow<'static, str>) {
    #[cfg(feature = "otel")]
    otel::set_error(span, error_type);
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        drop(error_type);
    }
}

/// Keeps `scope` with `span` for the log lines written inside it, with the
/// span's OpenTelemetry ids (feature `otel`), starting its OpenTelemetry span.
pub(crate) fn scope(span: &Span, scope: RequestScope) {
    start(span, None, &[], scope);
}

/// Starts a server span's OpenTelemetry span now (kind `server`; the
/// sampler decides here) and keeps `scope`, with the span's ids, with it (as
/// [`scope`]). Only when it is sampled does it get its `name` and string
/// `attributes`: an unsampled span, which is never exported, costs neither
/// the layers nor the exporter anything for them. The kind is not a field
/// of the span (`otel.kind`) for the same reason: every layer would visit
/// it. Returns whether the span is sampled (recording).
pub(crate) fn start_server(
    span: &Span,
    name: &str,
    attributes: &[(&'static str, AttributeValue<'_>)],
    scope: RequestScope,
) -> bool {
    start(span, Some(name), attributes, scope)
}

/// [`start_server`] when `server_name` is given, [`scope`] otherwise.
fn start(
    span: &Span,
    server_name: Option<&str>,
    attributes: &[(&'static str, AttributeValue<'_>)],
    scope: RequestScope,
) -> bool {
    if span.is_disabled() {
        return false;
    }
    #[cfg(feature = "otel")]
    return otel::start(span, server_name, attributes, scope);
    #[cfg(not(feature = "otel"))]
    {
        let _ = (server_name, attributes);
        super::request_scope::with_extensions(span, |extensions| extensions.replace(scope));
        false
    }
}

/// The string value of a server span's attribute, made an OpenTelemetry
/// value only when the span is sampled: a `'static` or shared string is then
/// referred to, not copied.
#[derive(Clone, Copy)]
pub(crate) enum AttributeValue<'a> {
    /// A string that lives for the whole program (an HTTP method).
    Static(&'static str),
    /// A string the node keeps shared (a route, a service name).
    Shared(&'a std::sync::Arc<str>),
    /// A string of this request only (its id): copied.
    Borrowed(&'a str),
}

impl std::fmt::Debug for AttributeValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A `'static` string and a borrowed one are alike but for their
            // lifetimes, which one arm cannot hold both of.
            Self::Static(value) => write!(f, "{value:?}"),
            Self::Shared(value) => std::fmt::Debug::fmt(&***value, f),
            Self::Borrowed(value) => std::fmt::Debug::fmt(value, f),
        }
    }
}

#[cfg(feature = "otel")]
impl AttributeValue<'_> {
    fn to_value(self) -> opentelemetry::Value {
        match self {
            Self::Static(value) => value.into(),
            Self::Shared(value) => {
                opentelemetry::StringValue::from(std::sync::Arc::clone(value)).into()
            }
            Self::Borrowed(value) => value.to_owned().into(),
        }
    }
}

/// A request span's OpenTelemetry ids, kept in its [`RequestScope`];
/// formatted (as lowercase hex) only when a log line is written.
#[cfg(feature = "otel")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: opentelemetry::trace::TraceId,
    pub(crate) span_id: opentelemetry::trace::SpanId,
}

#[cfg(feature = "otel")]
mod otel {
    use std::{borrow::Cow, sync::LazyLock};

    use http::{HeaderMap, HeaderName, HeaderValue};
    use opentelemetry::{
        KeyValue,
        propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator},
        trace::{SpanKind, TraceContextExt as _},
    };
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use tracing::Span;

    use super::{RequestScope, TraceIds};
    use crate::observability::{
        request_scope,
        tracing::layer::{self, OtelSpan},
    };

    use crate::{bus::Headers, rpc::find_header};

    static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
        TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ])
    });

    pub(super) fn set_parent(span: &Span, carrier: &dyn Extractor) {
        let parent = PROPAGATOR.extract(carrier);
        let late = request_scope::with_extensions(span, |extensions| {
            if let Some(otel) = extensions.get_mut::<OtelSpan>() {
                return !otel.set_parent(parent);
            }
            // No OpenTelemetry layer (no exporter): the trace goes on all
            // the same, through a span of ids only.
            if let Some(propagated) = Propagated::child_of(&parent) {
                PROPAGATING.store(true, std::sync::atomic::Ordering::Relaxed);
                extensions.replace(propagated);
            }
            false
        });
        // Logged with the span's extensions let go (a log layer reads them).
        if late == Some(true) {
            tracing::debug!("the caller's trace context came after the span started");
        }
    }

    pub(super) fn inject(span: &Span, carrier: &mut dyn Injector) {
        let context = match layer::with_span(span, |otel| otel.context().clone()) {
            Some(context) => context,
            // No caller ever sent a context: nothing to look for.
            None if !PROPAGATING.load(std::sync::atomic::Ordering::Relaxed) => return,
            None => match Propagated::nearest(span) {
                Some(context) => context,
                None => return,
            },
        };
        if context.span().span_context().is_valid() {
            PROPAGATOR.inject_context(&context, carrier);
        }
    }

    /// Without an OpenTelemetry layer, the trace context of a request whose
    /// caller sent one: the caller's trace, a span id of this node's own,
    /// the caller's sampling decision, trace state and baggage. Nothing is
    /// recorded or exported; log lines carry the ids, and calls made while
    /// serving the request carry the context on (W3C: a participant that
    /// records nothing still passes the trace through).
    pub(super) struct Propagated(opentelemetry::Context);

    /// Set once a [`Propagated`] context was made: until then, a call made
    /// without an OpenTelemetry layer has no context to look for.
    static PROPAGATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    impl Propagated {
        /// A span of `parent`'s trace, if `parent` names one.
        fn child_of(parent: &opentelemetry::Context) -> Option<Self> {
            let caller = parent.span().span_context().clone();
            if !caller.is_valid() {
                return None;
            }
            let own = opentelemetry::trace::SpanContext::new(
                caller.trace_id(),
                opentelemetry::trace::SpanId::from(fastrand::u64(1..)),
                caller.trace_flags(),
                false,
                caller.trace_state().clone(),
            );
            Some(Self(parent.with_remote_span_context(own)))
        }

        /// The ids a log line inside the span shows.
        pub(super) fn ids(&self) -> TraceIds {
            let span = self.0.span();
            let context = span.span_context();
            TraceIds {
                trace_id: context.trace_id(),
                span_id: context.span_id(),
            }
        }

        /// The context of the nearest span, `span` or a parent, that has one.
        fn nearest(span: &Span) -> Option<opentelemetry::Context> {
            span.with_subscriber(|(id, dispatch)| {
                let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
                tracing_subscriber::registry::LookupSpan::span(registry, id)?
                    .scope()
                    .find_map(|span| {
                        span.extensions()
                            .get::<Self>()
                            .map(|propagated| propagated.0.clone())
                    })
            })
            .flatten()
        }
    }

    pub(super) fn set_attribute(span: &Span, key: &'static str, value: i64) {
        layer::with_span(span, |otel| otel.set_attribute(KeyValue::new(key, value)));
    }

    pub(super) fn finish_server(span: &Span, key: &'static str, value: i64, failed: bool) {
        layer::with_span(span, |otel| {
            otel.set_attribute(KeyValue::new(key, value));
            if failed {
                // The semantic conventions' class of error: the status
                // code, by its name for gRPC.
                let class: opentelemetry::StringValue = if key == "rpc.grpc.status_code" {
                    crate::resilience::code_name(value).into()
                } else {
                    value.to_string().into()
                };
                otel.set_attribute(KeyValue::new(
                    "error.type",
                    opentelemetry::Value::String(class),
                ));
                otel.set_error();
            }
            otel.end();
        });
    }

    pub(super) fn set_error(span: &Span, error_type: Cow<'static, str>) {
        layer::with_span(span, |otel| {
            otel.set_attribute(KeyValue::new("error.type", error_type));
            otel.set_error();
        });
    }

    /// Starts the span (a server span when `server_name` is given), keeps
    /// `scope` (with the span's ids) in its extensions, and names and
    /// describes it when it is sampled: all under one lookup of the span.
    pub(super) fn start(
        span: &Span,
        server_name: Option<&str>,
        attributes: &[(&'static str, super::AttributeValue<'_>)],
        mut scope: RequestScope,
    ) -> bool {
        request_scope::with_extensions(span, |extensions| {
            let Some(otel) = extensions.get_mut::<OtelSpan>() else {
                // No OpenTelemetry layer: the scope is an extension of its
                // own, with the ids of the caller's trace, if it sent one.
                scope.ids = extensions.get_mut::<Propagated>().map(|p| p.ids());
                extensions.replace(scope);
                return false;
            };
            if server_name.is_some() {
                otel.set_kind(SpanKind::Server);
                otel.ended_by_owner();
            }
            let values = || {
                attributes
                    .iter()
                    .map(|(key, value)| KeyValue::new(*key, value.to_value()))
            };
            // Named and described as it is built, when it may be sampled.
            let described = otel.start(|builder| {
                if let Some(name) = server_name {
                    builder.name = Cow::Owned(name.to_owned());
                }
                if !attributes.is_empty() {
                    // With room for the status code, set when it ends.
                    builder
                        .attributes
                        .get_or_insert_with(|| Vec::with_capacity(attributes.len() + 1))
                        .extend(values());
                }
            });
            let otel_span = otel.context().span();
            let span_context = otel_span.span_context();
            if span_context.is_valid() {
                scope.ids = Some(TraceIds {
                    trace_id: span_context.trace_id(),
                    span_id: span_context.span_id(),
                });
            }
            let sampled = otel_span.is_recording();
            // A span started before (entered, or asked for its context)
            // is described now, if it is sampled.
            if sampled && !described {
                if let Some(name) = server_name {
                    otel_span.update_name(name.to_owned());
                }
                otel_span.set_attributes(values());
            }
            otel.scope = Some(scope);
            sampled
        })
        .unwrap_or(false)
    }

    /// The headers the propagators read and write, as header names: a `&str`
    /// key is parsed (and a custom name copied) on every use, and a traced
    /// request is looked up three times and a traced call written to as often.
    const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

    fn known(key: &str) -> Option<HeaderName> {
        match key {
            super::TRACEPARENT => Some(super::TRACEPARENT_HEADER),
            "tracestate" => Some(TRACESTATE),
            "baggage" => Some(BAGGAGE),
            _ => None,
        }
    }

    pub(super) struct HttpHeaders<'a>(pub(super) &'a HeaderMap);

    impl Extractor for HttpHeaders<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            let value = match known(key) {
                Some(name) => find_header(self.0, &name),
                None => self.0.get(key),
            };
            value.and_then(|value| value.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }

    /// The baggage of `carrier` without its trace context: read when the
    /// `traceparent` is missing or malformed, which the propagator could
    /// read otherwise than `is_traceparent` (a malformed one is not
    /// followed, its baggage is).
    pub(super) struct BaggageOnly<'a>(pub(super) &'a dyn Extractor);

    impl Extractor for BaggageOnly<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            if key.eq_ignore_ascii_case("traceparent") || key.eq_ignore_ascii_case("tracestate") {
                return None;
            }
            self.0.get(key)
        }

        fn keys(&self) -> Vec<&str> {
            let mut keys = self.0.keys();
            keys.retain(|key| {
                !key.eq_ignore_ascii_case("traceparent") && !key.eq_ignore_ascii_case("tracestate")
            });
            keys
        }
    }

    pub(super) struct HttpHeadersMut<'a>(pub(super) &'a mut HeaderMap);

    impl Injector for HttpHeadersMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            let name = known(key).map_or_else(|| HeaderName::from_bytes(key.as_bytes()), Ok);
            if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&value)) {
                self.0.insert(name, value);
            }
        }
    }

    pub(super) struct BusHeaders<'a>(pub(super) &'a Headers);

    impl Extractor for BusHeaders<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(name, _)| name).collect()
        }
    }

    pub(super) struct BusHeadersMut<'a>(pub(super) &'a mut Headers);

    impl Injector for BusHeadersMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
#[cfg(feature = "otel")]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::{
        bus::Headers,
        observability::{
            logging,
            test_lines::Lines,
            tracing::layer::{OtelLayer, tests::Exported, with_span},
        },
    };

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    /// Runs `f` under a subscriber recording spans with room619's layer,
    /// sampling what the caller sampled.
    fn traced(f: impl FnOnce()) {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build();
        let subscriber =
            tracing_subscriber::registry().with(OtelLayer::new(provider.tracer("test"), None));
        tracing::subscriber::with_default(subscriber, f);
    }

    fn incoming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        let parent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
        headers.insert("traceparent", HeaderValue::from_str(&parent).unwrap());
        headers.insert("tracestate", HeaderValue::from_static("vendor=opaque"));
        headers.insert("baggage", HeaderValue::from_static("tenant=acme"));
        headers
    }

    #[test]
    fn the_callers_traceparent_tracestate_and_baggage_go_on_to_http_and_the_bus() {
        traced(|| {
            let server = tracing::info_span!("http.server");
            continue_from_http(&server, &incoming());
            let call = tracing::info_span!(parent: &server, "client");
            let mut outgoing = HeaderMap::new();
            inject_http(&call, &mut outgoing);
            let call_id = with_span(&call, |otel| {
                opentelemetry::trace::TraceContextExt::span(otel.context())
                    .span_context()
                    .span_id()
            })
            .unwrap();
            assert_eq!(
                outgoing["traceparent"],
                format!("00-{TRACE_ID}-{call_id}-01").as_str(),
                "the call's own span, in the caller's trace, sampled as the caller said"
            );
            assert_eq!(outgoing["tracestate"], "vendor=opaque");
            assert_eq!(outgoing["baggage"], "tenant=acme");

            let _entered = call.enter();
            let mut message = Headers::new();
            inject_bus(&mut message);
            assert_eq!(
                message.get("traceparent"),
                outgoing["traceparent"].to_str().ok()
            );
            assert_eq!(message.get("tracestate"), Some("vendor=opaque"));
            assert_eq!(message.get("baggage"), Some("tenant=acme"));
        });
    }

    /// A caller's baggage without a trace context used to be dropped: the
    /// request's own trace now carries it on, to HTTP and the bus.
    #[test]
    fn baggage_without_a_traceparent_goes_on_in_a_trace_of_its_own() {
        traced(|| {
            // Without a traceparent, then with a malformed one (an upper-case
            // trace id): not followed, its baggage is.
            let malformed = format!("00-{}-00f067aa0ba902b7-01", TRACE_ID.to_uppercase());
            for traceparent in [None, Some(malformed.as_str())] {
                let mut headers = HeaderMap::new();
                headers.insert("baggage", HeaderValue::from_static("tenant=acme"));
                if let Some(traceparent) = traceparent {
                    headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
                }
                let server = tracing::info_span!("http.server");
                continue_from_http(&server, &headers);
                let call = tracing::info_span!(parent: &server, "client");
                let mut outgoing = HeaderMap::new();
                inject_http(&call, &mut outgoing);
                assert_eq!(outgoing["baggage"], "tenant=acme");
                let sent = outgoing["traceparent"].to_str().unwrap();
                assert!(
                    !sent.to_lowercase().contains(TRACE_ID),
                    "a trace of its own: {sent}"
                );
            }

            let mut message = Headers::new();
            message.insert("baggage", "tenant=acme");
            let consumer = tracing::info_span!("bus.consume");
            continue_from_bus(&consumer, &message);
            let _entered = consumer.enter();
            let mut onward = Headers::new();
            inject_bus(&mut onward);
            assert_eq!(onward.get("baggage"), Some("tenant=acme"));
        });
    }

    /// With no exporter (no OpenTelemetry layer), a node in the middle of a
    /// call chain still passes the trace on, and its log lines carry it.
    #[test]
    fn without_an_exporter_the_callers_trace_goes_on_and_into_the_logs() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(logging::json_layer(lines.make_writer()));
        tracing::subscriber::with_default(subscriber, || {
            let server = tracing::info_span!("http.server");
            continue_from_http(&server, &incoming());
            let service: std::sync::Arc<str> = "shop.Users".into();
            assert!(!start_server(
                &server,
                "GET /users",
                &[],
                RequestScope::new(&service, &"Get".into(), None)
            ));
            let call = tracing::info_span!(parent: &server, "client");
            let mut outgoing = HeaderMap::new();
            inject_http(&call, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap().to_owned();
            assert!(sent.starts_with(&format!("00-{TRACE_ID}-")), "{sent}");
            assert!(sent.ends_with("-01"), "sampled as the caller said: {sent}");
            assert!(
                !sent.contains("00f067aa0ba902b7"),
                "a span id of its own: {sent}"
            );
            assert_eq!(outgoing["tracestate"], "vendor=opaque");
            assert_eq!(outgoing["baggage"], "tenant=acme");

            let _entered = call.enter();
            let mut message = Headers::new();
            inject_bus(&mut message);
            assert_eq!(message.get("traceparent"), Some(sent.as_str()));
            tracing::info!("inside");
            let text = lines.text();
            assert!(
                text.contains(&format!(r#""trace_id":"{TRACE_ID}""#)),
                "{text}"
            );
            let span_id = &sent[36..52];
            assert!(
                text.contains(&format!(r#""span_id":"{span_id}""#)),
                "{text}"
            );
        });
    }

    #[test]
    fn only_well_formed_traceparents_are_followed() {
        let good = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
        assert!(is_traceparent(good.as_bytes()));
        assert!(is_traceparent(
            format!("01-{TRACE_ID}-00f067aa0ba902b7-01-more").as_bytes()
        ));
        for bad in [
            "00-1-1-01".to_owned(),
            format!("{good}-"),
            format!("ff-{TRACE_ID}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE_ID.to_uppercase()),
            format!("0-{TRACE_ID}-00f067aa0ba902b7-001"),
            format!("01-{TRACE_ID}-00f067aa0ba902b7-01x"),
            good[..54].to_owned(),
        ] {
            assert!(!is_traceparent(bad.as_bytes()), "{bad}");
        }
        // Followed only when well formed.
        traced(|| {
            let server = tracing::info_span!("http.server");
            let mut headers = incoming();
            headers.insert("traceparent", HeaderValue::from_static("00-1-1-01"));
            continue_from_http(&server, &headers);
            let mut outgoing = HeaderMap::new();
            inject_http(&server, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            assert!(
                !sent.starts_with("00-0000000000000000000000000000000"),
                "{sent}"
            );
            assert!(
                sent.ends_with("-00"),
                "a trace of its own, sampled out: {sent}"
            );
        });
    }

    #[test]
    fn a_request_without_a_caller_starts_a_trace_of_its_own() {
        traced(|| {
            let server = tracing::info_span!("http.server");
            let mut headers = incoming();
            headers.remove("traceparent");
            continue_from_http(&server, &headers);
            let mut outgoing = HeaderMap::new();
            inject_http(&server, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            assert!(!sent.contains(TRACE_ID), "{sent}");
            // Sampled out by the root sampler: the flag says so downstream.
            assert!(sent.ends_with("-00"), "{sent}");
        });
    }

    #[test]
    fn a_sampled_server_span_is_named_and_described_whenever_it_started() {
        let exported = Exported::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(OtelLayer::new(provider.tracer("test"), None));
        let service: std::sync::Arc<str> = "shop.Users".into();
        tracing::subscriber::with_default(subscriber, || {
            for early in [false, true] {
                let span = tracing::info_span!("rpc.server");
                if early {
                    // Started before it is described: asked for its context.
                    assert!(with_span(&span, |otel| otel.context().clone()).is_some());
                }
                let name = if early { "early" } else { "fresh" };
                let scope = RequestScope::new(&service, &"Get".into(), None);
                let attributes = [
                    ("rpc.system", AttributeValue::Static("grpc")),
                    ("rpc.service", AttributeValue::Shared(&service)),
                    ("request_id", AttributeValue::Borrowed("r-1")),
                ];
                assert!(start_server(&span, name, &attributes, scope));
                // The early one fails (INTERNAL, 13): its status says so.
                let code = if early { 13 } else { 0 };
                finish_server(&span, "rpc.grpc.status_code", code, early);
            }
        });
        let spans = exported.0.lock().unwrap();
        let names: Vec<_> = spans.iter().map(|span| span.name.as_ref()).collect();
        assert_eq!(names, ["fresh", "early"]);
        // A span's kind is fixed when it starts.
        assert_eq!(spans[0].span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(spans[0].status, opentelemetry::trace::Status::Unset);
        assert!(
            matches!(spans[1].status, opentelemetry::trace::Status::Error { .. }),
            "{:?}",
            spans[1].status
        );
        for (span, code) in spans.iter().zip(["0", "13"]) {
            let attributes: Vec<_> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.to_string()))
                .collect();
            let mut expected = vec![
                ("rpc.system", "grpc".to_owned()),
                ("rpc.service", "shop.Users".to_owned()),
                ("request_id", "r-1".to_owned()),
                ("rpc.grpc.status_code", code.to_owned()),
            ];
            if code == "13" {
                // A failed span names its class of error.
                expected.push(("error.type", "INTERNAL".to_owned()));
            }
            assert_eq!(attributes, expected, "{}", span.name);
        }
    }
}
