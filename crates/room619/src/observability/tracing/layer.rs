//! The `tracing` layer that records spans as OpenTelemetry spans, and the
//! functions the rest of the crate reaches a span's OpenTelemetry side with.
//!
//! It does what `tracing-opentelemetry`'s layer does for room619, with less
//! work on every span, sampled or not, which is most of what observability
//! costs a request:
//!
//! - a span's OpenTelemetry side lives in the registry's extensions of the
//!   span, under the registry's own lock (no `Arc<Mutex<_>>` of its own);
//! - it starts (the sampler decides) when first needed: entered, asked for
//!   its context, or closed. Until then its parent can still be set (the
//!   caller's trace, from `traceparent`);
//! - once started, an unsampled span records nothing: fields recorded later,
//!   events and links cost a look at one flag;
//! - entering makes the span's context current (for libraries that read
//!   `opentelemetry::Context::current()`, and for spans created inside).
//!   A sampled span ends when it is last left (its end time is read then;
//!   an unsampled one reads no clock), not later when a child that outlived
//!   it lets it close; a server span ends when its answer is finished
//!   ([`OtelSpan::end`]).
//!
//! Values are formatted with no lock held (a value's `Debug` may log, or
//! panic); the registry's lock on a span is held only to read or change
//! its OpenTelemetry side, and the SDK is called under it only to start a
//! span (the sampler and the id generator, which log nothing).
//!
//! Fields become attributes, except these, which direct the span:
//! `otel.name` (its name), `otel.kind` (`server`, `client`, `producer`,
//! `consumer`, `internal`), `otel.status_code` (`ok`, `error`, `unset`) and
//! `otel.status_description`. An event in a sampled span becomes a span
//! event named by its message, with its fields, `level` and `target`; an
//! `ERROR` event marks the span's status an error. An error recorded as a
//! field (`error = &err as &dyn Error`) adds `exception.message`; an event
//! with one and no message is an `exception` event, and at `ERROR` the
//! error's text is the status description. `follows_from` becomes a link.

use std::{borrow::Cow, cell::RefCell, fmt, marker::PhantomData, time::SystemTime};

use opentelemetry::{
    Context, ContextGuard, Key, KeyValue, Value,
    trace::{
        Event as SpanEvent, Link, Span as _, SpanBuilder, SpanKind, Status, TraceContextExt as _,
        Tracer as _,
    },
};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    Layer,
    layer::Context as LayerContext,
    registry::{LookupSpan, SpanRef},
};

use super::sampling::{self, Decision, Ratio};
use crate::observability::request_scope::{self, RequestScope};

/// Records spans as OpenTelemetry spans with `tracer`.
pub(crate) struct OtelLayer<S> {
    tracer: SdkTracer,
    /// The sampling of `tracer`'s provider, when it is known (a
    /// [`Telemetry`](super::Telemetry) provider): the layer then decides
    /// itself, and builds only sampled spans with the SDK.
    sampling: Option<Ratio>,
    subscriber: PhantomData<fn(S)>,
}

impl<S> OtelLayer<S> {
    /// `sampling` must be what the provider of `tracer` samples with, and
    /// the provider must take its ids from [`sampling::Ids`].
    pub(crate) fn new(tracer: SdkTracer, sampling: Option<Ratio>) -> Self {
        Self {
            tracer,
            sampling,
            subscriber: PhantomData,
        }
    }
}

/// A span's OpenTelemetry side, in the registry's extensions of the span.
pub(crate) struct OtelSpan {
    /// What starts the span, until it starts.
    pending: Option<Pending>,
    /// The parent's context until the span starts; then the span's.
    cx: Context,
    /// When a sampled span was last left: it ends then (not later, when a
    /// child that outlived it lets it close).
    left: Option<SystemTime>,
    /// Whether the span is ended by [`OtelSpan::end`] (a server span), so
    /// leaving it need not read the clock.
    ended_by_owner: bool,
    /// The request the span serves, as its log lines show it: kept here
    /// rather than as an extension of its own, which would cost an
    /// allocation and a map entry more per request.
    pub(crate) scope: Option<RequestScope>,
}

