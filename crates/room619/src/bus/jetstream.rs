//! The NATS JetStream backend: streams and durable consumers from config,
//! publishes confirmed by the server, explicit acks.
//!
//! * **Streams** listed under `bus.streams` (and the dead-letter stream) are
//!   created or updated when the bus connects.
//! * **Publish** sends the message with a `Nats-Msg-Id` (the caller's, or a
//!   fresh one) and returns once the server acked it, i.e. stored it. A
//!   publish that gets no ack (the server died, the connection dropped) is
//!   sent again with the same id until `bus.publish_timeout`; the stream's
//!   duplicate window makes the retries harmless.
//! * **Durable consumers** are pull consumers with explicit acks, created or
//!   updated when their subscriber starts. The server's own `max_deliver` is
//!   unlimited: the subscriber decides when a message is given up (and sends
//!   it to the dead-letter subject), so no message is ever stuck unacked.
//!   Core subscriptions (`subscribe`, `queue_subscribe`, request/reply) go
//!   through NATS core.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self, Context,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::{GetStreamByNameErrorKind, PublishErrorKind},
    stream,
};

use super::{
    BusConfig, DeliverFrom, DeliveryPolicy, OutgoingMessage, StreamConfig, StreamStorage,
    headers::MESSAGE_ID,
    nats::{NatsBus, to_nats, to_subject},
    subject::{self, Pattern},
};
use crate::{Error, Result};

/// How long one publish attempt waits for the server's ack before it is sent
/// again (at most `bus.publish_timeout` in all).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first wait between publish attempts; doubles up to `ATTEMPT_TIMEOUT`.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(20);

/// The JetStream backend; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct JetStreamBus {
    core: NatsBus,
    /// For publishes: each attempt bounded by `ATTEMPT_TIMEOUT`.
    publisher: Context,
    /// For the JetStream API (streams, consumers).
    admin: Context,
    publish_timeout: Duration,
    streams: Vec<(String, Vec<Pattern>)>,
    /// Whether a stream stores the dead letters, as the server last said.
    dead_letter_route: Arc<Mutex<DeadLetterRoute>>,
}

/// Whether a stream stores the dead letters, and when the server said so:
/// asked again after `DEAD_LETTER_ROUTE_TTL`, or after a dead letter failed.
#[derive(Debug, Default)]
struct DeadLetterRoute {
    known: Option<(Instant, bool)>,
    /// Counts the answers forgotten, so that one asked for before is not
    /// kept.
    forgotten: u64,
}

/// How long the server's answer to "does a stream store the dead letters?"
/// is used before asking again (a stream can be made or deleted at run
/// time; a burst of dead letters asks once).
const DEAD_LETTER_ROUTE_TTL: Duration = Duration::from_secs(1);

impl JetStreamBus {
    /// Wraps a connected client and creates or updates the configured
    /// streams.
    ///
    /// # Errors
    ///
    /// `Unavailable` (JetStream not enabled or not reachable) or `Config`
    /// (a stream the server refuses), naming the stream's key.
    pub(crate) async fn new(core: NatsBus, config: &BusConfig) -> Result<Self> {
        let publisher = jetstream::ContextBuilder::new()
            .timeout(ATTEMPT_TIMEOUT.min(config.publish_timeout))
            .build(core.client().clone());
        let mut admin = publisher.clone();
        admin.set_timeout(config.publish_timeout.max(Duration::from_secs(5)));
        let mut streams: Vec<(String, StreamConfig)> = config
            .streams
            .iter()
            .map(|(name, stream)| (name.clone(), stream.clone()))
            .collect();
        // Configured under `streams` by its name, it is made as configured.
        if !config.dead_letter_stream.is_empty()
            && !config.streams.contains_key(&config.dead_letter_stream)
        {
            streams.push((
                config.dead_letter_stream.clone(),
                StreamConfig {
                    subjects: vec![config.dead_letter_subject.clone()],
                    ..StreamConfig::default()
                },
            ));
        }
        for (name, stream) in &streams {
            let key = if config.streams.contains_key(name) {
                format!("bus.streams.{name}")
            } else {
                "bus.dead_letter_stream".to_owned()
            };
            admin
                .create_or_update_stream(stream_config(name, stream))
                .await
                .map_err(|err| {
                    Error::unavailable(format!(
                        "cannot create or update JetStream stream `{name}` (`{key}`): {err}"
                    ))
                    .with_source(err)
                })?;
        }
        let streams: Vec<(String, Vec<Pattern>)> = streams
            .into_iter()
            .map(|(name, stream)| {
                let patterns = stream
                    .subjects
                    .iter()
                    .filter_map(|s| Pattern::new(s).ok())
                    .collect();
                (name, patterns)
            })
            .collect();
        let bus = Self {
            core,
            publisher,
            admin,
            publish_timeout: config.publish_timeout,
            streams,
            dead_letter_route: Arc::default(),
        };
        if !bus.stores_dead_letters(&config.dead_letter_subject).await {
            tracing::info!(
                subject = %config.dead_letter_subject,
                "no JetStream stream stores the dead letters for now: they are published on \
                 NATS core, at most once, to whoever subscribes (see `bus.dead_letter_stream`)"
            );
        }
        Ok(bus)
    }

