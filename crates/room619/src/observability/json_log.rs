//! [`JsonLog`]: the JSON log layer — one object a line, written directly.
//!
//! `tracing-subscriber`'s JSON format formats every span's fields when the
//! span is created, into a string kept in the span (one allocation, and
//! `"{}"` for a span without fields, which is what a request span is), and
//! parses that string back with `serde_json` for every line logged inside
//! the span. On a request that logs nothing, that was about a thousand
//! instructions of the request's observability cost. This layer keeps a
//! span's values only when it has some ([`Values`]), formatted outside the
//! registry's lock, and copies them into each line as they are.
//!
//! A line has the members the JSON format wrote: `timestamp` (RFC 3339, UTC,
//! microseconds), `level`, the event's fields (`message` among them),
//! `target`, `span` (the current span's fields and `name`), then the
//! request's scope (`service`, `method`, `request_id`, `trace_id`,
//! `span_id`; see [`RequestScope`]). An event bridged from the `log` crate
//! has its `log` target as `target` and no `log.*` fields.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Subscriber,
    span::{Attributes, Id, Record},
};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::{
    Layer,
    fmt::MakeWriter,
    layer::Context,
    registry::{LookupSpan, SpanRef},
};

use super::{
    json_fields::{Line, Pairs, Skip, Values, push_string},
    request_scope::RequestScope,
};

/// The JSON log layer, writing each line to a writer `W` makes.
pub(crate) struct JsonLog<W> {
    make_writer: W,
}

impl<W> JsonLog<W> {
    pub(crate) fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLog<W>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.values().is_empty() {
            // Nothing to keep (a request span: its scope is not fields).
            return;
        }
        // Formatted with no lock held: a value's `Debug` may log.
        keep(id, values_of(|pairs| attrs.record(pairs)), &ctx);
    }

    fn on_record(&self, id: &Id, record: &Record<'_>, ctx: Context<'_, S>) {
        keep(id, values_of(|pairs| record.record(pairs)), &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let written = BUFFER.try_with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write(&mut line, event, &ctx);
                if line.capacity() > KEPT_BUFFER {
                    *line = String::new();
                }
            }
            // A line logged while this thread formats another gets a buffer
            // of its own (only through a dispatcher of its own: `tracing`
            // drops an event raised inside its subscriber).
            Err(_) => self.write(&mut String::new(), event, &ctx),
        });
        if written.is_err() {
            // The thread is being torn down (a thread-local's `Drop` logs).
            self.write(&mut String::new(), event, &ctx);
        }
    }
}

