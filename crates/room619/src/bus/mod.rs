//! The message bus: publish, subscribe, queue groups, request/reply, typed
//! messages with headers — in memory, over NATS core or over NATS JetStream,
//! chosen by `[bus]` in the configuration.
//!
//! Handlers reach the node's bus with [`ServiceContext::bus`](crate::ServiceContext::bus);
//! subscribers are declared on the [`ServiceBuilder`](crate::ServiceBuilder)
//! and run with the service's lifecycle (started after the start hooks,
//! drained on shutdown).
//!
//! ```
//! use room619::{ServiceBuilder, bus::Event};
//!
//! #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced {
//!     #[prost(uint64, tag = "1")]
//!     id: u64,
//! }
//!
//! let billing = ServiceBuilder::new("billing", "1.0.0")?
//!     // one instance of `billing` handles each order, at least once on JetStream
//!     .durable_subscribe("orders.placed", "billing", |ctx, event: Event<OrderPlaced>| async move {
//!         tracing::info!(order = event.body().id, attempt = event.delivered(), "billing");
//!         ctx.bus().publish("invoices.created", event.body()).await
//!     })
//!     .build()?;
//! # Ok::<(), room619::Error>(())
//! ```
//!
//! # Backends
//!
//! | `bus.backend` | delivery | for |
//! |---|---|---|
//! | `memory` (default) | at most once, in this process; bounded queues with back-pressure | one node, tests |
//! | `nats` | at most once, across processes (NATS core) | events nobody must miss only while listening |
//! | `jetstream` | durable subscribers at least once: stored, acked after the handler, redelivered with backoff, dead letters, deduplication by message id | work that must happen |
//!
//! `nats` and `jetstream` need the crate feature `nats`.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `message.rs`, `headers.rs`, `payload.rs` | [`Message`], [`OutgoingMessage`], [`Event`], [`Headers`], [`Payload`] / [`Json`] |
//! | `subject.rs` | subject rules and wildcard matching (`*`, `>`) |
//! | `handle.rs`, `publish.rs` | [`MessageBus`], dispatching to the backend |
//! | `request.rs` | request / reply: waiting for one answer, a responder's error carried back |
//! | `subscription.rs` | [`Subscription`], a stream of messages |
//! | `config.rs` | [`BusConfig`], the `[bus]` section |
//! | `memory.rs`, `nats.rs`, `jetstream.rs`, `durable.rs` | the backends (JetStream: streams and publishing; durable consumers) |
//! | `subscriber.rs` | the handler loop: decode, call, ack / nak / dead-letter, drain |
//! | `source.rs` | where a subscriber's messages come from, and settling each delivery |
//! | `lifecycle.rs` | a node's subscribers: started after the start hooks, drained on shutdown |

mod config;
#[cfg(feature = "nats")]
mod durable;
mod handle;
pub mod headers;
#[cfg(feature = "nats")]
mod jetstream;
mod lifecycle;
mod memory;
mod message;
#[cfg(feature = "nats")]
mod nats;
mod payload;
mod publish;
mod request;
mod source;
pub(crate) mod subject;
pub(crate) mod subscriber;
pub(crate) use lifecycle::Subscribers;
#[cfg(feature = "nats")]
pub(crate) use nats::options as nats_options;
mod subscription;

use bytes::Bytes;

pub use config::{
    BusBackend, BusConfig, DeliverFrom, DeliveryPolicy, MessageFormat, StreamConfig, StreamStorage,
};
pub use handle::MessageBus;
pub use headers::Headers;
pub use message::{Event, Message, OutgoingMessage};
pub use payload::{Json, Payload};
pub use subscription::Subscription;

use self::subscriber::Mode;
use crate::{Result, rpc::codec::Format};

/// Checks a declared subscriber's subject and group or durable name.
pub(crate) fn check_subscriber(subject: &str, mode: &Mode) -> Result<()> {
    subject::check_pattern(subject)?;
    match mode {
        Mode::Every => Ok(()),
        Mode::Queue(group) => subject::check_name("queue group", group),
        Mode::Durable(name) => subject::check_stored_name("durable consumer name", name),
    }
}

/// A reply to `request`: `message` in `format`, with the request's trace.
pub(crate) fn encode_reply<T: Payload>(
    request: &Message,
    message: &T,
    format: Format,
) -> Result<(Bytes, Headers)> {
    let (payload, format) = message.encode(format)?;
    let mut headers = Headers::new();
    if format != Format::Json {
        headers.insert(headers::CONTENT_TYPE, format.media_type());
    }
    subscriber::copy_trace(request, &mut headers);
    Ok((payload, headers))
}

/// A fresh 22-character id (inboxes, message ids): 128 random bits in base 62.
pub(crate) fn unique_id() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..22)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}
