//! The NATS core backend (`async-nats`): publish, subscribe, queue groups and
//! request/reply across processes, at most once.
//!
//! The client reconnects by itself (waits growing to 2 s) and re-subscribes;
//! messages published while it is disconnected are buffered by the client
//! and sent after the reconnect.

use std::{borrow::Cow, time::Duration};

use async_nats::{
    Client, HeaderMap, HeaderName, HeaderValue, RequestErrorKind, Subject,
    client::traits::Publisher, message::OutboundMessage,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{BusConfig, Headers, Message, OutgoingMessage, Subscription, subject};
use crate::{Error, Result};

/// The longest wait between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Connects to `bus.url`.
///
/// # Errors
///
/// `Unavailable` naming the URL and the `bus.url` key when no server answers.
pub(crate) async fn connect(config: &BusConfig, name: &str) -> Result<NatsBus> {
    let (outage, outages) = watch::channel(0_u64);
    let client = options(name, config.publish_timeout)
        // Every subject is checked by the bus before it reaches the client.
        .skip_subject_validation(true)
        .client_capacity(config.publish_queue)
        // A subscriber that does not keep up: what the client drops once
        // it holds 65 536 messages for it is said, not silent.
        .event_callback(move |event| {
            let outage = outage.clone();
            async move { on_event(event, &outage) }
        })
        .connect(config.url.as_str())
        .await
        .map_err(|err| {
            Error::unavailable(format!(
                "cannot connect to the message bus at {} (`bus.url`): {err}",
                config.url
            ))
            .with_source(err)
        })?;
    Ok(NatsBus {
        client,
        outages,
        publish_timeout: config.publish_timeout,
    })
}

/// Says what the client reports that an operator should see, and counts the
/// connection's losses in `outage`.
fn on_event(event: async_nats::Event, outage: &watch::Sender<u64>) {
    match event {
        async_nats::Event::Disconnected => {
            outage.send_modify(|count| *count += 1);
        }
        async_nats::Event::SlowConsumer(subscription) => tracing::warn!(
            subscription,
            "a bus subscriber does not keep up: NATS messages for it were dropped"
        ),
        async_nats::Event::ServerError(err) => {
            tracing::warn!(error = %err, "the NATS server reported an error");
        }
        async_nats::Event::LameDuckMode => {
            tracing::warn!(
                "the NATS server is going away (lame duck mode); reconnecting elsewhere"
            );
        }
        _ => {}
    }
}

/// The options every NATS connection of a node shares: the client `name`,
/// `connect_timeout`, and reconnect waits doubling from 10 ms to at most 2 s.
pub(crate) fn options(name: &str, connect_timeout: Duration) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(connect_timeout)
        .reconnect_delay_callback(|attempts| {
            let exponent = u32::try_from(attempts.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .min(16);
            Duration::from_millis(10)
                .saturating_mul(1 << exponent)
                .min(MAX_RECONNECT_DELAY)
        })
}

/// The NATS core backend; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct NatsBus {
    client: Client,
    /// How many times the connection was lost so far.
    outages: watch::Receiver<u64>,
    /// The longest a message may wait for room in the client's queue
    /// (`bus.publish_timeout`): while the server is away nothing drains it.
    publish_timeout: Duration,
}

impl NatsBus {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `bus.publish_timeout`.
    pub(crate) fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    /// Changes each time the connection is lost (before the client
    /// reconnects and subscribes again).
    pub(crate) fn outages(&self) -> watch::Receiver<u64> {
        self.outages.clone()
    }

