//! Where a subscriber's messages come from ([`Source`]: a core subscription
//! or a JetStream durable consumer) and how each delivery is settled.

use super::{DeliveryPolicy, Message, Subscription};

/// Where a subscriber's messages come from.
pub(crate) enum Source {
    Core(Subscription),
    #[cfg(feature = "nats")]
    Durable(Box<super::durable::DurableSource>),
}

/// How a delivery is settled.
pub(super) enum Ack {
    /// Nothing to tell the backend (memory, NATS core).
    Local,
    #[cfg(feature = "nats")]
    JetStream(Box<super::durable::Acker>),
}

impl Source {
    /// The next delivery; `free` handlers (the caller's included) could take
    /// one now, which is how many a JetStream pull asks for.
    pub(super) async fn next(&mut self, free: usize) -> Option<(Message, u32, Ack)> {
        match self {
            Self::Core(subscription) => {
                let _ = free; // a subscription is pushed to, never pulled
                subscription.next().await.map(|m| (m, 1, Ack::Local))
            }
            #[cfg(feature = "nats")]
            Self::Durable(source) => {
                let (message, delivered, acker) = source.next(free).await;
                Some((message, delivered, Ack::JetStream(Box::new(acker))))
            }
        }
    }

    /// Stops taking: unsubscribes; hands back what a durable consumer
    /// fetched ahead.
    #[cfg(feature = "nats")]
    pub(super) async fn release(self) {
        match self {
            Self::Core(subscription) => drop(subscription),
            Self::Durable(source) => source.release().await,
        }
    }

    #[cfg(not(feature = "nats"))]
    pub(super) fn release(self) -> std::future::Ready<()> {
        drop(self);
        std::future::ready(())
    }
}

/// Runs `work`, the handling of the delivery `ack`, telling JetStream every
/// half `ack_wait` that it is still in progress: a handler slower than
/// `ack_wait` keeps its message instead of having it delivered to a second
/// handler beside it (and, after `max_deliver` such deliveries, sent to the
/// dead letters while the first still runs). Only for `max_deliver` times
/// `ack_wait` in all, the longest the message could have taken without
/// them: a handler that hangs lets its message go to the server again (and
/// in the end to the dead letters), as before. Memory and NATS core
/// deliveries have no `ack_wait`.
pub(super) async fn in_progress<F: Future>(
    ack: &Ack,
    policy: &DeliveryPolicy,
    work: F,
) -> F::Output {
    #[cfg(not(feature = "nats"))]
    let _ = policy;
    match ack {
        Ack::Local => work.await,
        #[cfg(feature = "nats")]
        Ack::JetStream(acker) => {
            let mut work = std::pin::pin!(work);
            // Polled beside `work`, in the same task: a slow send (the
            // connection away) never holds the handler up.
            tokio::select! {
                biased;
                output = &mut work => return output,
                () = remind(acker, policy) => {}
            }
            tracing::warn!(
                stream = %acker.stream,
                sequence = acker.sequence,
                ack_wait = ?policy.ack_wait,
                max_deliver = policy.max_deliver,
                "a handler has run for max_deliver × ack_wait: no longer kept in progress, \
                 the server will deliver the message again"
            );
            work.await
        }
    }
}

/// Tells the server every half `ack_wait` that `acker`'s delivery is in
/// progress, until `max_deliver` times `ack_wait` have passed.
#[cfg(feature = "nats")]
async fn remind(acker: &super::durable::Acker, policy: &DeliveryPolicy) {
    let period = (policy.ack_wait / 2).max(std::time::Duration::from_millis(10));
    let reminders = policy.max_deliver.saturating_mul(2).saturating_sub(1);
    for _ in 0..reminders {
        tokio::time::sleep(period).await;
        acker.progress().await;
    }
}

/// How a delivery ends.
pub(super) enum Settle {
    Ack,
    Term,
}

/// Tells JetStream the message is done with (acked, or given up).
#[cfg(feature = "nats")]
pub(super) async fn settle(ack: &Ack, how: Settle) {
    match (ack, how) {
        (Ack::Local, _) => {}
        (Ack::JetStream(acker), Settle::Ack) => acker.ack().await,
        (Ack::JetStream(acker), Settle::Term) => acker.term().await,
    }
}

#[cfg(not(feature = "nats"))]
pub(super) fn settle(_ack: &Ack, _how: Settle) -> std::future::Ready<()> {
    std::future::ready(())
}
