//! [`Headers`]: the metadata a message carries, and the names room619 gives
//! meaning to.

use std::fmt;

use crate::{Error, Result};

/// The W3C trace context of the publisher; copied onto every message derived
/// from this one (replies, dead letters).
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace state that goes with [`TRACEPARENT`]; copied with it.
pub const TRACESTATE: &str = "tracestate";
/// W3C baggage: the caller's key-value pairs; copied with [`TRACEPARENT`].
pub const BAGGAGE: &str = "baggage";
/// The message's id: JetStream drops a second message with the same id within
/// a stream's duplicate window.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
/// The media type of the payload (`application/json`,
/// `application/x-protobuf`); JSON when absent (room619 sends none for
/// JSON).
pub const CONTENT_TYPE: &str = "Content-Type";
/// On a dead letter: why the message was given up.
pub const DEAD_LETTER_REASON: &str = "Room619-Dead-Letter-Reason";
/// On a dead letter sent without its payload (too large to send again with
/// these headers): why; on JetStream the original stays in its stream.
pub const DEAD_LETTER_PAYLOAD: &str = "Room619-Dead-Letter-Payload";
/// On a dead letter: the subject the message was published to.
pub const ORIGINAL_SUBJECT: &str = "Room619-Original-Subject";
/// On a dead letter: how many times the message was delivered.
pub const DELIVERIES: &str = "Room619-Deliveries";
/// On a dead letter from JetStream: the stream that held the message.
pub const ORIGINAL_STREAM: &str = "Room619-Original-Stream";
/// On a dead letter from JetStream: the message's sequence in that stream.
pub const ORIGINAL_SEQUENCE: &str = "Room619-Original-Sequence";
/// On a failed reply: the gRPC code number of the responder's error.
pub const ERROR_CODE: &str = "Room619-Error-Code";
/// On a failed reply: the responder's error message.
pub const ERROR_MESSAGE: &str = "Room619-Error";

/// Message headers: an ordered list of name/value pairs; names are compared
/// ignoring ASCII case and keep the case they were given.
///
/// ```
/// use room619::bus::{Headers, headers};
///
/// let mut h = Headers::new();
/// h.insert(headers::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// h.insert("tenant", "acme");
/// assert_eq!(h.get("Tenant"), Some("acme"));
/// assert_eq!(h.len(), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Sets `name` to `value`, replacing any values it had.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.remove(&name);
        self.entries.push((name, value.into()));
    }

    /// Adds a value of `name`, keeping those it had.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    /// Every name/value pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// How many name/value pairs there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks every name (visible ASCII, no `:`) and value (no line breaks),
    /// as the NATS protocol requires.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` naming the bad header.
    pub(crate) fn check(&self) -> Result<()> {
        for (name, value) in &self.entries {
            if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
                return Err(Error::invalid_argument(format!(
                    "`{name}` is not a valid header name: visible ASCII without `:` only"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(Error::invalid_argument(format!(
                    "the value of header `{name}` contains a line break"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut headers = Headers::new();
        headers.append("a", "1");
        headers.append("A", "2");
        assert_eq!(headers.get("a"), Some("1"));
        headers.insert("a", "3");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "3")]);
    }

    #[test]
    fn invalid_names_and_values_are_rejected() {
        let bad: Headers = [("bad name", "v")].into_iter().collect();
        assert!(bad.check().is_err());
        let bad: Headers = [("name", "line\nbreak")].into_iter().collect();
        assert!(bad.check().is_err());
        let good: Headers = [(TRACEPARENT, "00-ab-cd-01")].into_iter().collect();
        good.check().unwrap();
    }
}
