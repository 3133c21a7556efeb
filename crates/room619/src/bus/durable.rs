//! The consumer side of JetStream: a durable consumer's deliveries, pulled
//! only for handlers that are free, and their acks.
//!
//! A delivery's `ack_wait` runs from the moment the server sends it. Pulling
//! ahead (a buffer of fetched messages waiting for a handler) would spend
//! that time in the buffer: under a backlog a message could wait for a
//! handler, then be delivered again while its first handler still ran. So the
//! messages asked for and not yet arrived never outnumber the free handlers:
//! pull requests (each expiring after `PULL_EXPIRES`) go to one inbox, and a
//! new one asks for the handlers freed since, in one go when nothing is
//! asked for, else in chunks of at least a quarter of `max_in_flight` (a few
//! requests under way, not one per message).

use std::{
    pin::Pin,
    time::{Duration, Instant},
};

use async_nats::{
    StatusCode, Subject, Subscriber,
    jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull::BatchConfig},
};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::time::Sleep;

use super::{DeliveryPolicy, Message, jetstream::JetStreamBus, nats::from_nats};
use crate::Result;

/// The first wait before pulling again after a failure; doubles up to 2 s.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(20);
/// How long the server keeps a pull request waiting for messages; it
/// answers `408` with how many it did not deliver.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Neither a message nor an expiry this long after the last one: the server
/// forgot the requests (it restarted, the connection was replaced).
const PULLS_LOST_AFTER: Duration = Duration::from_secs(5);

/// The deliveries of a durable consumer. When pulling keeps failing (the
/// consumer was deleted, the server lost it), the consumer is created again
/// and pulling resumes.
pub(crate) struct DurableSource {
    bus: JetStreamBus,
    durable: String,
    filter: String,
    policy: DeliveryPolicy,
    consumer: PullConsumer,
    /// The pull requests under way; `None` until opened, and after a
    /// failure.
    pulls: Option<Pulls>,
    /// Failures in a row.
    failures: u32,
}

/// Pull requests under way, all answered on one inbox.
struct Pulls {
    inbox: Subject,
    replies: Subscriber,
    /// Messages asked for and neither delivered nor expired.
    asked: usize,
    /// When the last request went out or the last reply came: requests
    /// are lost only after `PULLS_LOST_AFTER` without either (a request
    /// expires, with a reply, after `PULL_EXPIRES`). Time spent waiting for a
    /// free handler, away from `next`, does not count.
    last_heard: Instant,
    /// Checks, every `PULLS_LOST_AFTER` at most, that replies still come.
    watchdog: Pin<Box<Sleep>>,
}

impl Pulls {
    /// Subscribes to a fresh inbox; nothing asked for yet.
    async fn open(client: &async_nats::Client) -> Result<Self, async_nats::SubscribeError> {
        let inbox = Subject::from(client.new_inbox());
        let replies = client.subscribe(inbox.clone()).await?;
        Ok(Self {
            inbox,
            replies,
            asked: 0,
            last_heard: Instant::now(),
            watchdog: Box::pin(tokio::time::sleep(PULLS_LOST_AFTER)),
        })
    }
}

