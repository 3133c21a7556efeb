//! The publish path, in two steps: [`prepare`] does the work (trace context,
//! checks, the message in the backend's terms) out of line; [`publish`]
//! starts the backend's own publish future and holds it as it is in a
//! [`Publish`], with only the `published` count after it.
//!
//! `publish` is small and `#[inline]`, and so is `MessageBus::publish_message`
//! around it, so the future is built in place where the caller awaits it: on
//! NATS core the client's generic `publish` is built there as when the raw
//! client is called, and no wrapper of ours (an `async` block, `Either`,
//! `Map`) makes the future larger or copies it on its way ("Message bus" in
//! docs/PERFORMANCE.md). `Publish` adds 24 bytes beside it: the publish
//! timeout, and the timer (boxed, made only when the client's queue is full)
//! that bounds a wait which nothing ends while the server is away.

use std::sync::OnceLock;

use super::{OutgoingMessage, handle::Backend, subject};
use crate::{Result, observability::metrics::BusMetrics, observability::trace_context};

/// A message checked and in its backend's terms, or why it is refused.
pub(super) enum Prepared<'a> {
    Memory(&'a super::memory::MemoryBus, OutgoingMessage),
    #[cfg(feature = "nats")]
    Nats(
        &'a super::nats::NatsBus,
        async_nats::message::OutboundMessage,
    ),
    /// Boxed: the retrying JetStream publish is a large future the other
    /// backends should not carry.
    #[cfg(feature = "nats")]
    JetStream(futures_util::future::BoxFuture<'a, Result<()>>),
    Refused(crate::Error),
}

/// Adds the current trace context to the message, checks it, and puts it in
/// the backend's terms.
#[inline(never)]
pub(super) fn prepare(backend: &Backend, mut message: OutgoingMessage) -> Prepared<'_> {
    trace_context::inject_bus(message.headers_mut());
    if let Err(error) = check(&message) {
        return Prepared::Refused(error);
    }
    match backend {
        Backend::Memory(bus) => Prepared::Memory(bus, message),
        #[cfg(feature = "nats")]
        Backend::Nats(bus) => match super::nats::prepare(message) {
            Ok(message) => Prepared::Nats(bus, message),
            Err(error) => Prepared::Refused(error),
        },
        #[cfg(feature = "nats")]
        Backend::JetStream(bus) => Prepared::JetStream(jetstream(bus, message)),
    }
}

/// The retrying JetStream publish, boxed out of line: built in `prepare`,
/// its large future would size that function's frame for every backend.
#[cfg(feature = "nats")]
#[inline(never)]
fn jetstream(
    bus: &super::jetstream::JetStreamBus,
    message: OutgoingMessage,
) -> futures_util::future::BoxFuture<'_, Result<()>> {
    Box::pin(bus.publish(message))
}

fn check(message: &OutgoingMessage) -> Result<()> {
    match message.static_subject() {
        Some(subject) => subject::check_static_publish(subject)?,
        None => subject::check_publish(message.subject())?,
    }
    message.headers().check()
}

/// Starts the backend's publish; the future counts the message once the
/// backend took it.
#[cfg(feature = "nats")]
#[inline]
pub(super) fn publish<'a>(
    prepared: Prepared<'a>,
    metrics: &'a OnceLock<BusMetrics>,
    system: &'static str,
) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
    use async_nats::message::OutboundMessage;

    let mut timeout = std::time::Duration::ZERO;
    let state = match prepared {
        Prepared::Nats(bus, message) => match message {
            OutboundMessage {
                subject,
                payload,
                headers: None,
                ..
            } => {
                timeout = bus.publish_timeout();
                State::Nats {
                    publish: bus.client().publish(subject, payload),
                }
            }
            OutboundMessage {
                subject,
                payload,
                headers: Some(headers),
                ..
            } => {
                timeout = bus.publish_timeout();
                State::NatsWithHeaders {
                    publish: bus.client().publish_with_headers(subject, headers, payload),
                }
            }
        },
        Prepared::Memory(bus, message) => State::Memory {
            publish: bus.publish(message),
        },
        Prepared::JetStream(publish) => State::JetStream { publish },
        Prepared::Refused(error) => State::Refused { error: Some(error) },
    };
    Publish {
        state,
        metrics,
        system,
        timeout,
        waiting: None,
    }
}

