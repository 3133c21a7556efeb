//! [`RequestScope`]: what every log line written inside a request (or a bus
//! message's processing) says about it — the service, the method, the
//! request id and, with feature `otel`, the trace and span ids — kept as one
//! extension of the request's span and written only when a line is logged:
//! by the JSON log layer as members of the line, by [`WithRequestScope`] at
//! the end of a text line.
//!
//! These are not `tracing` fields of the span: every field is copied into an
//! OpenTelemetry attribute and formatted by the log layer when the span is
//! created, logged in or not, sampled or not. As an extension they cost one
//! insert per request, and a line logged inside a child span (a client call,
//! a span of the handler's own) still carries them.

use std::{fmt, sync::Arc};

use tracing::{Event, Span, Subscriber};
use tracing_subscriber::{
    Registry,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Writer},
    },
    registry::{ExtensionsMut, LookupSpan, SpanRef},
};

use super::json_fields::write_string;
use crate::middleware::RequestId;

/// Runs `f` on the registry extensions of `span` (where its scope is kept,
/// and with feature `otel` its OpenTelemetry side): `None` for a span no
/// subscriber records, or one whose subscriber is not built on
/// `tracing-subscriber`'s [`Registry`].
pub(crate) fn with_extensions<T>(
    span: &Span,
    f: impl FnOnce(&mut ExtensionsMut<'_>) -> T,
) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        Some(f(&mut extensions))
    })
    .flatten()
}

/// The request a span serves, as its log lines show it.
#[derive(Clone, Debug)]
pub(crate) struct RequestScope {
    service: Arc<str>,
    method: Arc<str>,
    request_id: Option<RequestId>,
    #[cfg(feature = "otel")]
    pub(crate) ids: Option<super::trace_context::TraceIds>,
}

impl RequestScope {
    /// `method` of `service`; `request_id` when the work has one (a bus
    /// message has none).
    pub(crate) fn new(
        service: &Arc<str>,
        method: &Arc<str>,
        request_id: Option<RequestId>,
    ) -> Self {
        Self {
            service: Arc::clone(service),
            method: Arc::clone(method),
            request_id,
            #[cfg(feature = "otel")]
            ids: None,
        }
    }

    /// The scope a line is logged in: the first one found in `spans`, the
    /// line's span and its parents outwards.
    pub(super) fn nearest<'a, R>(mut spans: impl Iterator<Item = SpanRef<'a, R>>) -> Option<Self>
    where
        R: LookupSpan<'a> + 'a,
    {
        spans.find_map(|span| {
            let extensions = span.extensions();
            let scope = extensions.get::<Self>();
            // With an OpenTelemetry layer, the scope is kept in the span's
            // OpenTelemetry side (one extension less per request).
            #[cfg(feature = "otel")]
            let scope = scope.or_else(|| {
                extensions
                    .get::<super::tracing::layer::OtelSpan>()?
                    .scope
                    .as_ref()
            });
            scope.cloned()
        })
    }

    /// `"key":"value"` pairs, each preceded by a comma, but for the keys
    /// `taken` says the line already has (an event's own `method` field,
    /// say: a JSON object with a key twice is refused by strict parsers).
    pub(super) fn write_json(
        &self,
        out: &mut impl fmt::Write,
        taken: impl Fn(&str) -> bool,
    ) -> fmt::Result {
        for (key, value) in self.pairs().filter(|(key, _)| !taken(key)) {
            write!(out, ",\"{key}\":")?;
            match value {
                Value::Text(text) => write_string(out, text)?,
                #[cfg(feature = "otel")]
                value => write!(out, "\"{value}\"")?,
            }
        }
        Ok(())
    }

    /// ` key=value` pairs; text values quoted and escaped as `Debug` does.
    fn write_text(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (key, value) in self.pairs() {
            match value {
                Value::Text(text) => write!(out, " {key}={text:?}")?,
                #[cfg(feature = "otel")]
                value => write!(out, " {key}={value}")?,
            }
        }
        Ok(())
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        let text = [
            ("service", Some(&*self.service)),
            ("method", Some(&*self.method)),
            (
                "request_id",
                self.request_id.as_ref().map(RequestId::as_str),
            ),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, Value::Text(value?))));
        #[cfg(feature = "otel")]
        let text = text.chain(self.ids.into_iter().flat_map(|ids| {
            [
                ("trace_id", Value::TraceId(ids.trace_id)),
                ("span_id", Value::SpanId(ids.span_id)),
            ]
        }));
        text
    }
}

/// A value of a [`RequestScope`] in a log line.
enum Value<'a> {
    Text(&'a str),
    #[cfg(feature = "otel")]
    TraceId(opentelemetry::trace::TraceId),
    #[cfg(feature = "otel")]
    SpanId(opentelemetry::trace::SpanId),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            // Lowercase hex, as in `traceparent`.
            #[cfg(feature = "otel")]
            Self::TraceId(id) => id.fmt(f),
            #[cfg(feature = "otel")]
            Self::SpanId(id) => id.fmt(f),
        }
    }
}

/// `tracing-subscriber`'s text format followed by the [`RequestScope`] of
/// the span the event is logged in, as `key=value` pairs at the end of the
/// line (the JSON log layer writes it as members of its own).
pub(crate) struct WithRequestScope {
    format: Format,
    /// The same format with ANSI colours, for a writer that takes them (the
    /// line is formatted into a buffer first, and a buffer's writer has
    /// none).
    colored: Format,
}

