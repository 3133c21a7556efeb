//! [`Subscriber`]: a message handler a service declares, run by the node with
//! the service's lifecycle.

use std::{fmt, future::Future, sync::Arc};

use futures_util::future::BoxFuture;

use super::ServiceContext;
use crate::{
    Result,
    bus::{
        BusConfig, Event, Message, Payload,
        subscriber::{Handler, Mode, Outcome, Spec},
    },
};

type ServiceHandler =
    Arc<dyn Fn(ServiceContext, Message, u32) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// A message handler declared by a service: its subject, how it shares the
/// messages with other instances, and the handler.
///
/// The node subscribes after the service's start hooks ran and, on shutdown,
/// stops taking messages and lets the handlers in flight finish (and ack)
/// before the stop hooks. A message whose payload is not a `T` goes to the
/// dead-letter subject at once; a handler error is retried with backoff and
/// the message dead-lettered after `max_deliver` attempts (see
/// [`bus::subscriber`](crate::bus) for the whole loop).
///
/// Most services use the [`ServiceBuilder`](super::ServiceBuilder) shorthands
/// (`subscribe`, `queue_subscribe`, `durable_subscribe`, `respond`); a type
/// implementing [`Service`](super::Service) returns these from
/// [`Service::subscribers`](super::Service::subscribers).
///
/// ```
/// use room619::{bus::{Event, Json}, service::Subscriber};
///
/// let audit = Subscriber::new("orders.>", |_ctx, event: Event<Json<serde_json::Value>>| async move {
///     tracing::info!(subject = event.subject(), "audited");
///     Ok(())
/// })
/// .queue("audit"); // one instance of the group gets each message
/// assert_eq!(audit.subject(), "orders.>");
/// ```
#[derive(Clone)]
#[must_use]
pub struct Subscriber {
    subject: String,
    mode: Mode,
    responder: bool,
    handler: ServiceHandler,
}

impl Subscriber {
    /// Calls `handler` with every message on `subject` (wildcards allowed),
    /// decoded as a `T`; every instance of the service gets every message.
    pub fn new<T, F, Fut>(subject: impl Into<String>, handler: F) -> Self
    where
        T: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self {
            subject: subject.into(),
            mode: Mode::Every,
            responder: false,
            handler: Arc::new(move |ctx, message, delivered| {
                let handler = Arc::clone(&handler);
                Box::pin(async move {
                    let body = match message.decode::<T>() {
                        Ok(body) => body,
                        Err(err) => return Outcome::Undecodable(err),
                    };
                    match handler(ctx, Event::new(body, message, delivered)).await {
                        Ok(()) => Outcome::Done(None),
                        Err(err) => Outcome::Failed(err),
                    }
                })
            }),
        }
    }

    /// Answers requests on `subject` with what `handler` returns, in the
    /// request's format; a handler error reaches the requester as an error of
    /// the same kind. The instances of the service share the requests (queue
    /// group: the service's name) unless [`queue`](Self::queue) says
    /// otherwise.
    pub fn responder<T, R, F, Fut>(subject: impl Into<String>, handler: F) -> Self
    where
        T: Payload,
        R: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self {
            subject: subject.into(),
            mode: Mode::Every,
            responder: true,
            handler: Arc::new(move |ctx, message, delivered| {
                let handler = Arc::clone(&handler);
                Box::pin(async move {
                    let body = match message.decode::<T>() {
                        Ok(body) => body,
                        // A requester is waiting: tell it, rather than dead-letter.
                        Err(err) => return Outcome::Failed(err),
                    };
                    let format = message.format().unwrap_or(crate::rpc::codec::Format::Json);
                    let request = message.clone();
                    let reply = match handler(ctx, Event::new(body, message, delivered)).await {
                        Ok(reply) => reply,
                        Err(err) => return Outcome::Failed(err),
                    };
                    match crate::bus::encode_reply(&request, &reply, format) {
                        Ok(reply) => Outcome::Done(Some(reply)),
                        Err(err) => Outcome::Failed(err),
                    }
                })
            }),
        }
    }

    /// Shares the messages with the other members of queue group `group`:
    /// each message goes to one of them.
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.mode = Mode::Queue(group.into());
        self
    }

    /// Makes it a durable consumer called `name`: on JetStream the server
    /// keeps its position and every message is handled at least once, by one
    /// of the instances; the delivery policy is `bus.consumers.<name>` (or
    /// `bus.delivery`). On the other backends it is a queue group `name`.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.mode = Mode::Durable(name.into());
        self
    }

    /// The subject it listens to.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The durable consumer's name, if it is one.
    #[must_use]
    pub fn durable_name(&self) -> Option<&str> {
        match &self.mode {
            Mode::Durable(name) => Some(name),
            _ => None,
        }
    }

    /// Checks the subject and names; a responder cannot be durable.
    pub(crate) fn check(&self) -> Result<()> {
        crate::bus::check_subscriber(&self.subject, &self.mode)?;
        if self.responder && self.durable_name().is_some() {
            return Err(crate::Error::invalid_argument(format!(
                "the responder of `{}` cannot be durable: a JetStream delivery carries no \
                 reply subject, so its replies would be lost (use a queue group)",
                self.subject
            )));
        }
        Ok(())
    }

    /// The subscriber of service `ctx` with its delivery policy from `config`.
    pub(crate) fn bind(&self, ctx: ServiceContext, config: &BusConfig) -> (Spec, Handler) {
        let mode = match &self.mode {
            Mode::Every if self.responder => Mode::Queue(ctx.name().to_owned()),
            mode => mode.clone(),
        };
        let spec = Spec {
            owner: ctx.name().to_owned(),
            subject: self.subject.clone(),
            policy: config.policy(self.durable_name()),
            mode,
            responder: self.responder,
        };
        let handler = Arc::clone(&self.handler);
        let bound: Handler =
            Arc::new(move |message, delivered| handler(ctx.clone(), message, delivered));
        (spec, bound)
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("subject", &self.subject)
            .field("mode", &self.mode)
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}