/// Starts the in-memory publish (the only backend without the `nats`
/// feature); the future counts the message once delivered.
#[cfg(not(feature = "nats"))]
pub(super) async fn publish(
    prepared: Prepared<'_>,
    metrics: &OnceLock<BusMetrics>,
    system: &'static str,
) -> Result<()> {
    match prepared {
        Prepared::Memory(bus, message) => bus.publish(message).await?,
        Prepared::Refused(error) => return Err(error),
    }
    count(metrics, system);
    Ok(())
}

fn count(metrics: &OnceLock<BusMetrics>, system: &'static str) {
    if let Some(metrics) = metrics.get() {
        metrics.published(system);
    }
}

#[cfg(feature = "nats")]
use future::{Publish, State};

#[cfg(feature = "nats")]
mod future {
    use std::{
        future::Future,
        pin::Pin,
        sync::OnceLock,
        task::{Context, Poll, ready},
        time::Duration,
    };

    use futures_util::future::BoxFuture;
    use pin_project_lite::pin_project;

    use crate::{Error, Result, observability::metrics::BusMetrics};

    pin_project! {
        /// A publish under way: the backend's own future, then the count.
        #[must_use = "futures do nothing unless polled"]
        pub(super) struct Publish<'a, N, H, M> {
            #[pin]
            pub(super) state: State<'a, N, H, M>,
            pub(super) metrics: &'a OnceLock<BusMetrics>,
            pub(super) system: &'static str,
            // NATS core: how long the message may wait for room in the
            // client's queue (which nothing drains while the server is
            // away), timed only once it had to wait.
            pub(super) timeout: Duration,
            pub(super) waiting: Option<Pin<Box<tokio::time::Sleep>>>,
        }
    }

    pin_project! {
        /// Which backend's publish it is.
        #[project = StateProj]
        pub(super) enum State<'a, N, H, M> {
            /// NATS core: the client's `publish`.
            Nats { #[pin] publish: N },
            /// NATS core: the client's `publish_with_headers`.
            NatsWithHeaders { #[pin] publish: H },
            /// In memory.
            Memory { #[pin] publish: M },
            /// JetStream (boxed).
            JetStream { publish: BoxFuture<'a, Result<()>> },
            /// Refused before it was sent (the error is taken when reported).
            Refused { error: Option<Error> },
        }
    }

    impl<N, H, M> Future for Publish<'_, N, H, M>
    where
        N: Future<Output = Result<(), async_nats::PublishError>>,
        H: Future<Output = Result<(), async_nats::PublishError>>,
        M: Future<Output = Result<()>>,
    {
        type Output = Result<()>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
            use crate::bus::nats::publish_error;

            let this = self.project();
            let result = match this.state.project() {
                StateProj::Nats { publish } => match publish.poll(cx) {
                    Poll::Ready(published) => published.map_err(publish_error),
                    Poll::Pending => return waited(this.waiting, *this.timeout, cx),
                },
                StateProj::NatsWithHeaders { publish } => match publish.poll(cx) {
                    Poll::Ready(published) => published.map_err(publish_error),
                    Poll::Pending => return waited(this.waiting, *this.timeout, cx),
                },
                StateProj::Memory { publish } => ready!(publish.poll(cx)),
                StateProj::JetStream { publish } => ready!(publish.as_mut().poll(cx)),
                StateProj::Refused { error } => Err(error.take().unwrap_or_else(|| {
                    Error::internal("a publish future was polled after it completed")
                })),
            };
            if result.is_ok() {
                super::count(this.metrics, this.system);
            }
            Poll::Ready(result)
        }
    }

    /// A NATS publish that found the client's queue full: pending until
    /// `timeout` after it first did, then refused.
    fn waited(
        waiting: &mut Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        let sleep = waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(crate::bus::nats::queue_full(timeout)))
    }
}
