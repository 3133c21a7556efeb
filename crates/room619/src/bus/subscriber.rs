//! The subscriber loop: take a message, decode it, call the handler, then
//! ack, retry or dead-letter it; on shutdown stop taking and let the handlers
//! in flight finish.
//!
//! ```text
//! take (at most max_in_flight handlers at once)
//!  └─ decode ── fails → dead-letter subject at once (reason in headers), ack
//!  └─ handler (a panic counts as a failure; the loop goes on)
//!       ok     → reply (responders) → ack
//!       failed → responders: error reply, ack
//!                attempt < max_deliver: JetStream: nak with backoff (the server
//!                  redelivers); memory / NATS core: wait the backoff, call again
//!                else → dead-letter subject with the reason, ack (term)
//! ```
//!
//! A JetStream message delivered more than `max_deliver` times (its handler
//! never finished: the process died) goes to the dead letters without
//! calling the handler again.

use std::{panic::AssertUnwindSafe, sync::Arc};

use bytes::Bytes;
use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

#[cfg(feature = "nats")]
use super::headers::{ORIGINAL_SEQUENCE, ORIGINAL_STREAM};
use super::{
    DeliveryPolicy, Headers, Message, MessageBus, OutgoingMessage,
    headers::{
        BAGGAGE, DEAD_LETTER_PAYLOAD, DEAD_LETTER_REASON, DELIVERIES, ERROR_CODE, ERROR_MESSAGE,
        MESSAGE_ID, ORIGINAL_SUBJECT, TRACEPARENT, TRACESTATE,
    },
    source::{Ack, Settle, Source, in_progress, settle},
};
use crate::{
    Error, ErrorKind,
    observability::{metrics::labels::BusLabels, request_scope::RequestScope, trace_context},
};

/// A subscriber's handler bound to its context: message and delivery count
/// in, outcome out.
pub(crate) type Handler = Arc<dyn Fn(Message, u32) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// What became of one message.
pub(crate) enum Outcome {
    /// Handled; a responder's reply (payload, headers) to send back.
    Done(Option<(Bytes, Headers)>),
    /// The payload is not the expected type: never retried.
    Undecodable(Error),
    /// The handler failed: retried, then dead-lettered.
    Failed(Error),
}

/// How a subscriber shares the messages of its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every subscriber gets every message.
    Every,
    /// One member of the queue group gets each message.
    Queue(String),
    /// A JetStream durable consumer (a queue group elsewhere).
    Durable(String),
}

/// What a subscriber listens to and how it delivers.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// For logs: the service that declared it.
    pub(crate) owner: String,
    pub(crate) subject: String,
    pub(crate) mode: Mode,
    pub(crate) policy: DeliveryPolicy,
    /// Replies to requests (errors become error replies, never retried).
    pub(crate) responder: bool,
}

