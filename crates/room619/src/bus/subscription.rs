//! [`Subscription`]: the messages of a subject, as a stream; dropping it
//! unsubscribes.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::{Stream, StreamExt as _};

use super::Message;

/// The messages published to a subject (wildcards allowed) from the moment of
/// subscribing, as a `Stream`. Dropping it unsubscribes.
///
/// At most once: a message that arrives while nobody is subscribed is not
/// kept. Use a durable JetStream subscriber for at-least-once delivery.
pub struct Subscription {
    subject: String,
    messages: Pin<Box<dyn Stream<Item = Message> + Send>>,
}

impl Subscription {
    pub(crate) fn new(
        subject: impl Into<String>,
        messages: impl Stream<Item = Message> + Send + 'static,
    ) -> Self {
        Self {
            subject: subject.into(),
            messages: Box::pin(messages),
        }
    }

    /// The subject subscribed to.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The next message; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Message> {
        self.messages.next().await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}
