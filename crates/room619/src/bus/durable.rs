//! The consumer side of JetStream: a durable consumer's deliveries, pulled
//! only for handlers that are free, and their acks.
//!
//! A delivery's `ack_wait` runs from the moment the server sends it. Pulling
//! ahead (a buffer of fetched messages waiting for a handler) would spend
//! that time in the buffer: under a backlog a message could wait for a
//! handler, then be delivered again while its first handler still ran. So the
//! messages asked for and not yet arrived never outnumber the free handlers:
//! a new pull request asks for the handlers freed since, in one go when
//! nothing is asked for, else in chunks of at least a quarter of
//! `max_in_flight` (a few requests under way, not one per message).
//!
//! Each request is answered on a subject of its own under one inbox, so the
//! status that ends it (expired, cut short) names it, and each expires after
//! `PULL_EXPIRES`. When the connection is lost, the consumer starts over on a
//! fresh inbox: the requests the server may still hold, or may yet receive
//! (sent as the connection went down), find nobody listening on the old one
//! after the reconnect, and the server drops them; what had arrived and was
//! not taken is handed back. No request is sent while the connection is
//! down. A request the server forgot with no outage stops counting a little
//! after its expiry, and the consumer asks again on a fresh inbox too.

use std::{
    collections::VecDeque,
    pin::Pin,
    time::{Duration, Instant},
};

use async_nats::{
    StatusCode, Subject, Subscriber,
    connection::State,
    jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull::BatchConfig},
};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::{sync::watch, time::Sleep};

use super::{DeliveryPolicy, Message, jetstream::JetStreamBus, nats::from_nats};
use crate::Result;

/// The first wait before pulling again after a failure; doubles up to 2 s.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(20);
/// How long the server keeps a pull request waiting for messages; it
/// answers `408` with how many it did not deliver.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long after `PULL_EXPIRES` a request with no word of its end stops
/// counting: the server forgot it, or its end was lost.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How often a consumer whose connection is down checks it again before
/// asking for messages (a request sent then would wait in the client's
/// buffer and reach the server, with a fresh expiry, after the reconnect).
const RECONNECT_POLL: Duration = Duration::from_millis(100);

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
    /// Changes when the connection is lost.
    outages: watch::Receiver<u64>,
}

/// Pull requests under way and the inbox they are answered on.
struct Pulls {
    replies: Subscriber,
    requests: Requests,
    /// Due when the oldest request stops counting.
    expiry: Pin<Box<Sleep>>,
}

impl Pulls {
    /// Subscribes to a fresh inbox; nothing asked for yet.
    async fn open(client: &async_nats::Client) -> Result<Self, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let replies = client.subscribe(format!("{inbox}.*")).await?;
        Ok(Self {
            replies,
            requests: Requests::new(inbox),
            expiry: Box::pin(tokio::time::sleep(PULL_EXPIRES + PULL_GRACE)),
        })
    }

    /// Counts a request for `batch` messages, sent now, and returns the
    /// subject it is answered on.
    fn sent(&mut self, batch: usize) -> Subject {
        let now = Instant::now();
        if self.requests.is_empty() {
            self.expiry
                .as_mut()
                .reset((now + PULL_EXPIRES + PULL_GRACE).into());
        }
        self.requests.sent(batch, now)
    }

    /// Drops the requests due to stop counting, sets the timer for the next
    /// one, and says how many were dropped.
    fn expire(&mut self) -> usize {
        let now = Instant::now();
        let gone = self.requests.expire(now);
        let next = self
            .requests
            .next_gone_at()
            .unwrap_or(now + PULL_EXPIRES + PULL_GRACE);
        self.expiry.as_mut().reset(next.into());
        gone
    }
}

/// The pull requests under way, each answered on `<inbox>.<id>`, oldest
/// first.
struct Requests {
    inbox: String,
    /// The id of the next request.
    next_id: u64,
    queue: VecDeque<Pull>,
    /// The requests taken as served in full (the server says nothing of
    /// those), with when they would stop counting: one may yet end with a
    /// count that shows it was not.
    served: VecDeque<(u64, Instant)>,
}

/// The id of deliveries still coming for requests taken as served: no end
/// names it.
const UNNAMED: u64 = u64::MAX;

