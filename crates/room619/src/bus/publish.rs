//! The publish path, dispatched to the backend without an `async` wrapper of
//! its own: on NATS core the caller awaits the client's own publish future
//! (mapped), so a publish costs what it costs through the raw client.

use std::future::Future;

use futures_util::future::{Either, ready};
#[cfg(feature = "nats")]
use futures_util::{FutureExt as _, future::BoxFuture};

use super::{OutgoingMessage, handle::Backend, subject};
use crate::Result;

/// Checks the message, then hands it to the backend.
#[cfg(feature = "nats")]
pub(super) fn dispatch(
    backend: &Backend,
    message: OutgoingMessage,
) -> impl Future<Output = Result<()>> + Send + '_ {
    if let Err(err) = check(&message) {
        return Either::Left(ready(Err(err)));
    }
    Either::Right(match backend {
        Backend::Memory(bus) => Either::Left(bus.publish(message)),
        Backend::Nats(bus) => Either::Right(Either::Left(nats_core(bus, message))),
        // Boxed: the retrying JetStream publish is a large future the other
        // backends should not carry.
        Backend::JetStream(bus) => {
            let publish: BoxFuture<'_, Result<()>> = Box::pin(bus.publish(message));
            Either::Right(Either::Right(publish))
        }
    })
}

/// Checks the message, then hands it to the in-memory backend (the only one
/// without the `nats` feature).
#[cfg(not(feature = "nats"))]
pub(super) fn dispatch(
    backend: &Backend,
    message: OutgoingMessage,
) -> impl Future<Output = Result<()>> + Send + '_ {
    let Backend::Memory(bus) = backend;
    match check(&message) {
        Ok(()) => Either::Left(bus.publish(message)),
        Err(err) => Either::Right(ready(Err(err))),
    }
}

fn check(message: &OutgoingMessage) -> Result<()> {
    subject::check_publish(message.subject())?;
    message.headers().check()
}

#[cfg(feature = "nats")]
fn nats_core(
    bus: &super::nats::NatsBus,
    message: OutgoingMessage,
) -> impl Future<Output = Result<()>> + Send + '_ {
    use super::nats::{prepare, publish_error};
    let client = bus.client();
    match prepare(message) {
        Err(err) => Either::Left(ready(Err(err))),
        Ok((subject, payload, None)) => Either::Right(Either::Left(
            client
                .publish(subject, payload)
                .map(|r| r.map_err(publish_error)),
        )),
        Ok((subject, payload, Some(headers))) => Either::Right(Either::Right(
            client
                .publish_with_headers(subject, headers, payload)
                .map(|r| r.map_err(publish_error)),
        )),
    }
}
