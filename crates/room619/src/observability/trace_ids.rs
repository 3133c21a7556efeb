//! [`WithTraceIds`]: adds the request span's OpenTelemetry `trace_id` and
//! `span_id` (kept as a span extension by the observe layers) to each JSON
//! log line, when the line is written: requests that log nothing pay
//! nothing for it.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// A JSON event format followed by `"trace_id"` and `"span_id"` when a span
/// in scope carries them (feature `otel`).
pub(crate) struct WithTraceIds<F>(pub(crate) F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    N: for<'writer> FormatFields<'writer> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        #[cfg(feature = "otel")]
        if let Some(ids) = ctx.lookup_current().and_then(|current| {
            current.scope().find_map(|span| {
                span.extensions()
                    .get::<super::trace_context::TraceIds>()
                    .copied()
            })
        }) {
            let mut writer = writer;
            let mut line = String::new();
            self.0.format_event(ctx, Writer::new(&mut line), event)?;
            if let Some(open) = line.trim_end().strip_suffix('}') {
                return writeln!(
                    writer,
                    "{open},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                    ids.trace_id, ids.span_id
                );
            }
            return writer.write_str(&line);
        }
        self.0.format_event(ctx, writer, event)
    }
}
