//! [`BusConfig`]: the `[bus]` section — which backend, where it is, and how
//! messages are delivered, retried and given up.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::subject::{self, Pattern};
use crate::rpc::codec::Format;

/// The `[bus]` section of the configuration.
///
/// ```toml
/// [bus]
/// backend = "jetstream"                 # memory | nats | jetstream
/// url = "nats://127.0.0.1:4222"
///
/// [bus.streams.ORDERS]                  # created or updated at start
/// subjects = ["orders.>"]
/// duplicate_window = "2m"
///
/// [bus.consumers.billing]               # the durable consumer `billing`
/// max_deliver = 3
/// initial_backoff = "500ms"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Which backend carries the messages. Default: `memory`.
    pub backend: BusBackend,
    /// The NATS server(s) for the `nats` and `jetstream` backends,
    /// comma-separated. Default: `nats://127.0.0.1:4222`.
    pub url: String,
    /// In memory: messages queued per subscriber before `publish` waits for
    /// room (back-pressure). Default: `1024`. (On NATS core, which delivers
    /// at most once, the client holds up to 65 536 messages for a
    /// subscriber that does not keep up, then drops what arrives and logs a
    /// warning: size handlers and `max_in_flight` for the traffic, or use
    /// JetStream.)
    pub capacity: usize,
    /// NATS and JetStream: messages queued for the node's connection before
    /// `publish` waits for room (back-pressure). A deeper queue lets the
    /// connection write larger batches when publishers outrun it (a burst of
    /// publishes ran ~14 % faster with `16384` than with async-nats's
    /// `2048`, docs/PERFORMANCE.md); each queued message holds its payload
    /// until written. Default: `16384`.
    pub publish_queue: usize,
    /// How long `publish` may take: waiting for room in memory or in the
    /// NATS connection's queue (full while the server is away), or for the
    /// JetStream server's ack (retrying through a reconnect). Also bounds a
    /// subscription's round trip to the server. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How `publish` encodes typed messages. Default: `json`.
    pub format: MessageFormat,
    /// Where messages go that are given up: undecodable ones at once, failing
    /// ones after `max_deliver` attempts. Default: `room619.dead-letter`.
    pub dead_letter_subject: String,
    /// JetStream: the stream created to keep dead letters (listening on
    /// `dead_letter_subject`); empty for none, and then, unless a stream made
    /// elsewhere stores that subject, dead letters go out on NATS core (at
    /// most once). It is made with a stream's defaults (one replica, kept
    /// for ever); to choose its replicas or its retention, configure it
    /// under `streams` by this name, with `dead_letter_subject` among its
    /// subjects. Default: `DEAD_LETTERS`.
    pub dead_letter_stream: String,
    /// Delivery of every subscriber without an entry in `consumers`.
    pub delivery: DeliveryPolicy,
    /// JetStream streams, by name, created or updated at start. Default: none.
    pub streams: BTreeMap<String, StreamConfig>,
    /// Delivery of durable consumers, by durable name (keys not given take the
    /// built-in defaults, not `delivery`). Default: none.
    pub consumers: BTreeMap<String, DeliveryPolicy>,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: BusBackend::Memory,
            url: "nats://127.0.0.1:4222".to_owned(),
            capacity: 1024,
            publish_queue: 16_384,
            publish_timeout: Duration::from_secs(5),
            format: MessageFormat::Json,
            dead_letter_subject: "room619.dead-letter".to_owned(),
            dead_letter_stream: "DEAD_LETTERS".to_owned(),
            delivery: DeliveryPolicy::default(),
            streams: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }
}

/// The bus backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BusBackend {
    /// In this process only: bounded queues, at most once.
    #[default]
    Memory,
    /// NATS core: across processes, at most once (feature `nats`).
    Nats,
    /// NATS JetStream: durable consumers are at least once; streams, acks,
    /// redelivery, dead letters, deduplication (feature `nats`).
    #[serde(rename = "jetstream")]
    JetStream,
}

/// The wire format of typed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MessageFormat {
    /// `application/json`.
    #[default]
    Json,
    /// `application/x-protobuf`.
    Protobuf,
}

impl MessageFormat {
    /// The codec format.
    #[must_use]
    pub fn format(self) -> Format {
        match self {
            Self::Json => Format::Json,
            Self::Protobuf => Format::Protobuf,
        }
    }
}

/// How a subscriber's messages are delivered, retried and given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Attempts before a failing message goes to the dead-letter subject.
    /// Default: `5`.
    pub max_deliver: u32,
    /// The wait before the second attempt; it doubles with each attempt.
    /// Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait between attempts. Default: `1m`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// JetStream: a delivery not acked within this time is delivered again
    /// (the process handling it is presumed dead). A handler that runs
    /// longer keeps its message: the subscriber tells the server every half
    /// `ack_wait` that it is still in progress, for up to `max_deliver` times
    /// `ack_wait` (a handler that hangs lets its message go). Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Handlers running at once per subscriber. On JetStream, messages are
    /// pulled only for free handlers, so `ack_wait` is the handler's time,
    /// not time spent waiting in a buffer. Default: `64`.
    pub max_in_flight: usize,
    /// JetStream: where a durable consumer starts when it is created (its
    /// first start): `all`, every message its stream holds, or `new`, only
    /// those published from then on. A consumer that exists keeps its
    /// place whatever this says. Default: `all`.
    pub deliver: DeliverFrom,
}

