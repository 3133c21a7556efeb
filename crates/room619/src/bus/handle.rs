//! [`MessageBus`]: the handle services publish, subscribe and request with;
//! it dispatches to the backend `bus.backend` chose.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    sync::{Arc, OnceLock},
};

use futures_util::future::{Either, ready};

use super::{
    BusBackend, BusConfig, OutgoingMessage, Payload, Subscription,
    memory::MemoryBus,
    publish,
    source::Source,
    subject,
    subscriber::{Mode, Spec},
};
#[cfg(feature = "nats")]
use super::{durable, jetstream, nats};
use crate::{Result, observability::metrics::BusMetrics, rpc::codec::Format};

/// A handle to the message bus; cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use room619::bus::{Json, MessageBus};
///
/// # async fn demo() -> room619::Result<()> {
/// let bus = MessageBus::in_memory();
/// let mut shipped = bus.subscribe("orders.*.shipped").await?;
/// bus.publish("orders.42.shipped", &Json("tomorrow".to_owned())).await?;
/// let message = shipped.next().await.unwrap();
/// assert_eq!(message.subject(), "orders.42.shipped");
/// let Json(when) = message.decode::<Json<String>>()?;
/// assert_eq!(when, "tomorrow");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct MessageBus {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    kind: BusBackend,
    format: Format,
    dead_letter_subject: String,
    /// Set once by the node when metrics are on.
    metrics: OnceLock<BusMetrics>,
}

pub(super) enum Backend {
    Memory(MemoryBus),
    #[cfg(feature = "nats")]
    Nats(nats::NatsBus),
    #[cfg(feature = "nats")]
    JetStream(Box<jetstream::JetStreamBus>),
}

impl MessageBus {
    /// An in-memory bus with the default settings.
    #[must_use]
    pub fn in_memory() -> Self {
        Self::memory(&BusConfig::default())
    }

    fn memory(config: &BusConfig) -> Self {
        Self::with(
            Backend::Memory(MemoryBus::new(config.capacity, config.publish_timeout)),
            BusBackend::Memory,
            config,
        )
    }

    fn with(backend: Backend, kind: BusBackend, config: &BusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                kind,
                format: config.format.format(),
                dead_letter_subject: config.dead_letter_subject.clone(),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Makes the bus `config` describes: connects to NATS, and on JetStream
    /// creates or updates the configured streams. A node does this at start.
    ///
    /// # Errors
    ///
    /// `Config` when the configuration is invalid; `Unavailable` naming
    /// `bus.url` when the server cannot be reached, or the stream when
    /// JetStream refuses it.
    pub async fn connect(config: &BusConfig) -> Result<Self> {
        Self::connect_as(config, "room619").await
    }

    #[cfg(feature = "nats")]
    pub(crate) async fn connect_as(config: &BusConfig, name: &str) -> Result<Self> {
        Self::check(config)?;
        let bus = match config.backend {
            BusBackend::Memory => Self::memory(config),
            BusBackend::Nats => Self::with(
                Backend::Nats(nats::connect(config, name).await?),
                BusBackend::Nats,
                config,
            ),
            BusBackend::JetStream => {
                let js = jetstream::JetStreamBus::new(nats::connect(config, name).await?, config)
                    .await?;
                Self::with(
                    Backend::JetStream(Box::new(js)),
                    BusBackend::JetStream,
                    config,
                )
            }
        };
        tracing::debug!(client = name, backend = ?config.backend, "message bus ready");
        Ok(bus)
    }

    /// Without the `nats` feature only the memory backend exists (validation
    /// rejects the others).
    #[cfg(not(feature = "nats"))]
    pub(crate) fn connect_as(config: &BusConfig, _name: &str) -> std::future::Ready<Result<Self>> {
        std::future::ready(Self::check(config).map(|()| Self::memory(config)))
    }

    fn check(config: &BusConfig) -> Result<()> {
        config.validate().map_err(|(key, problem)| {
            crate::config::ConfigError::new(format!("bus.{key}"), problem).into()
        })
    }

    /// Counts published and consumed messages in `metrics` (the node does it).
    pub(crate) fn observe(&self, metrics: BusMetrics) {
        if self.inner.metrics.set(metrics).is_err() {
            tracing::debug!("bus metrics were already set");
        }
    }

    pub(crate) fn metrics(&self) -> Option<&BusMetrics> {
        self.inner.metrics.get()
    }

    /// The `messaging.system` name of the backend.
    pub(crate) fn system(&self) -> &'static str {
        match self.inner.kind {
            BusBackend::Memory => "memory",
            BusBackend::Nats => "nats",
            BusBackend::JetStream => "jetstream",
        }
    }

    /// Which backend carries the messages.
    #[must_use]
    pub fn backend(&self) -> BusBackend {
        self.inner.kind
    }

    /// The format [`publish`](Self::publish) encodes typed messages in.
    #[must_use]
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// Where given-up messages go.
    #[must_use]
    pub fn dead_letter_subject(&self) -> &str {
        &self.inner.dead_letter_subject
    }

    /// Publishes `message` on `subject`, encoded in the bus's format (a
    /// `&'static str` subject is not copied; pass an owned `String` for others).
    ///
    /// On JetStream it returns once the server stored the message (see
    /// [`publish_message`](Self::publish_message)).
    ///
    /// # Errors
    ///
    /// As [`publish_message`](Self::publish_message).
    pub fn publish<'a, T, S>(
        &'a self,
        subject: S,
        message: &T,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, T, S>
    where
        T: Payload,
        S: Into<Cow<'static, str>>,
    {
        match OutgoingMessage::encode(subject, message, self.inner.format) {
            Ok(message) => Either::Left(self.publish_message(message)),
            Err(err) => Either::Right(ready(Err(err))),
        }
    }