/// What one reply on the inbox says.
enum Reply {
    Delivery(async_nats::Message),
    /// A request ended with `left` of its messages not delivered (`None`: not
    /// said): expired, or `cut` short by the server (limits, leadership
    /// change).
    Ended {
        left: Option<usize>,
        cut: bool,
    },
    /// The consumer is gone or unusable: create it again.
    Broken(String),
    Heartbeat,
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
            pulls: None,
            failures: 0,
        })
    }

    /// The next delivery: the message, how many times it was delivered, its
    /// acker. `free` handlers (this one included) could take a message now;
    /// never more are asked for. Waits (retrying) while the server is away.
    pub(crate) async fn next(&mut self, free: usize) -> (Message, u32, Acker) {
        loop {
            if self.pulls.is_none() {
                match Pulls::open(&self.bus.context().client()).await {
                    Ok(pulls) => self.pulls = Some(pulls),
                    Err(err) => {
                        tracing::warn!(durable = %self.durable, error = %err, "cannot pull; retrying");
                        self.recover().await;
                        continue;
                    }
                }
            }
            let Some(pulls) = &mut self.pulls else {
                continue;
            };
            let wanted = free.saturating_sub(pulls.asked);
            if wanted > 0 && (pulls.asked == 0 || wanted >= self.policy.max_in_flight.div_ceil(4)) {
                let request = BatchConfig {
                    batch: wanted,
                    expires: Some(PULL_EXPIRES),
                    ..BatchConfig::default()
                };
                if let Err(err) = self
                    .consumer
                    .request_batch(request, pulls.inbox.clone())
                    .await
                {
                    tracing::warn!(durable = %self.durable, error = %err, "cannot pull; retrying");
                    self.recover().await;
                    continue;
                }
                pulls.asked += wanted;
                pulls.last_heard = Instant::now();
            }
            let reply = tokio::select! {
                // Replies first: a watchdog that fell due while the handlers
                // were busy must not beat a reply already there.
                biased;
                reply = pulls.replies.next() => match reply {
                    Some(reply) => {
                        pulls.last_heard = Instant::now();
                        classify(reply)
                    }
                    None => Reply::Broken("the connection was closed".to_owned()),
                },
                () = &mut pulls.watchdog => {
                    let lost_at = pulls.last_heard + PULLS_LOST_AFTER;
                    if pulls.asked > 0 && lost_at <= Instant::now() {
                        tracing::debug!(durable = %self.durable, asked = pulls.asked, "pull requests lost; asking again");
                        pulls.asked = 0;
                        pulls.last_heard = Instant::now();
                    }
                    let next_check = pulls.last_heard + PULLS_LOST_AFTER;
                    pulls.watchdog.as_mut().reset(next_check.into());
                    continue;
                }
            };
            match reply {
                Reply::Delivery(message) => {
                    pulls.asked = pulls.asked.saturating_sub(1);
                    self.failures = 0;
                    if let Some(delivery) = self.delivery(message) {
                        return delivery;
                    }
                }
                Reply::Ended { left, cut } => {
                    pulls.asked = left.map_or(0, |left| pulls.asked.saturating_sub(left));
                    if cut {
                        // Asking again at once could spin while the server
                        // keeps cutting requests short: back off as after a
                        // failure.
                        self.failures += 1;
                        if self.failures >= 3 {
                            self.recover().await;
                        }
                    }
                }
                Reply::Heartbeat => {}
                Reply::Broken(why) => {
                    tracing::debug!(durable = %self.durable, why, "pulling failed");
                    self.recover().await;
                }
            }
        }
    }

    /// Drops the pull requests under way, waits a little (longer after each
    /// failure), then creates the consumer again.
    async fn recover(&mut self) {
        self.pulls = None;
        let exponent = self.failures.min(7);
        tokio::time::sleep((FIRST_RETRY_WAIT * (1 << exponent)).min(Duration::from_secs(2))).await;
        self.failures = self.failures.saturating_add(1);
        match self
            .bus
            .consumer(&self.durable, &self.filter, &self.policy)
            .await
        {
            Ok(consumer) => self.consumer = consumer,
            Err(err) => {
                tracing::warn!(durable = %self.durable, error = ?err, "cannot recreate the durable consumer; retrying");
            }
        }
    }

    /// A message from the consumer, with what acks it.
    fn delivery(&self, message: async_nats::Message) -> Option<(Message, u32, Acker)> {
        split(jetstream::Message {
            message,
            context: self.bus.context().clone(),
        })
    }

    /// Hands back (nak, no delay) what arrived but was not taken, so another
    /// instance gets it at once instead of after `ack_wait`.
    pub(crate) async fn release(mut self) {
        let Some(mut pulls) = self.pulls.take() else {
            return;
        };
        while let Some(Some(reply)) = pulls.replies.next().now_or_never() {
            if let Reply::Delivery(message) = classify(reply)
                && let Some((_, _, acker)) = self.delivery(message)
            {
                acker.send(AckKind::Nak(None)).await;
            }
        }
    }
}

/// A message from the server, or a status about the pull requests.
fn classify(reply: async_nats::Message) -> Reply {
    match reply.status.unwrap_or(StatusCode::OK) {
        StatusCode::OK => Reply::Delivery(reply),
        StatusCode::IDLE_HEARTBEAT => Reply::Heartbeat,
        status @ (StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED) => {
            let description = reply.description.as_deref().unwrap_or_default();
            if description.contains("Deleted") || description.contains("push based") {
                return Reply::Broken(description.to_owned());
            }
            let left = reply
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Pending-Messages"))
                .and_then(|left| left.as_str().parse().ok());
            Reply::Ended {
                left,
                cut: status == StatusCode::REQUEST_TERMINATED,
            }
        }
        status => Reply::Broken(format!(
            "status {status}: {}",
            reply.description.as_deref().unwrap_or_default()
        )),
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