/// Runs one subscriber until `stop`, then waits for its handlers in flight;
/// `force` aborts those (their JetStream messages are delivered again).
pub(crate) async fn run(
    bus: MessageBus,
    mut source: Source,
    spec: Arc<Spec>,
    handler: Handler,
    stop: CancellationToken,
    force: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(spec.policy.max_in_flight));
    let labels = Arc::new(BusLabels {
        messaging_system: bus.system(),
        messaging_destination: Arc::from(spec.subject.as_str()),
        service: Arc::from(spec.owner.as_str()),
    });
    let mut in_flight = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (message, delivered, ack) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = source.next(slots.available_permits() + 1) => if let Some(next) = next {
                next
            } else {
                tracing::warn!(owner = %spec.owner, subject = %spec.subject, "the bus closed this subscription");
                break;
            },
        };
        let (bus, spec, handler) = (bus.clone(), Arc::clone(&spec), Arc::clone(&handler));
        let labels = Arc::clone(&labels);
        let span = process_span(&spec, &labels, &message);
        in_flight.spawn(
            async move {
                process(&bus, &spec, &labels, &handler, message, delivered, ack).await;
                drop(permit);
            }
            .instrument(span),
        );
        while in_flight.try_join_next().is_some() {}
    }
    // Handing back what arrived untaken sends naks: bounded by the drain
    // too (the connection may be away).
    let finished = tokio::select! {
        biased;
        () = force.cancelled() => false,
        () = async {
            source.release().await;
            join_all(&mut in_flight).await;
        } => true,
    };
    if !finished {
        tracing::warn!(
            owner = %spec.owner,
            subject = %spec.subject,
            handlers = in_flight.len(),
            "drain timeout passed; aborting the handlers still running"
        );
        in_flight.abort_all();
        join_all(&mut in_flight).await;
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// The consumer span of one message, continuing the publisher's trace.
fn process_span(spec: &Spec, labels: &BusLabels, message: &Message) -> tracing::Span {
    let span = tracing::info_span!(
        "bus.process",
        otel.name = %format_args!("process {}", spec.subject),
        otel.kind = "consumer",
        messaging.system = labels.messaging_system,
        messaging.operation.type = "process",
        messaging.destination.name = &*spec.subject,
    );
    trace_context::continue_from_bus(&span, message.headers());
    trace_context::scope(
        &span,
        RequestScope::new(&labels.service, &labels.messaging_destination, None),
    );
    span
}

async fn process(
    bus: &MessageBus,
    spec: &Spec,
    labels: &BusLabels,
    handler: &Handler,
    message: Message,
    mut delivered: u32,
    ack: Ack,
) {
    let policy = &spec.policy;
    let metrics = bus.metrics();
    if delivered > 1
        && let Some(metrics) = metrics
    {
        metrics.redelivered(labels);
    }
    loop {
        if delivered > policy.max_deliver {
            let reason = format!(
                "delivered {delivered} times without an outcome (max_deliver = {})",
                policy.max_deliver
            );
            return dead_letter(bus, spec, labels, &message, delivered, &reason, &ack).await;
        }
        let attempt = AssertUnwindSafe(handler(message.clone(), delivered)).catch_unwind();
        let outcome = in_progress(&ack, policy, attempt)
            .await
            .unwrap_or_else(|_| Outcome::Failed(Error::internal("the handler panicked")));
        match outcome {
            Outcome::Done(reply) => {
                if let Some(metrics) = metrics {
                    metrics.consumed(labels);
                }
                if let (Some((payload, headers)), Some(to)) = (reply, message.reply_subject())
                    && let Err(err) = bus.reply_raw(to, payload, headers).await
                {
                    tracing::warn!(subject = %message.subject(), error = %err, "reply not sent");
                }
                return settle(&ack, Settle::Ack).await;
            }
            Outcome::Undecodable(err) => {
                return dead_letter(bus, spec, labels, &message, delivered, err.message(), &ack)
                    .await;
            }
            Outcome::Failed(err) if spec.responder => {
                if let Some(to) = message.reply_subject() {
                    let mut headers = Headers::new();
                    headers.insert(ERROR_CODE, (err.kind().grpc_code() as i32).to_string());
                    headers.insert(ERROR_MESSAGE, one_line(err.message()));
                    copy_trace(&message, &mut headers);
                    if let Err(err) = bus.reply_raw(to, Bytes::new(), headers).await {
                        tracing::warn!(subject = %message.subject(), error = %err, "error reply not sent");
                    }
                }
                return settle(&ack, Settle::Ack).await;
            }
            Outcome::Failed(err) => {
                tracing::warn!(
                    owner = %spec.owner,
                    subject = %message.subject(),
                    delivered,
                    error = ?err,
                    "message handler failed"
                );
                if delivered >= policy.max_deliver {
                    return dead_letter(
                        bus,
                        spec,
                        labels,
                        &message,
                        delivered,
                        err.message(),
                        &ack,
                    )
                    .await;
                }
                let wait = policy.backoff(delivered);
                match &ack {
                    Ack::Local => {
                        tokio::time::sleep(wait).await;
                        delivered += 1;
                        if let Some(metrics) = metrics {
                            metrics.redelivered(labels);
                        }
                    }
                    #[cfg(feature = "nats")]
                    Ack::JetStream(acker) => return acker.nak(wait).await,
                }
            }
        }
    }
}

/// Sends a copy of `message` to the dead-letter subject with why, then
/// settles it; if the dead letter cannot be sent, a JetStream message is
/// delivered again later.
async fn dead_letter(
    bus: &MessageBus,
    spec: &Spec,
    labels: &BusLabels,
    message: &Message,
    delivered: u32,
    reason: &str,
    ack: &Ack,
) {
    let mut headers = message.headers().clone();
    headers.remove(MESSAGE_ID);
    // A publisher's expectations of its own stream would make the dead
    // letters' stream refuse the letter, on every delivery.
    for expectation in EXPECTATIONS {
        headers.remove(expectation);
    }
    headers.insert(DEAD_LETTER_REASON, short(&one_line(reason)));
    headers.insert(ORIGINAL_SUBJECT, message.subject());
    headers.insert(DELIVERIES, delivered.to_string());
    #[cfg(feature = "nats")]
    if let Ack::JetStream(acker) = ack {
        headers.insert(ORIGINAL_STREAM, acker.stream.clone());
        headers.insert(ORIGINAL_SEQUENCE, acker.sequence.to_string());
        headers.insert(
            MESSAGE_ID,
            format!("dead-letter.{}.{}", acker.stream, acker.sequence),
        );
    }
    let letter = OutgoingMessage::new(
        bus.dead_letter_subject().to_owned(),
        message.payload().clone(),
    )
    .with_headers(headers.clone());
    let mut sent = bus.publish_dead_letter(letter).await;
    // A letter the server can never take (the payload and our headers over
    // its `max_payload`) would be refused on every delivery, for ever: it
    // goes without the payload, which stays in its stream (named in the
    // headers) on JetStream.
    if let Err(err) = &sent
        && err.kind() == ErrorKind::PayloadTooLarge
    {
        headers.insert(
            DEAD_LETTER_PAYLOAD,
            format!("dropped: {}", short(err.message())),
        );
        let bare = OutgoingMessage::new(bus.dead_letter_subject().to_owned(), Bytes::new())
            .with_headers(headers);
        sent = bus.publish_dead_letter(bare).await;
    }
    match sent {
        Ok(()) => {
            if let Some(metrics) = bus.metrics() {
                metrics.dead_lettered(labels);
            }
            tracing::warn!(
                owner = %spec.owner,
                subject = %message.subject(),
                dead_letter_subject = %bus.dead_letter_subject(),
                reason,
                "message given up; sent to the dead letters"
            );
            settle(ack, Settle::Term).await;
        }
        Err(err) => {
            tracing::error!(
                owner = %spec.owner,
                subject = %message.subject(),
                reason,
                error = ?err,
                "cannot send a message to the dead letters"
            );
            match ack {
                Ack::Local => {
                    tracing::error!(subject = %message.subject(), "message lost (in memory / NATS core)");
                }
                #[cfg(feature = "nats")]
                Ack::JetStream(acker) => acker.nak(spec.policy.backoff(delivered)).await,
            }
        }
    }
}

/// Header values are one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// JetStream's publish expectations (optimistic concurrency on the stream a
/// message was published to), which a dead letter must not carry.
const EXPECTATIONS: [&str; 4] = [
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Msg-Id",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
];

/// The longest reason written into a dead letter's headers, in bytes.
const MAX_REASON: usize = 1024;

/// `text` cut to [`MAX_REASON`] bytes (at a character boundary).
fn short(text: &str) -> String {
    if text.len() <= MAX_REASON {
        return text.to_owned();
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Continues the publisher's trace on a derived message: its W3C trace
/// context and baggage.
pub(crate) fn copy_trace(from: &Message, to: &mut Headers) {
    for name in [TRACEPARENT, TRACESTATE, BAGGAGE] {
        if let Some(value) = from.headers().get(name) {
            to.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_REASON, one_line, short};

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(one_line("a\r\nb\nc"), "a  b c");
        assert_eq!(short("fine"), "fine");
        let long = "é".repeat(MAX_REASON);
        let cut = short(&long);
        assert!(cut.len() <= MAX_REASON + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }
}