/// A span that has not started yet.
struct Pending {
    builder: SpanBuilder,
    status: Status,
    tracer: SdkTracer,
    sampling: Option<Ratio>,
}

impl OtelSpan {
    /// The span's context, started now if it was not.
    pub(crate) fn context(&mut self) -> &Context {
        self.start(|_| {});
        &self.cx
    }

    /// Starts the span if it has not started, `describe` adding to what it
    /// is built with if it may be sampled (its name and attributes go into
    /// the SDK span as it is made, not through its lock after). `false`
    /// when the span had started; `true` when it starts now, `describe`
    /// called unless the span is known to be unsampled.
    pub(crate) fn start(&mut self, describe: impl FnOnce(&mut SpanBuilder)) -> bool {
        let Some(Pending {
            mut builder,
            status,
            tracer,
            sampling,
        }) = self.pending.take()
        else {
            return false;
        };
        // Where telemetry is suppressed the SDK makes an empty context:
        // left to it. (After the provider shut down, an unsampled span
        // still gets ids here, where the SDK gives none; nothing is
        // exported either way.)
        let sampling = sampling.filter(|_| !self.cx.is_telemetry_suppressed());
        let trace_id = match sampling.map(|ratio| ratio.decide(&self.cx)) {
            // Never exported: its ids are all the context needs (no SDK
            // span to build, lock and drop).
            Some(Decision::Unsampled(span)) => {
                self.cx = self.cx.with_remote_span_context(span);
                return true;
            }
            Some(Decision::Sampled(trace_id)) => trace_id,
            None => None,
        };
        describe(&mut builder);
        let mut span =
            sampling::with_trace_id(trace_id, || tracer.build_with_context(builder, &self.cx));
        self.cx = if span.is_recording() {
            if status != Status::Unset {
                span.set_status(status);
            }
            self.cx.with_span(span)
        } else {
            // An unsampled span records nothing: its ids are all the
            // context needs (no boxed span to allocate, lock and drop).
            self.cx
                .with_remote_span_context(span.span_context().clone())
        };
        true
    }

    /// Says the span's owner ends it with [`OtelSpan::end`].
    pub(crate) fn ended_by_owner(&mut self) {
        self.ended_by_owner = true;
    }

    /// Ends the span now, if it is sampled: for a span that is finished
    /// before it closes (a server span, when its answer is sent).
    pub(crate) fn end(&mut self) {
        let span = self.context().span();
        if span.is_recording() {
            span.end();
        }
    }

    /// Makes `parent` the span's parent. `false` when the span has started
    /// (its trace is decided).
    pub(crate) fn set_parent(&mut self, parent: Context) -> bool {
        if self.pending.is_none() {
            return false;
        }
        self.cx = parent;
        true
    }

    /// Sets the span's kind, unless it has started.
    pub(crate) fn set_kind(&mut self, kind: SpanKind) {
        if let Some(pending) = &mut self.pending {
            pending.builder.span_kind = Some(kind);
        }
    }

    /// Marks the span failed (status `Error`), unless it already has a
    /// status: an error event's description is kept.
    pub(crate) fn set_error(&mut self) {
        if let Some(pending) = &mut self.pending {
            if pending.status == Status::Unset {
                pending.status = Status::error("");
            }
        } else {
            let span = self.cx.span();
            if span.is_recording() {
                // The SDK keeps the greater status: an `Error` with a
                // description is not replaced by this one.
                span.set_status(Status::error(""));
            }
        }
    }