thread_local! {
    /// The line being formatted on this thread, kept for the next.
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer grown past this (by a huge line) is not kept.
const KEPT_BUFFER: usize = 64 * 1024;

/// Adds `values` to those kept for the span `id` (another JSON log layer on
/// the same registry may have kept them already).
fn keep<S>(id: &Id, values: Values, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if values.0.is_empty() {
        return;
    }
    let Some(span) = ctx.span(id) else {
        return;
    };
    let mut extensions = span.extensions_mut();
    match extensions.get_mut::<Values>() {
        Some(known) => known.merge(values),
        None => extensions.insert(values),
    }
}

impl<W> JsonLog<W>
where
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    /// Formats `event` into `line` and writes it out.
    fn write<S>(&self, line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        line.push_str("{\"timestamp\":\"");
        write_timestamp(line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push('"');
        // The event's values are formatted first, with no lock held.
        let skip = if normalized.is_some() {
            Skip::Log
        } else {
            Skip::Nothing
        };
        let mut pairs = Pairs::new(Line(line), skip);
        event.record(&mut pairs);
        if pairs.finish().is_err() {
            // A value that cannot be formatted leaves the line unwritten, as
            // `tracing-subscriber` does.
            return;
        }
        line.push_str(",\"target\":");
        push_string(line, metadata.target());
        let current = match event.parent() {
            Some(parent) => ctx.span(parent),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        if let Some(current) = current {
            write_span(line, &current, metadata.fields());
        }
        line.push_str("}\n");
        let mut writer = self.make_writer.make_writer_for(metadata);
        if writer.write_all(line.as_bytes()).is_err() {
            // There is nowhere left to report that logging failed.
        }
    }
}

/// The `span` member (the span's fields and name), then the scope of the
/// request the span belongs to, if it does (but for the keys the event's
/// own `fields` took).
fn write_span<R>(line: &mut String, span: &SpanRef<'_, R>, fields: &tracing::field::FieldSet)
where
    R: for<'span> LookupSpan<'span>,
{
    line.push_str(",\"span\":{");
    if let Some(values) = span.extensions().get::<Values>() {
        values.write_members(line);
    }
    line.push_str("\"name\":");
    push_string(line, span.name());
    line.push('}');
    if let Some(scope) = RequestScope::nearest(span.scope()) {
        // A `String` takes every write.
        scope
            .write_json(line, |key| fields.field(key).is_some())
            .unwrap_or_default();
    }
}

/// The values `record` visits, keyed by field name. A value whose `Debug`
/// or `Display` fails is left out (half written, it would break every line
/// logged in the span), and the fields after it, which are not visited.
fn values_of(record: impl FnOnce(&mut Pairs<&mut Values>)) -> Values {
    let mut values = Values::default();
    let mut pairs = Pairs::new(&mut values, Skip::Otel);
    record(&mut pairs);
    if pairs.finish().is_err() {
        // The failed value is the last one written.
        values.0.pop();
    }
    values
}

/// `time` as RFC 3339 in UTC with microseconds, as `tracing-subscriber`
/// writes it: `2026-11-27T13:05:28.123456Z`. A clock before 1970 reads as
/// 1970.
fn write_timestamp(out: &mut String, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    // A `String` takes every write.
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_micros(),
    )
    .unwrap_or_default();
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01, so that a leap day ends its year.
    let days = days + 719_468;
    let era = days / 146_097;
    let of_era = days % 146_097;
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, 0 to 11.
    let month_from_march = (5 * of_year + 2) / 153;
    let day = of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::observability::test_lines::Lines;

    fn at(seconds: u64, micros: u64) -> String {
        let mut out = String::new();
        let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
        write_timestamp(&mut out, time);
        out
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_microseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(951_955_199, 0), "2000-03-01T23:59:59.000000Z");
        assert_eq!(at(1_795_784_788, 123_456), "2026-11-27T13:06:28.123456Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        // Every day of four centuries, against a day-by-day count.
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_date(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    /// What `log` logs, as text and parsed line by line.
    fn logged(log: impl FnOnce()) -> (String, Vec<Value>) {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(JsonLog::new(lines.make_writer()));
        tracing::subscriber::with_default(subscriber, log);
        let text = lines.text();
        let parsed = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (text, parsed)
    }

    /// An event's own field named as a scope key (`method`) is the line's
    /// one `method`: no key twice in an object.
    #[test]
    fn an_events_own_field_is_not_repeated_by_the_request_scope() {
        let (text, logged) = logged(|| {
            let span = tracing::info_span!("http.server");
            let service: std::sync::Arc<str> = "users".into();
            crate::observability::trace_context::scope(
                &span,
                RequestScope::new(&service, &"GET /users".into(), None),
            );
            let _entered = span.enter();
            tracing::info!(method = "PATCH", level = 3_u64, "changed");
            tracing::info!("plain");
        });
        let [own, plain] = logged.as_slice() else {
            panic!("two lines expected: {text}");
        };
        let first = text.lines().next().unwrap();
        assert_eq!(first.matches("\"method\":").count(), 1, "{first}");
        assert_eq!(first.matches("\"level\":").count(), 1, "{first}");
        assert_eq!(own["level"], "INFO");
        assert_eq!(own["fields.level"], 3);
        assert_eq!(own["method"], "PATCH");
        assert_eq!(own["service"], "users");
        assert_eq!(plain["method"], "GET /users");
    }

    #[test]
    fn a_line_has_the_members_of_tracing_subscribers_json() {
        let (text, logged) = logged(|| {
            tracing::warn!(target: "shop::orders", order = 7_u64, "order \"late\"");
            let span = tracing::info_span!("checkout", cart = "c-1", total = tracing::field::Empty);
            span.record("total", 42_u64);
            span.record("total", 43_u64);
            let _entered = span.enter();
            tracing::info!(otel.name = "hidden", "inside");
        });
        let [outside, inside] = logged.as_slice() else {
            panic!("two lines expected: {logged:?}");
        };
        let keys: Vec<&str> = outside
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["level", "message", "order", "target", "timestamp"],
            "{outside}"
        );
        assert_eq!(outside["level"], "WARN");
        assert_eq!(outside["message"], "order \"late\"");
        assert_eq!(outside["order"], 7);
        assert_eq!(outside["target"], "shop::orders");
        assert!(outside["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            inside["span"],
            serde_json::json!({"cart": "c-1", "total": 43, "name": "checkout"})
        );
        assert_eq!(
            inside["otel.name"], "hidden",
            "an event's fields are all content"
        );
        assert_eq!(text.matches("\"total\"").count(), 1, "{text}");
        // The members come in the order tracing-subscriber wrote them.
        let first = text.lines().next().unwrap();
        let at = |key: &str| first.find(&format!("\"{key}\":")).unwrap();
        assert!(at("timestamp") < at("level"), "{first}");
        assert!(at("level") < at("message"), "{first}");
        assert!(at("message") < at("order"), "{first}");
        assert!(at("order") < at("target"), "{first}");
        let second = text.lines().nth(1).unwrap();
        assert!(
            second.find("\"target\":").unwrap() < second.find("\"span\":").unwrap(),
            "{second}"
        );
    }

    #[test]
    fn events_from_the_log_crate_keep_their_target_without_log_fields() {
        let (_, logged) = logged(|| {
            tracing_log::format_trace(
                &tracing_log::log::Record::builder()
                    .level(tracing_log::log::Level::Info)
                    .target("hyper::proto")
                    .args(format_args!("bridged"))
                    .build(),
            )
            .unwrap();
        });
        let [bridged] = logged.as_slice() else {
            panic!("one line expected: {logged:?}");
        };
        assert_eq!(bridged["target"], "hyper::proto");
        assert_eq!(bridged["message"], "bridged");
        assert!(
            bridged
                .as_object()
                .unwrap()
                .keys()
                .all(|key| !key.starts_with("log.")),
            "{bridged}"
        );
    }

    /// A value whose `Debug` fails.
    struct Failing;

    impl std::fmt::Debug for Failing {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            Err(std::fmt::Error)
        }
    }

    /// A value whose `Debug` logs a line of its own.
    struct Chatty;

    impl std::fmt::Debug for Chatty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            tracing::info!("formatting");
            f.write_str("chatty")
        }
    }

    #[test]
    fn a_value_that_fails_to_format_is_left_out_and_lines_stay_json() {
        let (text, logged) = logged(|| {
            let span = tracing::info_span!(
                "work",
                good = 1_u64,
                bad = ?Failing,
                late = tracing::field::Empty
            );
            span.record("late", tracing::field::debug(Failing));
            let _entered = span.enter();
            tracing::info!("inside");
            tracing::info!(broken = ?Failing, "not written");
        });
        let [inside] = logged.as_slice() else {
            panic!("one line expected: {text}");
        };
        assert_eq!(
            inside["span"],
            serde_json::json!({"good": 1, "name": "work"})
        );
    }

    #[test]
    fn a_value_that_logs_while_formatted_leaves_the_line_whole() {
        let (text, logged) = logged(|| {
            let span = tracing::info_span!("work", who = ?Chatty);
            span.record("who", tracing::field::debug(Chatty));
            let _entered = span.enter();
            tracing::info!(what = ?Chatty, "outer");
        });
        // Nothing deadlocks on the span's extensions, and the line is whole.
        // Whether a nested `formatting` event is logged is `tracing`'s call:
        // inside an event it goes nowhere, inside `Span::record` (called on
        // the span's own dispatcher, past the re-entrancy guard) it may be
        // logged, as a whole line of its own, depending on the callsite's
        // cached interest, which the tests running beside this one change.
        let outer: Vec<&Value> = logged
            .iter()
            .filter(|line| line["message"] != "formatting")
            .collect();
        let [outer] = outer.as_slice() else {
            panic!("one line besides the nested ones expected: {text}");
        };
        assert_eq!(outer["what"], "chatty");
        assert_eq!(outer["span"]["who"], "chatty");
    }

    #[test]
    fn two_json_layers_on_one_registry_both_log() {
        let (first, second) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::registry()
            .with(JsonLog::new(first.make_writer()))
            .with(JsonLog::new(second.make_writer()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work", item = 3_u64);
            span.record("item", 4_u64);
            let _entered = span.enter();
            tracing::info!("inside");
        });
        for lines in [first, second] {
            let line: Value = serde_json::from_str(lines.text().trim_end()).unwrap();
            assert_eq!(line["span"], serde_json::json!({"item": 4, "name": "work"}));
        }
    }

    #[test]
    fn an_explicit_parent_is_the_span_of_the_line_and_a_root_has_none() {
        let (text, logged) = logged(|| {
            let parent = tracing::info_span!("job", id = 9_u64);
            let other = tracing::info_span!("other");
            let _entered = other.enter();
            tracing::info!(parent: &parent, "child");
            tracing::info!(parent: None, "root");
        });
        let [child, root] = logged.as_slice() else {
            panic!("two lines expected: {text}");
        };
        assert_eq!(child["span"], serde_json::json!({"id": 9, "name": "job"}));
        assert!(root.get("span").is_none(), "{root}");
    }

    #[test]
    fn a_span_field_called_name_does_not_repeat_the_key() {
        let (text, logged) = logged(|| {
            let span = tracing::info_span!("load", name = "alice");
            let _entered = span.enter();
            tracing::info!("loaded");
        });
        // Counted in the text: a JSON parser keeps only one of two keys.
        assert_eq!(text.matches("\"name\":").count(), 1, "{text}");
        let [line] = logged.as_slice() else {
            panic!("one line expected: {text}");
        };
        assert_eq!(
            line["span"],
            serde_json::json!({"fields.name": "alice", "name": "load"})
        );
    }

    #[test]
    fn a_span_without_fields_keeps_nothing() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(JsonLog::new(lines.make_writer()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http.server");
            let kept = crate::observability::request_scope::with_extensions(&span, |extensions| {
                extensions.get_mut::<Values>().is_some()
            });
            assert_eq!(kept, Some(false));
        });
    }
}
