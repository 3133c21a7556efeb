//! [`Message`] (received), [`OutgoingMessage`] (to send) and [`Event`] (a
//! decoded message handed to a subscriber).

use std::borrow::Cow;

use bytes::Bytes;

use super::{
    Headers, Payload,
    headers::{CONTENT_TYPE, MESSAGE_ID, TRACEPARENT},
};
use crate::{Error, Result, rpc::codec::Format};

/// A message as it was received.
#[derive(Debug, Clone)]
pub struct Message {
    subject: String,
    payload: Bytes,
    headers: Headers,
    reply: Option<String>,
}

impl Message {
    pub(crate) fn new(
        subject: String,
        payload: Bytes,
        headers: Headers,
        reply: Option<String>,
    ) -> Self {
        Self {
            subject,
            payload,
            headers,
            reply,
        }
    }

    /// The subject it was published to.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The raw payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Its headers.
    #[must_use]
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Where a reply goes, when the message is a request.
    #[must_use]
    pub fn reply_subject(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// The payload's format, from the `Content-Type` header (JSON when
    /// absent).
    ///
    /// # Errors
    ///
    /// `UnsupportedMediaType` when the header names a format room619 does not
    /// speak.
    pub fn format(&self) -> Result<Format> {
        match self.headers.get(CONTENT_TYPE) {
            None => Ok(Format::Json),
            Some(media) => Format::from_media_type(media).ok_or_else(|| {
                Error::unsupported_media_type(format!(
                    "the message on `{}` is `{media}`, neither JSON nor protobuf",
                    self.subject
                ))
            }),
        }
    }

    /// Decodes the payload as a `T`, in the format its `Content-Type` names.
    ///
    /// # Errors
    ///
    /// `UnsupportedMediaType` for an unknown format, `InvalidArgument` when
    /// the payload is not a `T`.
    pub fn decode<T: Payload>(&self) -> Result<T> {
        T::decode(self.format()?, &self.payload).map_err(|err| {
            Error::new(
                err.kind(),
                format!(
                    "cannot decode the message on `{}`: {}",
                    self.subject,
                    err.message()
                ),
            )
        })
    }
}

/// A message to publish: subject, payload and headers.
///
/// ```
/// use room619::bus::{OutgoingMessage, headers};
/// use room619::rpc::codec::Format;
///
/// # fn demo(order: shop_proto::echo::v1::EchoRequest) -> room619::Result<()> {
/// let message = OutgoingMessage::encode("orders.created", &order, Format::Protobuf)?
///     .message_id("order-42")      // JetStream drops a second one within the window
///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(message.headers().get(headers::CONTENT_TYPE), Some("application/x-protobuf"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct OutgoingMessage {
    subject: Cow<'static, str>,
    payload: Bytes,
    headers: Headers,
}

impl OutgoingMessage {
    /// A message with a raw payload and no headers. A `&'static str` subject
    /// is sent without being copied.
    pub fn new(subject: impl Into<Cow<'static, str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    /// A message carrying `message` encoded in `format` (or the one format
    /// its type speaks), with the matching `Content-Type` (none for JSON,
    /// which receivers assume when it is absent: a message without headers
    /// is cheaper to send).
    ///
    /// # Errors
    ///
    /// `Internal` when the message cannot be serialized.
    pub fn encode<T: Payload>(
        subject: impl Into<Cow<'static, str>>,
        message: &T,
        format: Format,
    ) -> Result<Self> {
        let (payload, format) = message.encode(format)?;
        let message = Self::new(subject, payload);
        Ok(if format == Format::Json {
            message
        } else {
            message.header(CONTENT_TYPE, format.media_type())
        })
    }

    /// Sets a header (replacing any value it had).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the message id (`Nats-Msg-Id`): JetStream stores a message once
    /// per id within the stream's duplicate window. Without one, the
    /// JetStream backend gives each `publish` call an id of its own, so its
    /// own retries are never stored twice.
    pub fn message_id(self, id: impl Into<String>) -> Self {
        self.header(MESSAGE_ID, id)
    }

    /// Sets the W3C `traceparent` the subscribers continue the trace from.
    pub fn traceparent(self, traceparent: impl Into<String>) -> Self {
        self.header(TRACEPARENT, traceparent)
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The subject.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    #[must_use]
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The subject, when it lives as long as the program (it was given as a
    /// `&'static str`).
    pub(crate) fn static_subject(&self) -> Option<&'static str> {
        match self.subject {
            Cow::Borrowed(subject) => Some(subject),
            Cow::Owned(_) => None,
        }
    }

    pub(crate) fn into_parts(self) -> (Cow<'static, str>, Bytes, Headers) {
        (self.subject, self.payload, self.headers)
    }
}

/// A message handed to a subscriber: its decoded body and where it came from.
#[derive(Debug, Clone)]
pub struct Event<T> {
    body: T,
    message: Message,
    delivered: u32,
}

impl<T> Event<T> {
    pub(crate) fn new(body: T, message: Message, delivered: u32) -> Self {
        Self {
            body,
            message,
            delivered,
        }
    }

    /// The decoded body.
    #[must_use]
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The decoded body, owned.
    #[must_use]
    pub fn into_body(self) -> T {
        self.body
    }

    /// The message as received (subject, raw payload, headers).
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The subject it was published to.
    #[must_use]
    pub fn subject(&self) -> &str {
        self.message.subject()
    }

    /// Its headers (such as [`TRACEPARENT`](super::headers::TRACEPARENT)).
    #[must_use]
    pub fn headers(&self) -> &Headers {
        self.message.headers()
    }

    /// Which delivery this is, from 1: above 1 the message failed before
    /// (or its handler did not finish).
    #[must_use]
    pub fn delivered(&self) -> u32 {
        self.delivered
    }
}