impl WithRequestScope {
    /// Around `tracing-subscriber`'s default text format (one line each).
    pub(crate) fn text() -> Self {
        let format = tracing_subscriber::fmt::format();
        Self {
            colored: format.clone().with_ansi(true),
            format,
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithRequestScope
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The event's span: its explicit parent, or the current span.
        let scope = RequestScope::nearest(ctx.event_scope().into_iter().flatten());
        let format = if writer.has_ansi_escapes() {
            &self.colored
        } else {
            &self.format
        };
        let mut line = String::new();
        format.format_event(ctx, Writer::new(&mut line), event)?;
        // One event, one line: a line break in a value (a message built
        // from user input) must not forge a line of its own.
        for (index, part) in line.trim_end_matches('\n').split('\n').enumerate() {
            if index > 0 {
                writer.write_str("\\n")?;
            }
            let mut pieces = part.split('\r');
            writer.write_str(pieces.next().unwrap_or_default())?;
            for piece in pieces {
                writer.write_str("\\r")?;
                writer.write_str(piece)?;
            }
        }
        if let Some(scope) = scope {
            scope.write_text(&mut writer)?;
        }
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::Value;
    use tracing_subscriber::{fmt, layer::SubscriberExt as _};

    use super::*;
    use crate::observability::{logging::json_layer, test_lines::Lines, trace_context};

    fn scope(service: &str, request_id: Option<&'static str>) -> RequestScope {
        RequestScope::new(
            &Arc::from(service),
            &Arc::from("Get"),
            request_id.map(|id| RequestId::from_header(&HeaderValue::from_static(id)).unwrap()),
        )
    }

    /// Logs "outside", then "inside" within a child span of a span carrying
    /// `scope`, with `subscriber`.
    fn log_with(subscriber: impl tracing::Subscriber + Send + Sync, scope: RequestScope) {
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let request = tracing::info_span!("http.server", otel.kind = "server");
            trace_context::scope(&request, scope);
            let _request = request.enter();
            let _child = tracing::info_span!("db.query", table = "users").entered();
            tracing::info!(rows = 1_u64, "inside");
        });
    }

    #[test]
    fn json_lines_inside_a_request_carry_its_scope_even_in_a_child_span() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(lines.make_writer()));
        log_with(subscriber, scope("users \"east\"\n", Some("req-1")));
        let text = lines.text();
        let parsed: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let [outside, inside] = parsed.as_slice() else {
            panic!("two lines expected: {text}");
        };
        assert!(outside.get("service").is_none(), "{outside}");
        assert!(outside.get("request_id").is_none(), "{outside}");
        assert_eq!(inside["service"], "users \"east\"\n", "{inside}");
        assert_eq!(inside["method"], "Get");
        assert_eq!(inside["request_id"], "req-1");
        assert_eq!(inside["rows"], 1);
        assert_eq!(inside["span"]["name"], "db.query");
        assert_eq!(inside["span"]["table"], "users");
        // Control characters stay escaped: one line each.
        assert_eq!(text.lines().count(), 2);
    }

    /// A subscriber writing text lines (no colours) into `Lines`.
    fn text_subscriber() -> (Lines, impl tracing::Subscriber + Send + Sync) {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .event_format(WithRequestScope::text())
                .with_ansi(false)
                .with_writer(lines.make_writer()),
        );
        (lines, subscriber)
    }

    #[test]
    fn text_lines_inside_a_request_end_with_its_scope() {
        let (lines, subscriber) = text_subscriber();
        log_with(subscriber, scope("users", None));
        let text = lines.text();
        let [outside, inside] = text.lines().collect::<Vec<_>>()[..] else {
            panic!("two lines expected: {text}");
        };
        assert!(outside.ends_with("outside"), "{outside}");
        assert!(
            inside.ends_with(r#"inside rows=1 service="users" method="Get""#),
            "{inside}"
        );
        assert!(inside.contains(r#"db.query{table="users"}"#), "{inside}");
    }

    /// A line break in a logged value cannot forge a line: one event, one
    /// line, in a request or not.
    #[test]
    fn text_lines_escape_line_breaks() {
        let (lines, subscriber) = text_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("user said {}", "hi\nERROR forged\r line");
            let span = tracing::info_span!("http.server");
            trace_context::scope(&span, scope("users", None));
            let _entered = span.enter();
            tracing::info!(name = "a\nb", "inside");
        });
        let text = lines.text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(r"hi\nERROR forged\r line"), "{text}");
        assert!(text.contains(r#"service="users""#), "{text}");
    }

    #[test]
    fn a_line_with_an_explicit_parent_takes_that_parents_scope_in_both_formats() {
        let (json, text) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(json.make_writer()))
            .with(
                fmt::layer()
                    .event_format(WithRequestScope::text())
                    .with_ansi(false)
                    .with_writer(text.make_writer()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("http.server");
            trace_context::scope(&request, scope("users", Some("req-9")));
            // Not entered: only the explicit parent names the request.
            tracing::info!(parent: &request, "later");
        });
        let line: Value = serde_json::from_str(json.text().trim_end()).unwrap();
        assert_eq!(line["request_id"], "req-9", "{line}");
        assert!(
            text.text().trim_end().ends_with(r#"request_id="req-9""#),
            "{}",
            text.text()
        );
    }

    #[test]
    fn a_span_nobody_records_keeps_nothing() {
        // No subscriber: attaching is a no-op. (Whether the span is disabled
        // depends on what other tests' subscribers said of its callsite
        // first: the interest is shared by the process.)
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            let span = tracing::info_span!("http.server");
            trace_context::scope(&span, scope("users", Some("req-1")));
            assert!(with_extensions(&span, |_| ()).is_none());
        });
    }
}