    /// Whether a stream stores the dead letters, on `subject`, as the
    /// server said at most `DEAD_LETTER_ROUTE_TTL` ago (a stream can be made
    /// or deleted while the node runs). When the server cannot say, the
    /// answer is yes: the dead letter then takes the JetStream path, which
    /// retries.
    pub(crate) async fn stores_dead_letters(&self, subject: &str) -> bool {
        let forgotten = {
            let route = self.route();
            if let Some((at, stored)) = route.known
                && at.elapsed() < DEAD_LETTER_ROUTE_TTL
            {
                return stored;
            }
            route.forgotten
        };
        let stored = match self.admin.stream_by_subject(subject).await {
            Ok(_) => true,
            Err(err) => err.kind() != GetStreamByNameErrorKind::NotFound,
        };
        let mut route = self.route();
        if route.forgotten == forgotten {
            route.known = Some((Instant::now(), stored));
        }
        stored
    }

    fn route(&self) -> std::sync::MutexGuard<'_, DeadLetterRoute> {
        self.dead_letter_route
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A dead letter failed on the route last found: the next one asks the
    /// server again.
    pub(crate) fn forget_dead_letter_route(&self) {
        let mut route = self.route();
        route.known = None;
        route.forgotten += 1;
    }

    /// The JetStream context of the API calls (and of acks).
    pub(crate) fn context(&self) -> &Context {
        &self.admin
    }

    pub(crate) fn core(&self) -> &NatsBus {
        &self.core
    }

