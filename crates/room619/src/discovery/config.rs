//! The discovery settings: which backend, and each backend's own settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The registry a node registers its services in and resolves others from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DiscoveryBackend {
    /// In this process only: the node's own services plus
    /// `discovery.instances`. The default, for a single node.
    #[default]
    Local,
    /// Only the instances listed in `discovery.instances` (hot-reloaded);
    /// the node's own services are not advertised.
    Static,
    /// A NATS JetStream key-value bucket shared by every node (feature `nats`).
    Nats,
}

impl DiscoveryBackend {
    /// The name used in configuration and reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Static => "static",
            Self::Nats => "nats",
        }
    }
}

/// The NATS JetStream key-value registry: every instance is a key
/// `<service>.<instance-id>` whose value is the instance's JSON record,
/// re-put by a heartbeat every `ttl / 3`. An instance whose key is not
/// refreshed within `ttl` (its process died) disappears.
///
/// ```toml
/// [discovery]
/// backend = "nats"
/// [discovery.nats]
/// url = "nats://nats.default.svc:4222"
/// ttl = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsDiscoveryConfig {
    /// The NATS server(s), comma-separated. Default: `nats://127.0.0.1:4222`.
    pub url: String,
    /// The key-value bucket (created when missing). Default: `room619_instances`.
    pub bucket: String,
    /// How long a registration lives without a heartbeat; also the bucket's
    /// `max_age`. At least `1s`. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long connecting at start may take before the node fails to start.
    /// Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for NatsDiscoveryConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            bucket: "room619_instances".to_owned(),
            ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsDiscoveryConfig {
    /// Checks the values; the error is `(key under discovery.nats, problem)`.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.url.trim().is_empty() {
            return Err(("url", "must not be empty".to_owned()));
        }
        let bucket_ok = !self.bucket.is_empty()
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !bucket_ok {
            return Err((
                "bucket",
                format!(
                    "`{}` must be letters, digits, `-` or `_` (a JetStream bucket name)",
                    self.bucket
                ),
            ));
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(("ttl", format!("must be at least 1s (got {:?})", self.ttl)));
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout", "must be longer than zero".to_owned()));
        }
        Ok(())
    }
}
