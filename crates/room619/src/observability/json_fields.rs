//! How the JSON log layer writes fields: `"name":value` pairs, each value
//! as `serde_json` would write it (what `tracing-subscriber`'s JSON format
//! wrote), in one pass; a span's `otel.*` fields are left out (they direct
//! the OpenTelemetry layer and are not log content).
//!
//! A [`Pairs`] visitor hands each field's name to a [`Sink`], which says
//! where its value goes: straight after the name in a line being written
//! (an event's fields), or into a span's list of values (a span's fields,
//! kept to be written in each line logged inside it).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

/// Where a visited field's value is written.
pub(super) trait Sink {
    /// The buffer `name`'s value is to be written into (after anything the
    /// sink writes first, such as the name).
    fn value(&mut self, name: &'static str) -> &mut String;
}

/// Writes each field's value into the buffer its [`Sink`] gives, less the
/// fields it is told to [`Skip`].
pub(super) struct Pairs<S> {
    sink: S,
    skip: Skip,
    result: fmt::Result,
}

/// Fields that are not log content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Skip {
    /// None: an event's fields.
    Nothing,
    /// `otel.*`: a span's directions to the OpenTelemetry layer.
    Otel,
    /// `log.*`: an event bridged from the `log` crate describes its record
    /// with them (its target is the line's target).
    Log,
}

impl Skip {
    fn skips(self, name: &str) -> bool {
        match self {
            Self::Nothing => false,
            Self::Otel => name.starts_with("otel."),
            Self::Log => name.starts_with("log."),
        }
    }
}

impl<S: Sink> Pairs<S> {
    pub(super) fn new(sink: S, skip: Skip) -> Self {
        Self {
            sink,
            skip,
            result: Ok(()),
        }
    }

    /// `Err` when a value's `Debug` or `Display` failed.
    pub(super) fn finish(self) -> fmt::Result {
        self.result
    }

    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || self.skip.skips(name) {
            return;
        }
        self.result = value(self.sink.value(name.strip_prefix("r#").unwrap_or(name)));
    }
}

/// An event's fields, written into its line: `,"name":value` each; a field
/// named as one of the line's own members (`timestamp`, `level`, `target`,
/// `span`) as `fields.<name>`, so that no key is in the line twice.
pub(super) struct Line<'a>(pub(super) &'a mut String);

impl Sink for Line<'_> {
    fn value(&mut self, name: &'static str) -> &mut String {
        self.0.push(',');
        if matches!(name, "timestamp" | "level" | "target" | "span") {
            self.0.push_str("\"fields.");
            self.0.push_str(name);
            self.0.push('"');
        } else {
            push_string(self.0, name);
        }
        self.0.push(':');
        self.0
    }
}

/// A span's values by field name, in the order first recorded; a field
/// recorded again keeps its place and takes the new value.
#[derive(Debug, Default)]
pub(super) struct Values(pub(super) Vec<(&'static str, String)>);

impl Values {
    /// The values as the members of a JSON object, each followed by a comma;
    /// a field called `name` as `fields.name`, since the span's own name
    /// follows under that key (a key twice in one object is refused by
    /// strict parsers).
    pub(super) fn write_members(&self, out: &mut String) {
        for (name, value) in &self.0 {
            if *name == "name" {
                out.push_str("\"fields.name\"");
            } else {
                push_string(out, name);
            }
            out.push(':');
            out.push_str(value);
            out.push(',');
        }
    }

    /// Takes `newer`'s values, replacing those of the same fields.
    pub(super) fn merge(&mut self, newer: Self) {
        for (name, value) in newer.0 {
            match self.0.iter_mut().find(|(known, _)| *known == name) {
                Some((_, old)) => *old = value,
                None => self.0.push((name, value)),
            }
        }
    }
}

impl Sink for &mut Values {
    fn value(&mut self, name: &'static str) -> &mut String {
        let index = self
            .0
            .iter()
            .position(|(known, _)| *known == name)
            .unwrap_or_else(|| {
                self.0.push((name, String::new()));
                self.0.len() - 1
            });
        let value = &mut self.0[index].1;
        value.clear();
        value
    }
}

/// Each value as `serde_json` writes it; 128-bit integers, left to
/// `record_debug`, become strings, as they did in `tracing-subscriber`'s
/// JSON.
impl<S: Sink> Visit for Pairs<S> {
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

/// `value` as a JSON string, at the end of `out`.
pub(super) fn push_string(out: &mut String, value: &str) {
    // Writing into a `String` does not fail.
    write_string(out, value).unwrap_or_default();
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
    use crate::observability::{logging::json_layer, test_lines::Lines};

    /// The `span` object of the one line logged inside the span `make`
    /// opens, once by room619's JSON log layer and once by
    /// `tracing-subscriber`'s JSON format.
    fn span_objects(make: impl Fn() -> tracing::Span) -> (Value, Value) {
        let ours = Lines::default();
        let theirs = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(ours.make_writer()))
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