    pub(crate) async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        let (subject, payload, mut headers) = message.into_parts();
        subject::check_publish(&subject)?;
        let subject = to_subject(subject);
        if headers.get(MESSAGE_ID).is_none() {
            headers.insert(MESSAGE_ID, super::unique_id());
        }
        let headers = to_nats(&headers)?;
        let deadline = crate::rpc::deadline::after(self.publish_timeout).into_std();
        let mut wait = FIRST_RETRY_WAIT;
        loop {
            let attempt = async {
                self.publisher
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?
                    .await
            };
            let err = match attempt.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(%subject, stream = %ack.stream, "duplicate message id; stored once");
                    }
                    return Ok(());
                }
                Err(err) => err,
            };
            let kind = err.kind();
            if kind == PublishErrorKind::MaxPayloadExceeded {
                return Err(Error::payload_too_large(format!(
                    "JetStream refused the message on `{subject}`: {err}"
                ))
                .with_source(err));
            }
            if matches!(
                kind,
                PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence
            ) {
                return Err(Error::invalid_argument(format!(
                    "JetStream refused the message on `{subject}`: {err}"
                ))
                .with_source(err));
            }
            if Instant::now() + wait >= deadline {
                let what = if kind == PublishErrorKind::StreamNotFound {
                    format!("no JetStream stream stores `{subject}` (see `bus.streams`)")
                } else {
                    format!("JetStream did not confirm the message on `{subject}` ({err})")
                };
                return Err(Error::unavailable(format!(
                    "{what} within {:?}",
                    self.publish_timeout
                ))
                .with_source(err));
            }
            tracing::debug!(%subject, error = %err, "publish not confirmed; sending it again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(ATTEMPT_TIMEOUT);
        }
    }

    /// The configured stream (`bus.streams`, the dead letters') that stores
    /// every subject `pattern` matches, if one does.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `pattern` is not a subject pattern.
    pub(crate) fn stream_storing(&self, pattern: &str) -> Result<Option<String>> {
        let pattern = Pattern::new(pattern)?;
        Ok(self
            .streams
            .iter()
            .find(|(_, subjects)| subjects.iter().any(|wide| pattern.is_covered_by(wide)))
            .map(|(name, _)| name.clone()))
    }

    /// Creates or updates the durable pull consumer `durable` filtering
    /// `subject` on the stream that stores it. A new consumer starts where
    /// `policy.deliver` says; one that exists keeps its place (JetStream
    /// refuses to change where a consumer started).
    ///
    /// # Errors
    ///
    /// `FailedPrecondition` when no stream stores the subject, `Unavailable`
    /// when the server refuses or does not answer.
    pub(crate) async fn consumer(
        &self,
        durable: &str,
        filter: &str,
        policy: &DeliveryPolicy,
    ) -> Result<PullConsumer> {
        let configured = self.stream_storing(filter)?;
        let stream = match configured {
            Some(name) => name,
            None => self.admin.stream_by_subject(filter).await.map_err(|err| {
                Error::failed_precondition(format!(
                    "no JetStream stream stores `{filter}` for durable consumer `{durable}`; add one under `bus.streams`"
                ))
                .with_source(err)
            })?,
        };
        let deliver_policy = self.deliver_policy(durable, &stream, policy).await?;
        let config = pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter.to_owned(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy,
            ack_wait: policy.ack_wait,
            max_deliver: -1,
            ..pull::Config::default()
        };
        self.admin
            .create_consumer_on_stream(config, stream.as_str())
            .await
            .map_err(|err| {
                Error::unavailable(format!(
                    "cannot create or update durable consumer `{durable}` on stream `{stream}`: {err}"
                ))
                .with_source(err)
            })
    }

    /// Where the durable consumer `durable` on `stream` starts: its own
    /// place when it exists, else where `policy` says.
    async fn deliver_policy(
        &self,
        durable: &str,
        stream: &str,
        policy: &DeliveryPolicy,
    ) -> Result<DeliverPolicy> {
        let configured = match policy.deliver {
            DeliverFrom::All => DeliverPolicy::All,
            DeliverFrom::New => DeliverPolicy::New,
        };
        match self
            .admin
            .get_consumer_from_stream::<pull::Config, _, _>(durable, stream)
            .await
        {
            Ok(existing) => {
                let kept = existing.cached_info().config.deliver_policy;
                if kept != configured {
                    tracing::info!(
                        durable,
                        stream,
                        kept = ?kept,
                        configured = ?policy.deliver,
                        "durable consumer exists: it keeps its place, whatever `deliver` says"
                    );
                }
                Ok(kept)
            }
            Err(err) if is_not_found(&err) => Ok(configured),
            Err(err) => Err(Error::unavailable(format!(
                "cannot read durable consumer `{durable}` on stream `{stream}`: {err}"
            ))
            .with_source(err)),
        }
    }
}

/// Whether `err` says the consumer does not exist.
fn is_not_found(err: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(
        err.kind(),
        async_nats::jetstream::stream::ConsumerErrorKind::JetStream(error)
            if error.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}

fn stream_config(name: &str, stream: &StreamConfig) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: stream.subjects.clone(),
        storage: match stream.storage {
            StreamStorage::Memory => stream::StorageType::Memory,
            StreamStorage::File => stream::StorageType::File,
        },
        duplicate_window: stream.duplicate_window,
        max_age: stream.max_age,
        max_messages: i64::try_from(stream.max_messages)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(-1),
        num_replicas: stream.replicas,
        ..stream::Config::default()
    }
}
