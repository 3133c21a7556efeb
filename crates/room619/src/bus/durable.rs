//! The consumer side of JetStream: a durable consumer's deliveries, pulled
//! `max_in_flight` ahead, and their acks.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use futures_util::{FutureExt as _, StreamExt as _};

use super::{DeliveryPolicy, Message, jetstream::JetStreamBus, nats::from_nats};
use crate::Result;

/// The first wait before pulling again after a failure; doubles up to 2 s.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(20);

/// The deliveries of a durable consumer. When pulling keeps failing or the
/// pull stream ends (the consumer was deleted, the server lost it), the
/// consumer is created again and pulling resumes.
pub(crate) struct DurableSource {
    bus: JetStreamBus,
    durable: String,
    filter: String,
    policy: DeliveryPolicy,
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
    /// Pull errors in a row.
    failures: u32,
}

/// Acknowledges one JetStream delivery.
pub(crate) struct Acker {
    inner: jetstream::message::Acker,
    pub(crate) stream: String,
    pub(crate) sequence: u64,
}

impl Acker {
    /// Sends `kind`; a lost ack only means one more delivery.
    pub(crate) async fn send(&self, kind: AckKind) {
        if let Err(err) = self.inner.ack_with(kind).await {
            tracing::warn!(stream = %self.stream, sequence = self.sequence, ?kind, error = %err, "ack not sent");
        }
    }

    pub(crate) async fn ack(&self) {
        self.send(AckKind::Ack).await;
    }

    pub(crate) async fn nak(&self, delay: Duration) {
        self.send(AckKind::Nak(Some(delay))).await;
    }

    pub(crate) async fn term(&self) {
        self.send(AckKind::Term).await;
    }
}

impl DurableSource {
    /// Creates or updates the durable consumer, ready to pull.
    ///
    /// # Errors
    ///
    /// As [`JetStreamBus::consumer`].
    pub(crate) async fn open(
        bus: &JetStreamBus,
        durable: &str,
        filter: &str,
        policy: DeliveryPolicy,
    ) -> Result<Self> {
        let consumer = bus.consumer(durable, filter, &policy).await?;
        Ok(Self {
            bus: bus.clone(),
            durable: durable.to_owned(),
            filter: filter.to_owned(),
            policy,
            consumer,
            messages: None,
            failures: 0,
        })
    }

    /// The next delivery: the message, how many times it was delivered, its
    /// acker. Waits (retrying) while the server is away.
    pub(crate) async fn next(&mut self) -> (Message, u32, Acker) {
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.policy.max_in_flight)
                    .heartbeat(Duration::from_secs(5))
                    .messages()
                    .await
                {
                    Ok(messages) => self.messages.insert(messages),
                    Err(err) => {
                        tracing::warn!(durable = %self.durable, error = %err, "cannot pull; retrying");
                        self.recover().await;
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.failures = 0;
                    if let Some(delivery) = split(message) {
                        return delivery;
                    }
                }
                Some(Err(err)) => {
                    self.failures += 1;
                    tracing::debug!(durable = %self.durable, error = %err, failures = self.failures, "pull failed");
                    if self.failures >= 3 {
                        self.recover().await;
                    }
                }
                None => {
                    tracing::debug!(durable = %self.durable, "the pull stream ended");
                    self.recover().await;
                }
            }
        }
    }

    /// Waits a little (longer after each failure), then creates the consumer
    /// again and pulls anew.
    async fn recover(&mut self) {
        self.messages = None;
        let exponent = self.failures.min(7);
        tokio::time::sleep((FIRST_RETRY_WAIT * (1 << exponent)).min(Duration::from_secs(2))).await;
        self.failures = self.failures.saturating_add(1);
        match self
            .bus
            .consumer(&self.durable, &self.filter, &self.policy)
            .await
        {
            Ok(consumer) => {
                self.consumer = consumer;
                self.failures = 0;
            }
            Err(err) => {
                tracing::warn!(durable = %self.durable, error = ?err, "cannot recreate the durable consumer; retrying");
            }
        }
    }

    /// Hands back (nak, no delay) what was fetched but not taken, so another
    /// instance gets it at once instead of after `ack_wait`.
    pub(crate) async fn release(mut self) {
        let Some(mut messages) = self.messages.take() else {
            return;
        };
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            if let Some((_, _, acker)) = split(message) {
                acker.send(AckKind::Nak(None)).await;
            }
        }
    }
}

fn split(message: jetstream::Message) -> Option<(Message, u32, Acker)> {
    let (stream, sequence, delivered) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence, info.delivered),
        Err(err) => {
            tracing::warn!(error = %err, subject = %message.subject, "a JetStream delivery without metadata; skipped");
            return None;
        }
    };
    let (message, inner) = message.split();
    let delivered = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
    Some((
        from_nats(message),
        delivered,
        Acker {
            inner,
            stream,
            sequence,
        },
    ))
}