    /// Publishes a message built with its headers (message id, traceparent).
    ///
    /// In memory it waits while a subscriber's queue is full, for at most
    /// `bus.publish_timeout`; on NATS core while the connection's queue
    /// (`bus.publish_queue`) is full, as when the server is away, for as
    /// long. On JetStream it returns once the server acked
    /// (stored) the message, sending it again with the same message id
    /// through a reconnect for at most `bus.publish_timeout`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a subject with wildcards or a bad header (or a
    /// JetStream publish expectation that does not hold); `PayloadTooLarge`
    /// for a message over the NATS server's `max_payload`;
    /// `ResourceExhausted` when an in-memory subscriber stays full;
    /// `Unavailable` when NATS is unreachable or JetStream did not confirm.
    #[inline]
    pub fn publish_message(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        let prepared = publish::prepare(&self.inner.backend, message);
        publish::publish(prepared, &self.inner.metrics, self.system())
    }

    /// Publishes a message given up to the dead-letter subject. On JetStream
    /// with no stream storing that subject now (as the server said within
    /// the last seconds: a stream can be made or deleted at run time), it
    /// goes out on NATS core (at most once): JetStream would refuse it, and
    /// the message it stands for would be delivered and given up again for
    /// ever.
    pub(crate) async fn publish_dead_letter(&self, letter: OutgoingMessage) -> Result<()> {
        #[cfg(feature = "nats")]
        if let Backend::JetStream(bus) = &self.inner.backend {
            if !bus.stores_dead_letters(letter.subject()).await {
                let core = Backend::Nats(bus.core().clone());
                let prepared = publish::prepare(&core, letter);
                return publish::publish(prepared, &self.inner.metrics, self.system()).await;
            }
            let sent = self.publish_message(letter).await;
            if sent.is_err() {
                bus.forget_dead_letter_route();
            }
            return sent;
        }
        self.publish_message(letter).await
    }

    /// Every message published on `subject` (wildcards allowed) from now on.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a malformed subject; `Unavailable` when NATS is
    /// unreachable.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription> {
        self.subscribe_as(subject, None).await
    }

    /// As [`subscribe`](Self::subscribe), but each message goes to one member
    /// of the queue group `group` (load balancing among instances).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe); `InvalidArgument` for a malformed
    /// group name.
    pub async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription> {
        subject::check_name("queue group", group)?;
        self.subscribe_as(subject, Some(group)).await
    }

    #[cfg(feature = "nats")]
    async fn subscribe_as(&self, subject: &str, group: Option<&str>) -> Result<Subscription> {
        subject::check_pattern(subject)?;
        match &self.inner.backend {
            Backend::Memory(bus) => bus.subscribe(subject, group),
            Backend::Nats(bus) => bus.subscribe(subject, group).await,
            Backend::JetStream(bus) => bus.core().subscribe(subject, group).await,
        }
    }

    #[cfg(not(feature = "nats"))]
    fn subscribe_as(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> std::future::Ready<Result<Subscription>> {
        let Backend::Memory(bus) = &self.inner.backend;
        std::future::ready(bus.subscribe(subject, group))
    }

    /// Waits until everything published so far has reached the server (NATS);
    /// in memory, lets the subscribers' tasks run.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the connection is lost.
    pub async fn flush(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Memory(_) => {
                tokio::task::yield_now().await;
                Ok(())
            }
            #[cfg(feature = "nats")]
            Backend::Nats(bus) => bus.flush().await,
            #[cfg(feature = "nats")]
            Backend::JetStream(bus) => bus.core().flush().await,
        }
    }

    /// The backend carrying the messages, for the bus's other parts.
    pub(super) fn transport(&self) -> &Backend {
        &self.inner.backend
    }

    /// Opens the source of a declared subscriber.
    ///
    /// # Errors
    ///
    /// `FailedPrecondition` for a responder on a subject a configured
    /// JetStream stream stores: the stream would answer each request with its
    /// store receipt before the responder could, and keep the request as an
    /// event; `Unavailable` when the backend cannot subscribe.
    pub(crate) async fn open(&self, spec: &Spec) -> Result<Source> {
        subject::check_pattern(&spec.subject)?;
        #[cfg(feature = "nats")]
        if spec.responder
            && let Backend::JetStream(bus) = &self.inner.backend
            && let Some(stream) = bus.stream_storing(&spec.subject)?
        {
            return Err(crate::Error::failed_precondition(format!(
                "the responder of `{}` ({}) listens on a subject stream `{stream}` stores: \
                 the stream would answer every request with its receipt; answer requests on \
                 subjects outside `bus.streams`",
                spec.subject, spec.owner
            )));
        }
        let group = match &spec.mode {
            Mode::Every => None,
            Mode::Queue(group) => Some(group.as_str()),
            Mode::Durable(name) => {
                #[cfg(feature = "nats")]
                if let Backend::JetStream(bus) = &self.inner.backend {
                    let source =
                        durable::DurableSource::open(bus, name, &spec.subject, spec.policy).await?;
                    return Ok(Source::Durable(Box::new(source)));
                }
                Some(name.as_str())
            }
        };
        self.subscribe_as(&spec.subject, group)
            .await
            .map(Source::Core)
    }
}

impl fmt::Debug for MessageBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBus")
            .field("backend", &self.inner.kind)
            .field("format", &self.inner.format)
            .finish_non_exhaustive()
    }
}