    /// Sets an attribute, unless the span started unsampled.
    pub(crate) fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(pending) = &mut self.pending {
            pending
                .builder
                .attributes
                .get_or_insert_with(Vec::new)
                .push(attribute);
        } else {
            let span = self.cx.span();
            if span.is_recording() {
                span.set_attribute(attribute);
            }
        }
    }

    /// Whether the span may still record anything: it has not started, or
    /// it started sampled.
    fn records(&self) -> bool {
        self.pending.is_some() || self.cx.span().is_recording()
    }

    /// Applies `updates` to the span (before or after it started).
    fn update(&mut self, updates: Updates) {
        match &mut self.pending {
            Some(pending) => updates.apply_to_builder(&mut pending.builder, &mut pending.status),
            None => updates.apply_to_span(&self.cx),
        }
    }
}

impl<S> Layer<S> for OtelLayer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
                .and_then(|parent| with_otel(&parent, |otel| otel.context().clone()))
                .unwrap_or_default()
        } else if attrs.is_contextual() {
            // The entered span's context is current (`on_enter`), or one the
            // application made current itself.
            Context::current()
        } else {
            Context::new()
        };
        let mut builder = SpanBuilder::from_name(attrs.metadata().name());
        builder.start_time = Some(SystemTime::now());
        let mut status = Status::Unset;
        // A request's server span has no fields: nothing to visit.
        if !attrs.values().is_empty() {
            let mut updates = Updates::default();
            attrs.record(&mut updates);
            updates.apply_to_builder(&mut builder, &mut status);
        }
        span.extensions_mut().insert(OtelSpan {
            pending: Some(Pending {
                builder,
                status,
                tracer: self.tracer.clone(),
                sampling: self.sampling,
            }),
            cx: parent,
            left: None,
            ended_by_owner: false,
            scope: None,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // The values are formatted with no lock held: a value's `Debug`
        // may log, or panic.
        if with_otel(&span, |otel| otel.records()) != Some(true) {
            return;
        }
        let mut updates = Updates::default();
        values.record(&mut updates);
        if let Some(otel) = span.extensions_mut().get_mut::<OtelSpan>() {
            otel.update(updates);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: LayerContext<'_, S>) {
        let (Some(span), Some(follows)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(linked) = with_otel(&follows, |otel| {
            otel.context().span().span_context().clone()
        }) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(otel) = extensions.get_mut::<OtelSpan>() else {
            return;
        };
        match &mut otel.pending {
            Some(pending) => pending
                .builder
                .links
                .get_or_insert_with(Vec::new)
                .push(Link::with_context(linked)),
            None => otel.cx.span().add_link(linked, Vec::new()),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let span = match event.parent() {
            Some(parent) => ctx.span(parent),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let Some(span) = span else {
            return;
        };
        // As in `on_record`: the fields are formatted with no lock held.
        if with_otel(&span, |otel| otel.records()) != Some(true) {
            return;
        }
        let metadata = event.metadata();
        let mut fields = EventFields {
            name: None,
            exception: None,
            attributes: vec![
                KeyValue::new("level", metadata.level().as_str()),
                KeyValue::new("target", metadata.target()),
            ],
        };
        event.record(&mut fields);
        // An error without a message is an `exception` event (the
        // semantic conventions' name), its text the span's status.
        let name = match (fields.name, &fields.exception) {
            (Some(name), _) => name,
            (None, Some(_)) => Cow::Borrowed("exception"),
            (None, None) => Cow::Borrowed(metadata.name()),
        };
        let error = (*metadata.level() == Level::ERROR)
            .then(|| Status::error(fields.exception.unwrap_or_default()));
        let mut extensions = span.extensions_mut();
        let Some(otel) = extensions.get_mut::<OtelSpan>() else {
            return;
        };
        if let Some(pending) = &mut otel.pending {
            if let Some(error) = error
                && pending.status == Status::Unset
            {
                pending.status = error;
            }
            pending
                .builder
                .events
                .get_or_insert_with(Vec::new)
                .push(SpanEvent::new(
                    name,
                    SystemTime::now(),
                    fields.attributes,
                    0,
                ));
        } else {
            let span = otel.cx.span();
            if let Some(error) = error {
                span.set_status(error);
            }
            span.add_event(name, fields.attributes);
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let Some((cx, owned)) =
            with_otel(&span, |otel| (otel.context().clone(), otel.ended_by_owner))
        else {
            return;
        };
        let recording = !owned && cx.span().is_recording();
        let guard = cx.attach();
        // On a thread being torn down the guard is dropped here, at once.
        ACTIVE
            .try_with(|active| {
                if let Ok(mut active) = active.try_borrow_mut() {
                    active.push(Entered {
                        id: id.clone(),
                        _guard: guard,
                        recording,
                    });
                }
            })
            .unwrap_or_default();
    }

    fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
        // The guard is dropped after the stack is let go of: dropping it
        // touches OpenTelemetry's own thread-local stack.
        let entered = ACTIVE
            .try_with(|active| {
                let mut active = active.try_borrow_mut().ok()?;
                let index = active.iter().rposition(|entered| entered.id == *id)?;
                Some(active.remove(index))
            })
            .ok()
            .flatten();
        // Only a sampled span pays for the clock read.
        if let Some(Entered {
            recording: true, ..
        }) = entered
            && let Some(span) = ctx.span(id)
            && let Some(otel) = span.extensions_mut().get_mut::<OtelSpan>()
        {
            otel.left = Some(SystemTime::now());
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        // A span never entered nor asked for starts here; it may be
        // sampled all the same. An unsampled one's OpenTelemetry side is
        // left to the registry, which drops it with the span's slot.
        let sampled = with_otel(&span, |otel| otel.context().span().is_recording());
        if sampled != Some(true) {
            return;
        }
        // A sampled one is ended outside the span's lock: ending it hands
        // it to the exporter.
        let otel = span.extensions_mut().remove::<OtelSpan>();
        if let Some(mut otel) = otel {
            let left = otel.left;
            let span = otel.context().span();
            match left {
                Some(left) => span.end_with_timestamp(left),
                None => span.end(),
            }
        }
    }
}

thread_local! {
    /// The spans entered on this thread, most recent last.
    static ACTIVE: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
}

/// An entered span: its context is current until it is left.
struct Entered {
    id: Id,
    /// Makes the span's context current until it is dropped.
    _guard: ContextGuard,
    /// Whether it is sampled and ends when last left (its end time is
    /// taken when it is left).
    recording: bool,
}

/// Runs `f` on the OpenTelemetry side of the registry span `span`.
fn with_otel<'a, R, T>(span: &SpanRef<'a, R>, f: impl FnOnce(&mut OtelSpan) -> T) -> Option<T>
where
    R: LookupSpan<'a>,
{
    span.extensions_mut().get_mut::<OtelSpan>().map(f)
}

/// What a span's fields say about it: attributes, and the `otel.*` fields
/// that direct it.
#[derive(Default)]
struct Updates {
    name: Option<Cow<'static, str>>,
    kind: Option<SpanKind>,
    status: Option<Status>,
    description: Option<String>,
    attributes: Vec<KeyValue>,
}

impl Updates {
    fn apply_to_builder(self, builder: &mut SpanBuilder, status: &mut Status) {
        if let Some(new) = self.status() {
            *status = new;
        }
        if let Some(name) = self.name {
            builder.name = name;
        }
        if let Some(kind) = self.kind {
            builder.span_kind = Some(kind);
        }
        if !self.attributes.is_empty() {
            match &mut builder.attributes {
                Some(attributes) => attributes.extend(self.attributes),
                None => builder.attributes = Some(self.attributes),
            }
        }
    }

    /// For a started span: its kind is fixed, the rest applies if sampled.
    fn apply_to_span(self, cx: &Context) {
        let span = cx.span();
        if !span.is_recording() {
            return;
        }
        if let Some(status) = self.status() {
            span.set_status(status);
        }
        if let Some(name) = self.name {
            span.update_name(name);
        }
        if !self.attributes.is_empty() {
            span.set_attributes(self.attributes);
        }
    }

    /// The status these fields set, if they set one: `otel.status_code`,
    /// with `otel.status_description` if it is an error; a description
    /// alone makes it an error.
    fn status(&self) -> Option<Status> {
        match (&self.status, &self.description) {
            (Some(Status::Error { .. }) | None, Some(description)) => {
                Some(Status::error(description.clone()))
            }
            (status, _) => status.clone(),
        }
    }

    fn directive(&mut self, name: &str, value: &str) -> bool {
        match name {
            "otel.name" => self.name = Some(Cow::Owned(value.to_owned())),
            "otel.kind" => self.kind = kind(value),
            "otel.status_code" => self.status = status_code(value),
            "otel.status_description" | "otel.status_message" => {
                self.description = Some(value.to_owned());
            }
            _ => return false,
        }
        true
    }
}

/// The kind `otel.kind` names, in any case.
fn kind(value: &str) -> Option<SpanKind> {
    [
        ("server", SpanKind::Server),
        ("client", SpanKind::Client),
        ("producer", SpanKind::Producer),
        ("consumer", SpanKind::Consumer),
        ("internal", SpanKind::Internal),
    ]
    .into_iter()
    .find_map(|(name, kind)| value.eq_ignore_ascii_case(name).then_some(kind))
}

/// The status `otel.status_code` names, in any case.
fn status_code(value: &str) -> Option<Status> {
    [
        ("ok", Status::Ok),
        ("error", Status::error("")),
        ("unset", Status::Unset),
    ]
    .into_iter()
    .find_map(|(name, status)| value.eq_ignore_ascii_case(name).then_some(status))
}

impl Visit for Updates {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.attributes
            .push(KeyValue::new(field.name(), unsigned(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.directive(field.name(), value) {
            self.attributes
                .push(KeyValue::new(field.name(), value.to_owned()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        self.attributes
            .push(KeyValue::new(EXCEPTION_MESSAGE, text.clone()));
        self.attributes.push(KeyValue::new(field.name(), text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if !self.directive(field.name(), &text) {
            self.attributes.push(KeyValue::new(field.name(), text));
        }
    }
}

/// The semantic conventions' attribute for an error's text.
const EXCEPTION_MESSAGE: &str = "exception.message";

/// A `u64` as an attribute: an integer when it fits in an `i64`, its
/// decimal text otherwise.
fn unsigned(value: u64) -> Value {
    i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from)
}

/// An event's name (its message), the text of an error it records, and its
/// attributes.
struct EventFields {
    name: Option<Cow<'static, str>>,
    exception: Option<String>,
    attributes: Vec<KeyValue>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: Value) {
        self.attributes
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, unsigned(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.name = Some(Cow::Owned(value.to_owned()));
        } else {
            self.push(field, value.to_owned().into());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        self.attributes
            .push(KeyValue::new(EXCEPTION_MESSAGE, text.clone()));
        self.push(field, text.clone().into());
        self.exception = Some(text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.name = Some(Cow::Owned(text));
        } else {
            self.push(field, text.into());
        }
    }
}

/// Runs `f` on the OpenTelemetry side of `span`: `None` when no
/// [`OtelLayer`] over `tracing-subscriber`'s registry records it.
pub(crate) fn with_span<T>(span: &tracing::Span, f: impl FnOnce(&mut OtelSpan) -> T) -> Option<T> {
    request_scope::with_extensions(span, |extensions| extensions.get_mut::<OtelSpan>().map(f))
        .flatten()
}

#[cfg(test)]
pub(in crate::observability) mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::{
        Context, KeyValue, Value,
        trace::{
            SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
            TraceState, TracerProvider as _,
        },
    };
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        trace::{Sampler, SdkTracerProvider, ShouldSample as _, SpanData, SpanExporter},
    };
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{
        super::sampling::{Ids, Ratio},
        OtelLayer, OtelSpan, with_span,
    };
    use crate::observability::request_scope::with_extensions;

    /// The spans a provider exported, as they end (the trace context's
    /// tests use it too).
    #[derive(Clone, Debug, Default)]
    pub(in crate::observability) struct Exported(
        pub(in crate::observability) Arc<Mutex<Vec<SpanData>>>,
    );

    impl SpanExporter for Exported {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    impl Exported {
        fn named(&self, name: &str) -> SpanData {
            let spans = self.0.lock().unwrap();
            let mut found = spans.iter().filter(|span| span.name == name);
            let span = found.next().unwrap_or_else(|| panic!("no span `{name}`"));
            assert!(found.next().is_none(), "one span `{name}`");
            span.clone()
        }

        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// Runs `f` with a subscriber that records spans with the layer,
    /// sampling `ratio` of new traces; returns what was exported.
    fn traced(ratio: f64, f: impl FnOnce()) -> Exported {
        traced_with(ratio, |_| f())
    }

    /// As [`traced`], `f` seeing what is exported as it is. The layer
    /// decides the sampling itself, as with a `Telemetry` provider.
    fn traced_with(ratio: f64, f: impl FnOnce(&Exported)) -> Exported {
        traced_by(ratio, Some(Ratio::new(ratio)), f)
    }

    /// As [`traced_with`], the layer deciding the sampling with `sampling`,
    /// or leaving it to the SDK (`None`).
    fn traced_by(ratio: f64, sampling: Option<Ratio>, f: impl FnOnce(&Exported)) -> Exported {
        let exported = Exported::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_id_generator(Ids::default())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(OtelLayer::new(provider.tracer("test"), sampling));
        tracing::subscriber::with_default(subscriber, || f(&exported));
        exported
    }

    /// Root spans and their children at ratio 0.5: the root's context.
    fn roots_and_children(exported: &Exported) -> Vec<SpanContext> {
        (0..400)
            .map(|_| {
                let root = tracing::info_span!("root");
                let root_cx = context(&root).unwrap().span().span_context().clone();
                let child = root.in_scope(|| tracing::info_span!("child"));
                let child_cx = context(&child).unwrap().span().span_context().clone();
                assert_eq!(child_cx.trace_id(), root_cx.trace_id());
                assert_eq!(child_cx.is_sampled(), root_cx.is_sampled());
                drop((child, root));
                let found = exported
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|span| span.span_context.trace_id() == root_cx.trace_id())
                    .count();
                assert_eq!(found, if root_cx.is_sampled() { 2 } else { 0 });
                root_cx
            })
            .collect()
    }

    #[test]
    fn the_layer_samples_the_spans_the_sdk_would() {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.5)));
        for sampling in [Some(Ratio::new(0.5)), None] {
            let mut roots = Vec::new();
            let exported = traced_by(0.5, sampling, |exported| {
                roots = roots_and_children(exported);
            });
            let kept = roots.iter().filter(|root| root.is_sampled()).count();
            assert!((120..280).contains(&kept), "{kept} of 400");
            assert_eq!(exported.count(), 2 * kept);
            for root in &roots {
                let sdk = sampler.should_sample(
                    None,
                    root.trace_id(),
                    "root",
                    &SpanKind::Internal,
                    &[],
                    &[],
                );
                let sdk =
                    sdk.decision == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample;
                assert_eq!(root.is_sampled(), sdk, "{sampling:?}");
            }
        }
    }

    fn context(span: &tracing::Span) -> Option<Context> {
        with_span(span, |otel| otel.context().clone())
    }

    fn set_parent(span: &tracing::Span, parent: Context) -> bool {
        with_span(span, |otel| otel.set_parent(parent)) == Some(true)
    }

    fn attribute(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.clone())
    }

    #[test]
    fn children_share_the_trace_and_fields_become_attributes() {
        let exported = traced(1.0, || {
            let root = tracing::info_span!(
                "root",
                otel.name = "GET /users",
                otel.kind = "server",
                count = 5_u64,
                big = u64::MAX,
                ok = true,
                who = "ada",
            );
            let explicit = tracing::info_span!(parent: &root, "explicit");
            {
                let _entered = root.enter();
                let _child = tracing::info_span!("contextual").entered();
            }
            drop(explicit);
            let _root_again = tracing::info_span!(parent: None, "detached");
        });
        let root = exported.named("GET /users");
        assert_eq!(root.span_kind, SpanKind::Server);
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(attribute(&root, "count"), Some(Value::I64(5)));
        assert_eq!(
            attribute(&root, "big"),
            Some(Value::from(u64::MAX.to_string()))
        );
        assert_eq!(attribute(&root, "ok"), Some(Value::Bool(true)));
        assert_eq!(attribute(&root, "who"), Some(Value::from("ada")));
        assert!(
            root.attributes
                .iter()
                .all(|attribute| !attribute.key.as_str().starts_with("otel.")),
            "{:?}",
            root.attributes
        );
        assert!(root.end_time >= root.start_time);
        for name in ["explicit", "contextual"] {
            let child = exported.named(name);
            assert_eq!(child.span_kind, SpanKind::Internal);
            assert_eq!(
                child.span_context.trace_id(),
                root.span_context.trace_id(),
                "{name}"
            );
            assert_eq!(child.parent_span_id, root.span_context.span_id(), "{name}");
        }
        let detached = exported.named("detached");
        assert_ne!(
            detached.span_context.trace_id(),
            root.span_context.trace_id()
        );
        assert_eq!(detached.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn a_parent_set_before_the_span_starts_is_its_parent_and_not_after() {
        let remote = SpanContext::new(
            TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
            SpanId::from(0xb7ad_6b71_6920_3331),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let exported = traced(0.0, || {
            let span = tracing::info_span!("continued");
            let parent = Context::new().with_remote_span_context(remote.clone());
            assert!(set_parent(&span, parent.clone()));
            let started = context(&span).unwrap();
            assert_eq!(started.span().span_context().trace_id(), remote.trace_id());
            assert!(!set_parent(&span, parent));
        });
        // Sampled because its parent is, whatever the ratio for new traces.
        let span = exported.named("continued");
        assert_eq!(span.span_context.trace_id(), remote.trace_id());
        assert_eq!(span.parent_span_id, remote.span_id());
    }

    #[test]
    fn where_telemetry_is_suppressed_a_span_has_no_ids() {
        for ratio in [0.0, 1.0] {
            let exported = traced(ratio, || {
                let _suppressed = Context::enter_telemetry_suppressed_scope();
                let span = tracing::info_span!("inside an exporter");
                let started = context(&span).unwrap();
                assert!(!started.span().span_context().is_valid(), "ratio {ratio}");
            });
            assert_eq!(exported.count(), 0);
        }
    }

    #[test]
    fn unsampled_spans_have_ids_and_record_nothing() {
        let exported = traced(0.0, || {
            let span = tracing::info_span!("quiet", late = tracing::field::Empty);
            let _entered = span.enter();
            span.record("late", 1);
            tracing::error!(what = "ignored", "an event");
            let started = context(&span).unwrap();
            assert!(started.span().span_context().is_valid());
            assert!(!started.span().is_recording());
            let recording = with_extensions(&span, |extensions| {
                extensions.get_mut::<OtelSpan>().map(|otel| otel.records())
            });
            assert_eq!(recording, Some(Some(false)));
        });
        assert_eq!(exported.count(), 0);
    }

    #[test]
    fn events_become_span_events_and_an_error_marks_the_status() {
        let exported = traced(1.0, || {
            let span = tracing::info_span!("work");
            // Before the span starts, and after.
            tracing::info!(parent: &span, step = 1, "begun");
            let _entered = span.enter();
            tracing::error!(code = 7, "failed");
        });
        let span = exported.named("work");
        let names: Vec<_> = span
            .events
            .iter()
            .map(|event| event.name.as_ref())
            .collect();
        assert_eq!(names, ["begun", "failed"]);
        let failed = &span.events[1];
        assert!(failed.attributes.contains(&KeyValue::new("level", "ERROR")));
        assert!(failed.attributes.contains(&KeyValue::new("code", 7)));
        assert!(
            span.events[0]
                .attributes
                .contains(&KeyValue::new("step", 1))
        );
        assert_eq!(span.status, Status::error(""));
    }

    #[test]
    fn status_directives_late_fields_and_links() {
        let exported = traced(1.0, || {
            let first = tracing::info_span!("first");
            let span = tracing::info_span!(
                "second",
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
                late = tracing::field::Empty,
            );
            span.follows_from(&first);
            let _entered = span.enter();
            span.record("late", "value");
            span.record("otel.status_code", "error");
            span.record("otel.status_description", "boom");
            let ok = tracing::info_span!("third", otel.status_code = "ok");
            drop(ok);
        });
        let first = exported.named("first");
        let second = exported.named("second");
        assert_eq!(attribute(&second, "late"), Some(Value::from("value")));
        assert_eq!(second.status, Status::error("boom"));
        assert_eq!(second.links.len(), 1);
        assert_eq!(second.links[0].span_context, first.span_context);
        assert_eq!(exported.named("third").status, Status::Ok);
    }

    #[test]
    fn an_entered_span_is_the_current_opentelemetry_context() {
        traced(1.0, || {
            let outer = tracing::info_span!("outer");
            let inner = tracing::info_span!("inner");
            let outer_id = context(&outer).unwrap().span().span_context().span_id();
            let inner_id = context(&inner).unwrap().span().span_context().span_id();
            let current = || Context::current().span().span_context().span_id();
            assert_eq!(current(), SpanId::INVALID);
            {
                let _outer = outer.enter();
                assert_eq!(current(), outer_id);
                {
                    let _inner = inner.enter();
                    assert_eq!(current(), inner_id);
                }
                assert_eq!(current(), outer_id);
            }
            assert_eq!(current(), SpanId::INVALID);
        });
    }

    #[test]
    fn a_sampled_span_ends_when_last_left_not_when_a_child_lets_it_close() {
        let mut left = None;
        let exported = traced(1.0, || {
            let parent = tracing::info_span!("parent");
            let child = {
                let _entered = parent.enter();
                tracing::info_span!("child")
            };
            left = Some(std::time::SystemTime::now());
            drop(parent);
            // The child keeps the parent open; it is finished all the same.
            // (The clock moves on before the child closes.)
            while std::time::SystemTime::now() <= left.unwrap() {
                std::hint::spin_loop();
            }
            drop(child);
        });
        let parent = exported.named("parent");
        assert!(parent.end_time <= left.unwrap(), "ended when left");
        assert!(exported.named("child").end_time > parent.end_time);
    }

    #[test]
    fn an_error_without_a_message_is_an_exception_event() {
        let exported = traced(1.0, || {
            let span = tracing::info_span!("io");
            let _entered = span.enter();
            let error = std::io::Error::other("disk on fire");
            tracing::error!(error = &error as &(dyn std::error::Error + 'static));
        });
        let span = exported.named("io");
        assert_eq!(span.events.len(), 1);
        let event = &span.events[0];
        assert_eq!(event.name, "exception");
        assert!(
            event
                .attributes
                .contains(&KeyValue::new("exception.message", "disk on fire"))
        );
        assert_eq!(span.status, Status::error("disk on fire"));
    }

    #[test]
    fn a_server_span_finished_early_is_exported_then() {
        let exported = traced_with(1.0, |exported| {
            let span = tracing::info_span!("http.server");
            let _clone = span.clone();
            with_extensions(&span, |extensions| {
                let otel = extensions.get_mut::<OtelSpan>().unwrap();
                otel.set_attribute(KeyValue::new("http.response.status_code", 200));
                otel.end();
            });
            // Exported while a clone of the span still holds it open.
            assert_eq!(exported.count(), 1);
        });
        let span = exported.named("http.server");
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            Some(Value::I64(200))
        );
    }
}
