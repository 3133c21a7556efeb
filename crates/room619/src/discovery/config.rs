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
    /// DNS names resolved on an interval, e.g. Kubernetes headless services
    /// (feature `dns`); the node's own services are known in-process only.
    Dns,
}

impl DiscoveryBackend {
    /// The name used in configuration and reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Static => "static",
            Self::Nats => "nats",
            Self::Dns => "dns",
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
    /// How many servers of a NATS cluster keep the bucket, when this node
    /// creates it (1 to 5; an odd number, 3 in production, survives a
    /// server going away; a single server takes only 1). A bucket that
    /// exists keeps its own. Default: `1`.
    pub replicas: usize,
}

impl Default for NatsDiscoveryConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            bucket: "room619_instances".to_owned(),
            ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            replicas: 1,
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
        if !(1..=5).contains(&self.replicas) {
            return Err((
                "replicas",
                format!(
                    "must be 1 to 5, as JetStream allows (got {})",
                    self.replicas
                ),
            ));
        }
        Ok(())
    }
}

/// The DNS registry (feature `dns`): the instances of each listed service
/// are the addresses its name resolves to, looked up again every `interval`;
/// the way to find the pods behind a Kubernetes headless service.
///
/// ```toml
/// [discovery]
/// backend = "dns"
/// [[discovery.dns.services]]
/// name = "users"
/// version = "1.4.0"
/// host = "users.default.svc.cluster.local"   # A/AAAA: every address, at `port`
/// port = 8080
/// [[discovery.dns.services]]
/// name = "orders"
/// version = "2.0.0"
/// host = "_grpc._tcp.orders.default.svc.cluster.local"
/// srv = true                                  # SRV: targets and their ports
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsDiscoveryConfig {
    /// The DNS server to ask, as `ip:port`. Default: the system's resolver
    /// configuration (`/etc/resolv.conf`).
    pub nameserver: Option<std::net::SocketAddr>,
    /// How often every name is resolved again. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The services found through DNS. Default: none.
    pub services: Vec<DnsServiceConfig>,
}

impl Default for DnsDiscoveryConfig {
    fn default() -> Self {
        Self {
            nameserver: None,
            interval: Duration::from_secs(10),
            services: Vec::new(),
        }
    }
}

/// One service found through DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServiceConfig {
    /// The service's name.
    pub name: String,
    /// The version its instances run (DNS does not say).
    pub version: String,
    /// The name to resolve.
    pub host: String,
    /// The port of every address (A/AAAA lookups). Default: `8080`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Whether `host` is an SRV name whose records give targets and ports.
    /// Default: `false`.
    #[serde(default)]
    pub srv: bool,
}

fn default_port() -> u16 {
    8080
}

impl DnsDiscoveryConfig {
    /// Checks the values; the error is `(key under discovery.dns, problem)`.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.interval.is_zero() {
            return Err(("interval".to_owned(), "must be longer than zero".to_owned()));
        }
        for (index, service) in self.services.iter().enumerate() {
            let key = |field: &str| format!("services.{index}.{field}");
            if let Err(err) =
                crate::service::ServiceDescriptor::new(&service.name, &service.version)
            {
                let field = if semver::Version::parse(&service.version).is_err() {
                    "version"
                } else {
                    "name"
                };
                return Err((key(field), err.message().to_owned()));
            }
            if service.host.trim().is_empty() {
                return Err((key("host"), "must not be empty".to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NatsDiscoveryConfig;

    #[test]
    fn bucket_replicas_are_one_to_five() {
        for replicas in 1..=5 {
            let config = NatsDiscoveryConfig {
                replicas,
                ..NatsDiscoveryConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{replicas}");
        }
        for replicas in [0, 6] {
            let config = NatsDiscoveryConfig {
                replicas,
                ..NatsDiscoveryConfig::default()
            };
            let (key, problem) = config.validate().unwrap_err();
            assert_eq!(key, "replicas");
            assert!(problem.contains("1 to 5"), "{problem}");
        }
    }
}