/// One pull request under way.
struct Pull {
    id: u64,
    /// Messages it asked for.
    asked: usize,
    /// Messages it asked for and that have not arrived.
    left: usize,
    /// When it stops counting, whether or not its end was heard.
    gone_at: Instant,
}

impl Requests {
    fn new(inbox: String) -> Self {
        Self {
            inbox,
            next_id: 0,
            queue: VecDeque::new(),
            served: VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages asked for that have neither arrived nor been given up.
    fn asked(&self) -> usize {
        self.queue.iter().map(|pull| pull.left).sum()
    }

    /// Counts a request for `batch` messages sent `now`, and returns the
    /// subject it is answered on.
    fn sent(&mut self, batch: usize, now: Instant) -> Subject {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Pull {
            id,
            asked: batch,
            left: batch,
            gone_at: now + PULL_EXPIRES + PULL_GRACE,
        });
        Subject::from(format!("{}.{id}", self.inbox))
    }

    /// A message arrived. Deliveries do not say which request they answer;
    /// the oldest one with messages left is counted, and a request served in
    /// full is done.
    fn delivered(&mut self) {
        if let Some(at) = self.queue.iter().position(|pull| pull.left > 0) {
            self.queue[at].left -= 1;
            if self.queue[at].left == 0
                && let Some(served) = self.queue.remove(at)
                && served.id != UNNAMED
            {
                self.served.push_back((served.id, served.gone_at));
            }
        }
    }

    /// The request answered on `subject` ended (expired, cut short) with
    /// `left` of its messages not delivered (`None`: not said): those will
    /// not come. When the server says how many, the deliveries counted
    /// against the wrong request (the server may serve requests in turn) are
    /// moved to the others; those that were counted against requests already
    /// taken as served in full are still coming, for as long as a request
    /// sent `now` could be.
    fn ended(&mut self, subject: &str, left: Option<usize>, now: Instant) {
        let id = subject
            .strip_prefix(self.inbox.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|id| id.parse::<u64>().ok());
        let Some(id) = id else {
            return;
        };
        let ended_left = if let Some(at) = self.queue.iter().position(|pull| pull.id == id) {
            self.queue.remove(at).map_or(0, |ended| ended.left)
        } else if let Ok(at) = self.served.binary_search_by_key(&id, |&(id, _)| id) {
            self.served.remove(at);
            0
        } else {
            return;
        };
        let Some(left) = left else {
            return;
        };
        // More delivered to it than counted: the others were counted for
        // them, and still have that many coming (and the reverse).
        let (mut more, mut fewer) = (
            ended_left.saturating_sub(left),
            left.saturating_sub(ended_left),
        );
        for pull in &mut self.queue {
            let added = more.min(pull.asked - pull.left);
            let taken = fewer.min(pull.left);
            pull.left = pull.left + added - taken;
            (more, fewer) = (more - added, fewer - taken);
        }
        while let Some(at) = self.queue.iter().position(|pull| pull.left == 0) {
            if let Some(served) = self.queue.remove(at)
                && served.id != UNNAMED
            {
                let at = self.served.partition_point(|&(id, _)| id < served.id);
                self.served.insert(at, (served.id, served.gone_at));
            }
        }
        if more > 0 {
            // No end will name them: they stop counting with the timer.
            self.queue.push_back(Pull {
                id: UNNAMED,
                asked: more,
                left: more,
                gone_at: now + PULL_EXPIRES + PULL_GRACE,
            });
        }
    }

    /// Drops the requests that stop counting by `now`; says how many of
    /// them were sent (not counting deliveries taken as still coming).
    fn expire(&mut self, now: Instant) -> usize {
        let mut gone = 0;
        while let Some(pull) = self.queue.front()
            && pull.gone_at <= now
        {
            gone += usize::from(pull.id != UNNAMED);
            self.queue.pop_front();
        }
        while self
            .served
            .front()
            .is_some_and(|&(_, gone_at)| gone_at <= now)
        {
            self.served.pop_front();
        }
        gone
    }

    /// When the oldest request stops counting.
    fn next_gone_at(&self) -> Option<Instant> {
        self.queue.front().map(|pull| pull.gone_at)
    }
}

/// What one reply on the inbox says.
enum Reply {
    Delivery(async_nats::Message),
    /// The request answered on `subject` ended with `left` of its messages
    /// not delivered (`None`: not said): expired, or `cut` short by the
    /// server (limits, leadership change).
    Ended {
        subject: Subject,
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
    /// How long the server waits for it: an ack that cannot be handed to
    /// the connection in this time (the server away, the client's queue
    /// full) is given up.
    ack_wait: Duration,
}

impl Acker {
    /// Sends `kind`; a lost ack only means one more delivery. Bounded by
    /// `ack_wait`: past it the server delivers the message again anyway, and
    /// a handler's slot is not held for the length of an outage.
    pub(crate) async fn send(&self, kind: AckKind) {
        match tokio::time::timeout(self.ack_wait, self.inner.ack_with(kind)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(stream = %self.stream, sequence = self.sequence, ?kind, error = %err, "ack not sent");
            }
            Err(_) => {
                tracing::warn!(stream = %self.stream, sequence = self.sequence, ?kind, ack_wait = ?self.ack_wait, "ack not sent: the connection took nothing within ack_wait");
            }
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

    /// Tells the server the handler is still at it: its `ack_wait` starts
    /// again, so the message is not delivered to another handler meanwhile.
    pub(crate) async fn progress(&self) {
        self.send(AckKind::Progress).await;
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
            outages: bus.core().outages(),
        })
    }