/// Where a new durable consumer starts reading its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliverFrom {
    /// Every message the stream holds: nothing published before the
    /// consumer existed is missed.
    #[default]
    All,
    /// Only messages published after the consumer was created: a new
    /// consumer on a long stream does not replay its history.
    New,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_deliver: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ack_wait: Duration::from_secs(30),
            max_in_flight: 64,
            deliver: DeliverFrom::All,
        }
    }
}

impl DeliveryPolicy {
    /// The wait after failed attempt number `attempt` (from 1).
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// A JetStream stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// The subjects it stores (wildcards allowed). Required.
    pub subjects: Vec<String>,
    /// Where messages are kept. Default: `file`.
    pub storage: StreamStorage,
    /// A message id seen within this window is stored once. Default: `2m`.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Messages older than this are removed; `0s` keeps them. Default: `0s`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The most messages kept (oldest removed first); `0` for no limit.
    /// Default: `0`.
    pub max_messages: u64,
    /// Copies kept in a NATS cluster. Default: `1`.
    pub replicas: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            subjects: Vec::new(),
            storage: StreamStorage::File,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            max_messages: 0,
            replicas: 1,
        }
    }
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StreamStorage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In the server's memory.
    Memory,
}

impl BusConfig {
    /// The delivery policy of a subscriber, durable or not.
    #[must_use]
    pub fn policy(&self, durable: Option<&str>) -> DeliveryPolicy {
        durable
            .and_then(|name| self.consumers.get(name))
            .copied()
            .unwrap_or(self.delivery)
    }

    /// Checks every value; the error names the key (relative to `bus`) and
    /// the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first invalid value.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: String| Err((key.to_owned(), problem));
        if self.backend != BusBackend::Memory && !cfg!(feature = "nats") {
            return fail(
                "backend",
                format!("`{:?}` needs room619's `nats` feature", self.backend).to_lowercase(),
            );
        }
        if self.backend != BusBackend::Memory && self.url.trim().is_empty() {
            return fail(
                "url",
                "must name a NATS server, such as nats://127.0.0.1:4222".to_owned(),
            );
        }
        if self.capacity == 0 {
            return fail("capacity", "must be at least 1".to_owned());
        }
        if self.publish_queue == 0 {
            return fail("publish_queue", "must be at least 1".to_owned());
        }
        if self.publish_timeout.is_zero() {
            return fail("publish_timeout", "must be longer than zero".to_owned());
        }
        if let Err(err) = subject::check_publish(&self.dead_letter_subject) {
            return fail("dead_letter_subject", err.message().to_owned());
        }
        if !self.dead_letter_stream.is_empty()
            && let Err(err) = subject::check_stored_name("stream name", &self.dead_letter_stream)
        {
            return fail("dead_letter_stream", err.message().to_owned());
        }
        self.delivery.validate("delivery")?;
        for (name, policy) in &self.consumers {
            if let Err(err) = subject::check_stored_name("durable consumer name", name) {
                return fail(&format!("consumers.{name}"), err.message().to_owned());
            }
            policy.validate(&format!("consumers.{name}"))?;
        }
        for (name, stream) in &self.streams {
            stream.validate(name)?;
        }
        if let Some(stream) = self.streams.get(&self.dead_letter_stream)
            && !stream.subjects.iter().any(|stored| {
                subject::Pattern::new(stored)
                    .is_ok_and(|pattern| pattern.matches(&self.dead_letter_subject))
            })
        {
            return fail(
                &format!("streams.{}.subjects", self.dead_letter_stream),
                format!(
                    "the dead-letter stream must store `{}` (dead_letter_subject)",
                    self.dead_letter_subject
                ),
            );
        }
        Ok(())
    }
}

impl DeliveryPolicy {
    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: &str| Err((format!("{at}.{key}"), problem.to_owned()));
        if self.max_deliver == 0 {
            return fail("max_deliver", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return fail("max_in_flight", "must be at least 1");
        }
        if self.ack_wait.is_zero() {
            return fail("ack_wait", "must be longer than zero");
        }
        if self.max_backoff < self.initial_backoff {
            return fail("max_backoff", "must be at least initial_backoff");
        }
        Ok(())
    }
}

