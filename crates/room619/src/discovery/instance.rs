//! [`Instance`]: one running copy of a service, and the [`Change`]s a watch
//! reports.

use std::{collections::BTreeMap, fmt};

use semver::Version;
use serde::{Deserialize, Serialize};

/// The protocols a room619 node serves on its one port.
const DEFAULT_PROTOCOLS: [&str; 2] = ["grpc", "http"];

/// One running instance of a service: who it is, where it listens and
/// whether it takes traffic. This is also the JSON record stored in the NATS
/// key-value bucket, read leniently so that nodes of different room619
/// versions share a bucket through a rolling upgrade: fields it does not
/// know are ignored, and a health it does not know reads as
/// [`NotServing`](InstanceHealth::NotServing) (the instance is kept, and
/// sent nothing).
///
/// ```
/// use room619::discovery::Instance;
///
/// let users = Instance::new("users", "1.4.0".parse().unwrap(), "10.0.0.5:8080")
///     .with_metadata("zone", "eu-west-1a");
/// assert_eq!(users.metadata().get("zone").map(String::as_str), Some("eu-west-1a"));
/// assert!(users.is_serving());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    id: String,
    name: String,
    version: Version,
    address: String,
    #[serde(default = "default_protocols")]
    protocols: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    health: InstanceHealth,
}

/// Whether an instance takes traffic; clients never pick one that does not.
/// Read from a record, a value this version does not know (one a newer
/// room619 added) is [`NotServing`](Self::NotServing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "HealthRecord")]
#[non_exhaustive]
pub enum InstanceHealth {
    /// Taking traffic.
    #[default]
    Serving,
    /// Registered but not taking traffic (starting, draining, failing).
    NotServing,
}

/// [`InstanceHealth`] as a record states it, any value a newer room619 may
/// write included.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum HealthRecord {
    Serving,
    NotServing,
    #[serde(other)]
    Unknown,
}

impl From<HealthRecord> for InstanceHealth {
    fn from(health: HealthRecord) -> Self {
        match health {
            HealthRecord::Serving => Self::Serving,
            HealthRecord::NotServing | HealthRecord::Unknown => Self::NotServing,
        }
    }
}

/// What a [`watch`](super::Discovery::watch) reports about the instances of
/// one service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The whole current set: the first item of every watch, and again after
    /// the watcher fell behind and missed changes.
    Reset(Vec<Instance>),
    /// An instance appeared or changed (its health, its metadata).
    Up(Instance),
    /// An instance went away (deregistered, or its registration expired).
    Down(Instance),
}

impl Instance {
    /// An instance of `name` at `version` listening on `address` (`host:port`),
    /// serving gRPC and HTTP, healthy, with a fresh random id.
    #[must_use]
    pub fn new(name: impl Into<String>, version: Version, address: impl Into<String>) -> Self {
        Self {
            id: format!("{:016x}", fastrand::u64(..)),
            name: name.into(),
            version,
            address: address.into(),
            protocols: default_protocols(),
            metadata: BTreeMap::new(),
            health: InstanceHealth::Serving,
        }
    }

    /// The same instance under the id `id` (unique among all instances; for
    /// the NATS backend, letters, digits, `-` and `_` only).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The same instance with metadata `key` = `value` (for example `zone`
    /// or `weight`).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Takes metadata `key` out (a backend's own key, not shown to users).
    #[cfg(feature = "nats")]
    pub(crate) fn take_metadata(&mut self, key: &str) -> Option<String> {
        self.metadata.remove(key)
    }

    /// The same instance with these protocols (default: `grpc`, `http`).
    #[must_use]
    pub fn with_protocols(
        mut self,
        protocols: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The same instance with this health.
    #[must_use]
    pub fn with_health(mut self, health: InstanceHealth) -> Self {
        self.health = health;
        self
    }

    /// The instance's unique id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's version.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Where it listens, as `host:port`.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The protocols it serves (`grpc`, `http`).
    #[must_use]
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Free-form metadata such as `zone` and `weight`.
    #[must_use]
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Its health.
    #[must_use]
    pub fn health(&self) -> InstanceHealth {
        self.health
    }

    /// Whether it takes traffic.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.health == InstanceHealth::Serving
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("service", &format_args!("{}@{}", self.name, self.version))
            .field("address", &self.address)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

fn default_protocols() -> Vec<String> {
    DEFAULT_PROTOCOLS.iter().map(|&p| p.to_owned()).collect()
}