    /// The next delivery: the message, how many times it was delivered, its
    /// acker. `free` handlers (this one included) could take a message now;
    /// never more are asked for. Waits (retrying) while the server is away.
    pub(crate) async fn next(&mut self, free: usize) -> (Message, u32, Acker) {
        loop {
            if self.pulls.is_none() {
                // The requests of the inbox opened now are sent on the
                // connection as it is now: only a later loss ends them.
                self.outages.mark_unchanged();
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
            let asked = pulls.requests.asked();
            let wanted = free.saturating_sub(asked);
            let due = wanted > 0 && (asked == 0 || wanted >= self.policy.max_in_flight.div_ceil(4));
            // Sent now, a request would wait in the client's buffer and reach
            // the server after the reconnect: ask then, and take what arrived
            // meanwhile.
            let offline = due && self.bus.context().client().connection_state() != State::Connected;
            if due && !offline {
                let request = BatchConfig {
                    batch: wanted,
                    expires: Some(PULL_EXPIRES),
                    ..BatchConfig::default()
                };
                let reply_to = pulls.sent(wanted);
                if let Err(err) = self.consumer.request_batch(request, reply_to).await {
                    tracing::warn!(durable = %self.durable, error = %err, "cannot pull; retrying");
                    self.recover().await;
                    continue;
                }
            }
            let reply = tokio::select! {
                // Replies first: a request that ended while the handlers were
                // busy is counted by its end, not by the timer.
                biased;
                reply = pulls.replies.next() => match reply {
                    Some(reply) => classify(reply),
                    None => Reply::Broken("the connection was closed".to_owned()),
                },
                () = &mut pulls.expiry => {
                    let gone = pulls.expire();
                    if gone > 0 {
                        // The server forgot them, or they are yet to reach
                        // it (sent as the connection went down): on a fresh
                        // inbox, any that arrive late find nobody listening,
                        // and the server drops them.
                        tracing::debug!(durable = %self.durable, gone, "pull requests ended unheard; asking again on a fresh inbox");
                        if let Some(old) = self.pulls.take() {
                            self.hand_back(old).await;
                        }
                    }
                    continue;
                }
                Ok(()) = self.outages.changed() => {
                    tracing::debug!(durable = %self.durable, "connection lost; asking again on a fresh inbox");
                    if let Some(old) = self.pulls.take() {
                        self.hand_back(old).await;
                    }
                    continue;
                }
                () = tokio::time::sleep(RECONNECT_POLL), if offline => continue,
            };
            match reply {
                Reply::Delivery(message) => {
                    pulls.requests.delivered();
                    self.failures = 0;
                    if let Some(delivery) = self.delivery(message) {
                        return delivery;
                    }
                }
                Reply::Ended { subject, left, cut } => {
                    pulls.requests.ended(&subject, left, Instant::now());
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
        split(
            jetstream::Message {
                message,
                context: self.bus.context().clone(),
            },
            self.policy.ack_wait,
        )
    }

    /// Hands back (nak, no delay) what arrived but was not taken, so another
    /// instance gets it at once instead of after `ack_wait`.
    pub(crate) async fn release(mut self) {
        if let Some(pulls) = self.pulls.take() {
            self.hand_back(pulls).await;
        }
    }

    /// Hands back (nak, no delay) the deliveries `pulls` holds, and drops
    /// them.
    async fn hand_back(&self, mut pulls: Pulls) {
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
                subject: reply.subject,
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

fn split(message: jetstream::Message, ack_wait: Duration) -> Option<(Message, u32, Acker)> {
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
            ack_wait,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOX: &str = "_INBOX.test";

    /// The subject request `id` is answered on.
    fn at(id: u64) -> String {
        format!("{INBOX}.{id}")
    }

    #[test]
    fn each_request_is_answered_on_its_own_subject_and_served_in_order() {
        let now = Instant::now();
        let mut requests = Requests::new(INBOX.to_owned());
        assert_eq!(requests.sent(3, now).as_str(), "_INBOX.test.0");
        assert_eq!(requests.sent(2, now).as_str(), "_INBOX.test.1");
        assert_eq!(requests.asked(), 5);
        for _ in 0..3 {
            requests.delivered();
        }
        assert_eq!(requests.asked(), 2);
        assert_eq!(
            requests.queue.len(),
            1,
            "the first, served in full, is done"
        );
        requests.delivered();
        requests.delivered();
        assert!(requests.is_empty());
        requests.delivered();
        assert_eq!(
            requests.asked(),
            0,
            "a delivery nobody counted on is no debt"
        );
    }

    #[test]
    fn a_request_whose_end_is_never_heard_stops_counting_and_the_others_keep_theirs() {
        let now = Instant::now();
        let mut requests = Requests::new(INBOX.to_owned());
        requests.sent(4, now); // lost in a reconnect: no reply ever
        let later = now + Duration::from_millis(1500);
        requests.sent(2, later);
        assert_eq!(requests.expire(now + PULL_EXPIRES), 0);
        assert_eq!(requests.asked(), 6);
        assert_eq!(requests.expire(now + PULL_EXPIRES + PULL_GRACE), 1);
        assert_eq!(requests.asked(), 2, "the live request still counts");
        assert_eq!(
            requests.next_gone_at(),
            Some(later + PULL_EXPIRES + PULL_GRACE)
        );
    }

    #[test]
    fn an_end_without_a_count_ends_only_its_own_request() {
        let now = Instant::now();
        let mut requests = Requests::new(INBOX.to_owned());
        requests.sent(4, now);
        requests.sent(4, now);
        let second = at(1);
        requests.ended(&second, None, now);
        assert_eq!(requests.asked(), 4);
        requests.ended("_INBOX.other.0", None, now);
        requests.ended(&second, Some(0), now);
        assert_eq!(
            requests.asked(),
            4,
            "unknown and repeated ends change nothing"
        );
    }

    #[test]
    fn deliveries_the_server_made_in_turn_are_moved_to_the_request_that_had_them() {
        let now = Instant::now();
        let mut requests = Requests::new(INBOX.to_owned());
        requests.sent(4, now);
        requests.sent(4, now);
        // The server sent two to each; all four were counted on the first.
        for _ in 0..4 {
            requests.delivered();
        }
        assert_eq!(requests.asked(), 4);
        // The first expires saying 2 of its 4 never came: the second got
        // two and has 2 left, not 4.
        requests.ended(&at(0), Some(2), now);
        assert_eq!(requests.asked(), 2);
        requests.ended(&at(1), Some(2), now);
        assert_eq!(requests.asked(), 0);

        requests.sent(4, now);
        requests.sent(4, now);
        for _ in 0..4 {
            requests.delivered();
        }
        // The first request was taken as served; the server says the
        // second got three of them, so the first has three still coming,
        // until it expires.
        requests.ended(&at(3), Some(1), now);
        assert_eq!(requests.asked(), 3);
        assert_eq!(
            requests.expire(now + PULL_EXPIRES + PULL_GRACE),
            0,
            "no request of ours went unheard"
        );
        assert_eq!(requests.asked(), 0);
    }
}