    pub(crate) async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        let publish = self.client.publish_message(prepare(message)?);
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(published) => published.map_err(publish_error),
            Err(_) => Err(queue_full(self.publish_timeout)),
        }
    }

    pub(crate) async fn subscribe(
        &self,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<Subscription> {
        subject::check_pattern(pattern)?;
        let subscribe = async {
            match group {
                None => self.client.subscribe(pattern.to_owned()).await,
                Some(group) => {
                    self.client
                        .queue_subscribe(pattern.to_owned(), group.to_owned())
                        .await
                }
            }
        };
        let subscriber = tokio::time::timeout(self.publish_timeout, subscribe)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "cannot subscribe to `{pattern}`: the NATS connection took nothing within \
                     {:?} (`bus.publish_timeout`)",
                    self.publish_timeout
                ))
            })?
            .map_err(|err| {
                Error::unavailable(format!("cannot subscribe to `{pattern}`: {err}"))
                    .with_source(err)
            })?;
        // A round trip, so the server has the subscription before this returns.
        self.flush().await?;
        Ok(Subscription::new(pattern, subscriber.map(from_nats)))
    }

    pub(crate) async fn request(
        &self,
        message: OutgoingMessage,
        timeout: Duration,
    ) -> Result<Message> {
        let (subject, payload, headers) = message.into_parts();
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(to_nats(&headers)?);
        }
        // The client's own timeout starts once the request is queued, and
        // the queue does not drain while the server is away: one bound for
        // both.
        let sent = tokio::time::timeout(
            timeout,
            self.client
                .send_request(to_subject(subject.clone()), request),
        )
        .await
        .map_err(|_| {
            Error::deadline_exceeded(format!(
                "no reply on `{subject}` within {timeout:?} (the connection to NATS took \
                 nothing: the server may be unreachable)"
            ))
        })?;
        match sent {
            Ok(reply) => Ok(from_nats(reply)),
            Err(err) => Err(match err.kind() {
                RequestErrorKind::TimedOut => {
                    Error::deadline_exceeded(format!("no reply on `{subject}` within {timeout:?}"))
                }
                RequestErrorKind::NoResponders => {
                    Error::unavailable(format!("no subscriber answers requests on `{subject}`"))
                }
                RequestErrorKind::InvalidSubject => {
                    Error::invalid_argument(format!("`{subject}` is not a valid subject"))
                }
                RequestErrorKind::MaxPayloadExceeded => Error::payload_too_large(format!(
                    "the request on `{subject}` is larger than the server accepts"
                )),
                RequestErrorKind::Other => {
                    Error::unavailable(format!("the request on `{subject}` failed: {err}"))
                }
            }
            .with_source(err)),
        }
    }

    pub(crate) async fn reply(&self, to: &str, payload: Bytes, headers: Headers) -> Result<()> {
        self.publish(OutgoingMessage::new(to.to_owned(), payload).with_headers(headers))
            .await
    }

    pub(crate) async fn flush(&self) -> Result<()> {
        match tokio::time::timeout(self.publish_timeout, self.client.flush()).await {
            Ok(flushed) => flushed.map_err(|err| {
                Error::unavailable(format!("cannot flush the bus: {err}")).with_source(err)
            }),
            Err(_) => Err(Error::unavailable(format!(
                "cannot flush the bus: no answer from NATS within {:?} (`bus.publish_timeout`)",
                self.publish_timeout
            ))),
        }
    }
}

/// A message the client's queue had no room for in `publish_timeout`: it
/// sends nothing while the server is away, and the queue is full.
pub(crate) fn queue_full(publish_timeout: Duration) -> Error {
    Error::unavailable(format!(
        "cannot publish: the NATS connection took nothing within {publish_timeout:?} \
         (`bus.publish_timeout`); the server is unreachable and `bus.publish_queue` is full"
    ))
}

/// A message in the client's terms (no headers when it has none: the
/// client then sends `PUB`, not `HPUB`). Published with
/// [`Publisher::publish_message`], it goes out as through `Client::publish`
/// or `Client::publish_with_headers`, with one future type for both.
///
/// # Errors
///
/// `InvalidArgument` naming a header NATS cannot carry.
#[inline]
pub(crate) fn prepare(message: OutgoingMessage) -> Result<OutboundMessage> {
    let (subject, payload, headers) = message.into_parts();
    let headers = if headers.is_empty() {
        None
    } else {
        Some(to_nats(&headers)?)
    };
    Ok(OutboundMessage {
        subject: to_subject(subject),
        reply: None,
        payload,
        headers,
    })
}

/// A failed core publish: a payload over the server's limit or a subject
/// it refuses is the message's fault (sending it again cannot help); only a
/// failed send is the connection's.
pub(crate) fn publish_error(err: async_nats::PublishError) -> Error {
    match err.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => Error::payload_too_large(
            format!("cannot publish: the message is larger than the NATS server accepts ({err})"),
        ),
        async_nats::client::PublishErrorKind::InvalidSubject => {
            Error::invalid_argument(format!("cannot publish: {err}"))
        }
        async_nats::client::PublishErrorKind::Send => {
            Error::unavailable(format!("cannot publish: {err}"))
        }
    }
    .with_source(err)
}

/// A subject for `async-nats`: a static one is not copied, an owned one is
/// moved.
pub(crate) fn to_subject(subject: Cow<'static, str>) -> Subject {
    match subject {
        Cow::Borrowed(subject) => Subject::from_static(subject),
        Cow::Owned(subject) => Subject::from(subject),
    }
}

/// Our headers as NATS headers.
///
/// # Errors
///
/// `InvalidArgument` naming a header NATS cannot carry.
pub(crate) fn to_nats(headers: &Headers) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        let bad = || Error::invalid_argument(format!("header `{name}` cannot be sent over NATS"));
        let name: HeaderName = name.parse().map_err(|_| bad())?;
        let value: HeaderValue = value.parse().map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(map)
}

/// A NATS message as ours.
pub(crate) fn from_nats(message: async_nats::Message) -> Message {
    let headers = message
        .headers
        .as_ref()
        .map(|map| {
            map.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| (name.to_string(), value.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Message::new(
        message.subject.to_string(),
        message.payload,
        headers,
        message.reply.map(|reply| reply.to_string()),
    )
}
