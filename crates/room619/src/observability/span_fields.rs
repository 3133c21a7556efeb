//! [`SpanFields`]: how the JSON log layer keeps a span's fields — as the
//! JSON object text `tracing-subscriber`'s JSON format expects, written
//! straight into the span's buffer.
//!
//! The JSON log layer formats every span's fields when the span is created,
//! whether or not a line is ever logged inside it. `tracing-subscriber`'s
//! own `JsonFields` does it through a map of owned `serde_json::Value`s
//! serialized through an `io::Write` adaptor (which checks UTF-8 on every
//! write): about 16 000 instructions for a request span's eight fields, the
//! largest single cost of observability on a request. This writes the same
//! object (same values, escaped the same way) in one pass, without the
//! `otel.*` fields: they direct the OpenTelemetry layer and are not log
//! content.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, FormattedFields, format::Writer},
};

/// The JSON log layer's span-field format (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // Written whole into a buffer, then copied once: one call through
        // the writer instead of several per field. A span without fields to
        // log (a request span: its scope is not fields) allocates none.
        let mut object = String::new();
        let mut pairs = Pairs::new(&mut object, true);
        fields.record(&mut pairs);
        pairs.result?;
        if object.is_empty() {
            return writer.write_str("{}");
        }
        object.push('}');
        writer.write_str(&object)
    }

    /// Adds the fields recorded later to the object: the new pairs go before
    /// its closing brace. A field recorded again appears twice, and the last
    /// value wins when the object is read (as with `JsonFields`).
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let object = &mut current.fields;
        if object.ends_with('}') {
            object.pop();
        } else {
            object.clear();
            object.push('{');
        }
        let first = object.len() <= 1;
        let mut pairs = Pairs::new(object, first);
        fields.record(&mut pairs);
        let result = pairs.result;
        object.push('}');
        result
    }
}

/// Writes `"name":value` pairs, comma separated.
struct Pairs<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl<'a> Pairs<'a> {
    fn new(out: &'a mut String, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Writes one pair, unless the field directs the OpenTelemetry layer
    /// (`otel.name`, `otel.kind`, `otel.status_code`...): those say how to
    /// export the span and are not log content.
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        } else if self.out.is_empty() {
            // The object opens with its first pair, in a buffer sized for a
            // few fields.
            self.out.reserve(160);
            self.out.push('{');
        }
        self.result =
            write_string(self.out, name.strip_prefix("r#").unwrap_or(name)).and_then(|()| {
                self.out.push(':');
                value(self.out)
            });
    }
}