impl StreamConfig {
    fn validate(&self, name: &str) -> Result<(), (String, String)> {
        let at = format!("streams.{name}");
        let fail = |key: &str, problem: String| Err((format!("{at}{key}"), problem));
        if let Err(err) = subject::check_stored_name("stream name", name) {
            return fail("", err.message().to_owned());
        }
        if self.subjects.is_empty() {
            return fail(".subjects", "must list at least one subject".to_owned());
        }
        for (index, pattern) in self.subjects.iter().enumerate() {
            if let Err(err) = Pattern::new(pattern) {
                return fail(&format!(".subjects.{index}"), err.message().to_owned());
            }
        }
        // JetStream's own rules, checked here so that a stream it would
        // refuse is a configuration error naming the key, not a start that
        // fails as if the server were down.
        if self.duplicate_window < Duration::from_millis(100) {
            return fail(".duplicate_window", "must be at least 100ms".to_owned());
        }
        if !self.max_age.is_zero() && self.max_age < Duration::from_millis(100) {
            return fail(
                ".max_age",
                "must be 0 (no limit) or at least 100ms".to_owned(),
            );
        }
        if !self.max_age.is_zero() && self.duplicate_window > self.max_age {
            return fail(
                ".duplicate_window",
                format!(
                    "must not be longer than max_age ({:?}): JetStream refuses such a stream",
                    self.max_age
                ),
            );
        }
        if self.replicas == 0 {
            return fail(".replicas", "must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = DeliveryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..DeliveryPolicy::default()
        };
        let waits: Vec<u128> = (1..=4).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(350));
    }

    #[test]
    fn durable_consumers_take_their_own_policy() {
        let mut config = BusConfig::default();
        let own = DeliveryPolicy {
            max_deliver: 2,
            ..DeliveryPolicy::default()
        };
        config.consumers.insert("billing".into(), own);
        assert_eq!(config.policy(Some("billing")).max_deliver, 2);
        assert_eq!(config.policy(Some("other")).max_deliver, 5);
        assert_eq!(config.policy(None).max_deliver, 5);
    }

    #[test]
    fn the_bus_section_parses_and_errors_name_the_full_key() {
        let config = crate::config::Config::from_toml_str(
            "[bus]\nformat = \"protobuf\"\npublish_queue = 64\n[bus.streams.ORDERS]\nsubjects = [\"orders.>\"]\nstorage = \"memory\"\n[bus.consumers.billing]\nmax_deliver = 3",
        )
        .unwrap();
        assert_eq!(config.bus.format, MessageFormat::Protobuf);
        assert_eq!(config.bus.publish_queue, 64);
        assert_eq!(config.bus.streams["ORDERS"].storage, StreamStorage::Memory);
        assert_eq!(config.bus.policy(Some("billing")).max_deliver, 3);
        let err = crate::config::Config::from_toml_str("[bus.streams.ORDERS]\nsubjects = []")
            .unwrap_err();
        assert_eq!(err.key(), "bus.streams.ORDERS.subjects");
        let err = crate::config::Config::from_toml_str("[bus]\nbackend = \"kafka\"").unwrap_err();
        assert_eq!(err.key(), "bus.backend");
        // A stream JetStream would refuse: the default 2-minute window is
        // longer than a 1-minute max_age.
        let err = crate::config::Config::from_toml_str(
            "[bus.streams.ORDERS]\nsubjects = [\"orders.>\"]\nmax_age = \"1m\"",
        )
        .unwrap_err();
        assert_eq!(err.key(), "bus.streams.ORDERS.duplicate_window");
        assert!(err.to_string().contains("max_age"), "{err}");
        crate::config::Config::from_toml_str(
            "[bus.streams.ORDERS]\nsubjects = [\"orders.>\"]\nmax_age = \"1m\"\nduplicate_window = \"30s\"",
        )
        .unwrap();
        let err = crate::config::Config::from_toml_str(
            "[bus.streams.ORDERS]\nsubjects = [\"orders.>\"]\nduplicate_window = \"10ms\"",
        )
        .unwrap_err();
        assert_eq!(err.key(), "bus.streams.ORDERS.duplicate_window");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let key = |config: &BusConfig| config.validate().unwrap_err().0;
        let mut config = BusConfig::default();
        config.validate().unwrap();
        config.dead_letter_subject = "dead.>".into();
        assert_eq!(key(&config), "dead_letter_subject");
        config = BusConfig::default();
        config.streams.insert(
            "ORDERS".into(),
            StreamConfig {
                subjects: vec!["orders.>".into(), "bad..subject".into()],
                ..StreamConfig::default()
            },
        );
        assert_eq!(key(&config), "streams.ORDERS.subjects.1");
        config = BusConfig::default();
        config.consumers.insert(
            "billing".into(),
            DeliveryPolicy {
                max_deliver: 0,
                ..DeliveryPolicy::default()
            },
        );
        assert_eq!(key(&config), "consumers.billing.max_deliver");
        config = BusConfig {
            publish_queue: 0,
            ..BusConfig::default()
        };
        assert_eq!(key(&config), "publish_queue");
    }
}
