//! The in-memory backend: subscribers in this process, each with a bounded
//! queue.
//!
//! A full queue applies back-pressure: `publish` waits for room, at most
//! `bus.publish_timeout`, then fails with `ResourceExhausted`; nothing is
//! dropped silently. A queue group hands each message to the member with the
//! most room (round-robin among equals).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{Headers, Message, OutgoingMessage, Subscription, subject::Pattern};
use crate::{Error, Result};

/// The in-memory backend; cheap to clone.
#[derive(Clone)]
pub(crate) struct MemoryBus {
    table: Arc<Mutex<Table>>,
    capacity: usize,
    publish_timeout: Duration,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: Vec<Entry>,
    /// Per queue group: how many messages it has been handed (round-robin).
    turns: HashMap<String, usize>,
}

struct Entry {
    id: u64,
    pattern: Pattern,
    group: Option<String>,
    sender: mpsc::Sender<Message>,
}

impl MemoryBus {
    pub(crate) fn new(capacity: usize, publish_timeout: Duration) -> Self {
        Self {
            table: Arc::default(),
            capacity,
            publish_timeout,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds no invariant a panic could break halfway.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    pub(crate) async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        self.deliver(message, None).await.map(drop)
    }

    /// Hands the message to every matching subscriber and one member of each
    /// matching queue group; returns how many took it.
    async fn deliver(&self, message: OutgoingMessage, reply: Option<String>) -> Result<usize> {
        let (subject, payload, headers) = message.into_parts();
        let targets = self.targets(&subject);
        let count = targets.len();
        let message = Message::new(subject.into_owned(), payload, headers, reply);
        // Every subscriber with room gets the message first; one that is
        // full holds up no other.
        let mut full = Vec::new();
        for sender in targets {
            match sender.try_send(message.clone()) {
                Ok(()) | Err(TrySendError::Closed(_)) => {} // Closed: it unsubscribed meanwhile.
                Err(TrySendError::Full(message)) => full.push((sender, message)),
            }
        }
        if !full.is_empty() {
            Box::pin(self.wait_for_room(full, count)).await?;
        }
        Ok(count)
    }

    /// Back-pressure: waits for room in the full queues, together, at most
    /// `publish_timeout` in all; says how many subscribers missed the
    /// message (the others have it).
    async fn wait_for_room(
        &self,
        full: Vec<(mpsc::Sender<Message>, Message)>,
        targets: usize,
    ) -> Result<()> {
        let waiting = full.len();
        let subject = full
            .first()
            .map(|(_, message)| message.subject().to_owned())
            .unwrap_or_default();
        let took = std::sync::atomic::AtomicUsize::new(0);
        let sends = futures_util::future::join_all(full.into_iter().map(|(sender, message)| {
            let took = &took;
            async move {
                // Err: it unsubscribed meanwhile, which is as good.
                let _sent_or_gone = sender.send(message).await;
                took.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        if tokio::time::timeout(self.publish_timeout, sends)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let missed = waiting - took.load(std::sync::atomic::Ordering::Relaxed);
        Err(Error::resource_exhausted(format!(
            "{missed} of the {targets} subscribers of `{subject}` have {} messages queued and took none for {:?}; the others have the message",
            self.capacity, self.publish_timeout
        )))
    }

    fn targets(&self, subject: &str) -> Vec<mpsc::Sender<Message>> {
        let mut table = self.table();
        let Table { entries, turns, .. } = &mut *table;
        let mut targets = Vec::new();
        let mut groups: HashMap<&str, Vec<&mpsc::Sender<Message>>> = HashMap::new();
        for entry in entries.iter().filter(|e| e.pattern.matches(subject)) {
            match &entry.group {
                None => targets.push(entry.sender.clone()),
                Some(group) => groups.entry(group).or_default().push(&entry.sender),
            }
        }
        for (group, members) in groups {
            let most_room = members.iter().map(|s| s.capacity()).max().unwrap_or(0);
            let roomy: Vec<_> = members
                .into_iter()
                .filter(|s| s.capacity() == most_room)
                .collect();
            let turn = match turns.get_mut(group) {
                Some(turn) => turn,
                None => turns.entry(group.to_owned()).or_default(),
            };
            *turn = turn.wrapping_add(1);
            if let Some(sender) = roomy.get(*turn % roomy.len().max(1)) {
                targets.push((*sender).clone());
            }
        }
        targets
    }

    pub(crate) fn subscribe(&self, subject: &str, group: Option<&str>) -> Result<Subscription> {
        let pattern = Pattern::new(subject)?;
        let (sender, receiver) = mpsc::channel(self.capacity);
        let mut table = self.table();
        table.next_id += 1;
        let id = table.next_id;
        table.entries.push(Entry {
            id,
            pattern,
            group: group.map(str::to_owned),
            sender,
        });
        drop(table);
        let stream = Inbox {
            id,
            queue: receiver,
            table: Arc::clone(&self.table),
            subject: subject.to_owned(),
        };
        Ok(Subscription::new(subject, stream))
    }

    pub(crate) async fn request(
        &self,
        message: OutgoingMessage,
        timeout: Duration,
    ) -> Result<Message> {
        let inbox = format!("_INBOX.{}", super::unique_id());
        let mut replies = self.subscribe(&inbox, None)?;
        let subject = message.subject().to_owned();
        // One timeout for the delivery too: a responder whose queue is full
        // would otherwise hold the request up to `publish_timeout` first.
        let exchange = async {
            if self.deliver(message, Some(inbox)).await? == 0 {
                return Err(Error::unavailable(format!(
                    "no subscriber answers requests on `{subject}`"
                )));
            }
            replies
                .next()
                .await
                .ok_or_else(|| Error::unavailable("the bus closed before the reply came"))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Error::deadline_exceeded(format!(
                    "no reply on `{subject}` within {timeout:?}"
                )))
            })
    }

    pub(crate) async fn reply(&self, to: &str, payload: Bytes, headers: Headers) -> Result<()> {
        self.publish(OutgoingMessage::new(to.to_owned(), payload).with_headers(headers))
            .await
    }
}

/// The receiving end of one subscription; dropping it unsubscribes.
struct Inbox {
    id: u64,
    queue: mpsc::Receiver<Message>,
    table: Arc<Mutex<Table>>,
    subject: String,
}

impl Stream for Inbox {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.queue.poll_recv(cx)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .retain(|entry| entry.id != self.id);
        let left = self.queue.len();
        if left > 0 {
            tracing::warn!(
                subject = %self.subject,
                messages = left,
                "unsubscribed with in-memory messages still queued; they are not handled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(capacity: usize) -> MemoryBus {
        MemoryBus::new(capacity, Duration::from_millis(100))
    }

    #[tokio::test]
    async fn every_subscriber_gets_a_copy_and_a_group_member_gets_one() {
        let bus = bus(16);
        let mut all = bus.subscribe("orders.>", None).unwrap();
        let mut a = bus.subscribe("orders.*", Some("workers")).unwrap();
        let mut b = bus.subscribe("orders.*", Some("workers")).unwrap();
        for n in 0..4 {
            bus.publish(OutgoingMessage::new("orders.created", vec![n]))
                .await
                .unwrap();
        }
        let mut to_group = 0;
        for _ in 0..4 {
            assert!(all.next().await.is_some());
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), a.next()).await {
            to_group += 1;
        }
        let mut to_b = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), b.next()).await {
            to_b += 1;
        }
        assert_eq!(to_group + to_b, 4);
        assert_eq!(to_group, 2, "the group shares the load");
    }

    #[tokio::test]
    async fn a_full_queue_makes_publish_wait_then_fail() {
        let bus = bus(1);
        let mut slow = bus.subscribe("jobs", None).unwrap();
        bus.publish(OutgoingMessage::new("jobs", "1"))
            .await
            .unwrap();
        let err = bus
            .publish(OutgoingMessage::new("jobs", "2"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ResourceExhausted);
        let waiting = tokio::spawn({
            let bus = bus.clone();
            async move { bus.publish(OutgoingMessage::new("jobs", "3")).await }
        });
        assert_eq!(slow.next().await.unwrap().payload(), "1");
        waiting.await.unwrap().unwrap();
        assert_eq!(slow.next().await.unwrap().payload(), "3");
    }

    #[tokio::test]
    async fn a_stuck_subscriber_holds_up_no_other_and_the_wait_is_one_timeout() {
        let bus = bus(1);
        // Two subscribers that never read, subscribed before one that does.
        let _stuck = (
            bus.subscribe("jobs", None).unwrap(),
            bus.subscribe("jobs", None).unwrap(),
        );
        let mut reader = bus.subscribe("jobs", None).unwrap();
        bus.publish(OutgoingMessage::new("jobs", "1"))
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap().payload(), "1");
        let started = tokio::time::Instant::now();
        let err = bus
            .publish(OutgoingMessage::new("jobs", "2"))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(err.kind(), crate::ErrorKind::ResourceExhausted);
        assert!(err.message().contains("2 of the 3 subscribers"), "{err}");
        assert!(waited < Duration::from_millis(190), "waited {waited:?}");
        assert_eq!(reader.next().await.unwrap().payload(), "2");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = bus(4);
        let subscription = bus.subscribe("a", None).unwrap();
        assert_eq!(bus.targets("a").len(), 1);
        drop(subscription);
        assert!(bus.targets("a").is_empty());
    }

    /// A responder whose queue is full: the request's own timeout holds,
    /// not the publish timeout before it (here 5 s).
    #[tokio::test]
    async fn a_request_to_a_busy_responder_ends_at_its_own_timeout() {
        let bus = MemoryBus::new(1, Duration::from_secs(5));
        let _busy = bus.subscribe("questions", None).unwrap();
        bus.publish(OutgoingMessage::new("questions", "fills the queue"))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = bus
            .request(
                OutgoingMessage::new("questions", "?"),
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::DeadlineExceeded, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn requests_without_a_responder_fail_at_once() {
        let err = bus(4)
            .request(OutgoingMessage::new("nobody", ""), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
    }
}