/// Each value as `JsonFields` writes it; 128-bit integers, left to
/// `record_debug`, become strings there too.
impl Visit for Pairs<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As `serde_json`: a number, or null when it is not finite.
        self.pair(field, |writer| {
            if value.is_finite() {
                write!(writer, "{value:?}")
            } else {
                writer.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |writer| write!(writer, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |writer| write_string(writer, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // As `serde_json`: an array of numbers.
        self.pair(field, |writer| {
            writer.write_char('[')?;
            for (index, byte) in value.iter().enumerate() {
                if index > 0 {
                    writer.write_char(',')?;
                }
                write!(writer, "{byte}")?;
            }
            writer.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// `value` as a JSON string.
pub(super) fn write_string(writer: &mut impl fmt::Write, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(&mut *writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string, as `serde_json`
/// does: `"`, `\` and the control characters below U+0020.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest
            .bytes()
            .position(|byte| ESCAPES[usize::from(byte)] != 0)
        {
            // The byte at `at` is ASCII: `at` and `at + 1` are char boundaries.
            let (plain, tail) = rest.split_at(at);
            self.0.write_str(plain)?;
            let byte = tail.bytes().next().unwrap_or_default();
            match ESCAPES[usize::from(byte)] {
                b'u' => write!(self.0, "\\u{byte:04x}")?,
                short => {
                    self.0.write_char('\\')?;
                    self.0.write_char(char::from(short))?;
                }
            }
            rest = tail.get(1..).unwrap_or_default();
        }
        self.0.write_str(rest)
    }
}

/// For each byte, what follows the backslash that escapes it (`u`: a
/// `\u00XX` escape), or 0 when it stands for itself.
static ESCAPES: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tracing_subscriber::{fmt, layer::SubscriberExt as _};

    use super::*;
    use crate::observability::test_lines::Lines;

    /// The `span` object of the one line logged inside the span `make`
    /// opens, once with these span fields and once with
    /// `tracing-subscriber`'s `JsonFields`.
    fn span_objects(make: impl Fn() -> tracing::Span) -> (Value, Value) {
        let ours = Lines::default();
        let theirs = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .json()
                    .fmt_fields(SpanFields)
                    .with_writer(ours.make_writer()),
            )
            .with(fmt::layer().json().with_writer(theirs.make_writer()));
        tracing::subscriber::with_default(subscriber, || {
            let span = make();
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let span = |lines: &Lines| {
            let line: Value = serde_json::from_str(lines.text().trim_end()).unwrap();
            line["span"].clone()
        };
        // The `otel.*` fields direct the OpenTelemetry layer; only
        // `JsonFields` logs them.
        let mut theirs = span(&theirs);
        if let Some(object) = theirs.as_object_mut() {
            object.retain(|key, _| !key.starts_with("otel."));
        }
        (span(&ours), theirs)
    }

    #[test]
    fn fields_read_as_json_fields_does() {
        let (ours, theirs) = span_objects(|| {
            tracing::info_span!(
                "request",
                otel.name = "Echo/Say",
                text = "quote \" backslash \\ newline \n tab \t bell \u{7} é ∑ 🦀",
                shown = ?"a\"b\u{1}c",
                display = %"plain",
                signed = -42_i64,
                unsigned = u64::MAX,
                wide = i128::MIN,
                ratio = 0.25_f64,
                whole = 3.0_f64,
                nan = f64::NAN,
                yes = true,
                r#type = "raw",
            )
        });
        assert_eq!(ours, theirs);
        assert_eq!(
            ours["text"],
            "quote \" backslash \\ newline \n tab \t bell \u{7} é ∑ 🦀"
        );
        assert_eq!(ours["shown"], "\"a\\\"b\\u{1}c\"");
        assert_eq!(ours["type"], "raw");
        assert_eq!(ours["nan"], Value::Null);
        assert_eq!(ours["name"], "request");
        assert!(ours.get("otel.name").is_none(), "{ours}");
    }

    #[test]
    fn fields_recorded_later_are_added_and_the_last_value_wins() {
        let (ours, theirs) = span_objects(|| {
            let span = tracing::info_span!(
                "request",
                first = 1_u64,
                status = tracing::field::Empty,
                later = tracing::field::Empty,
            );
            span.record("status", 200_u64);
            span.record("status", 503_u64);
            span.record("later", "set");
            span
        });
        assert_eq!(ours, theirs);
        assert_eq!(
            ours,
            json!({"first": 1, "status": 503, "later": "set", "name": "request"})
        );
    }

    #[test]
    fn spans_without_fields_and_fields_added_to_them() {
        let (ours, theirs) = span_objects(|| tracing::info_span!("bare"));
        assert_eq!(ours, theirs);
        let (ours, theirs) = span_objects(|| {
            let span = tracing::info_span!("late", value = tracing::field::Empty);
            span.record("value", "now");
            span
        });
        assert_eq!(ours, theirs);
        assert_eq!(ours, json!({"value": "now", "name": "late"}));
    }

    #[test]
    fn every_control_character_is_escaped() {
        let text: String = (0_u8..0x20).map(char::from).collect();
        let mut written = String::new();
        write_string(&mut written, &text).unwrap();
        assert!(!written.bytes().any(|byte| byte < 0x20), "{written}");
        assert_eq!(serde_json::from_str::<String>(&written).unwrap(), text);
        assert_eq!(written, serde_json::to_string(&text).unwrap());
    }
}
