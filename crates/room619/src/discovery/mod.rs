//! Service discovery: register and deregister instances, resolve a service
//! name and semver requirement to live instances, watch them come and go.
//!
//! Every backend keeps what it knows in an in-memory catalog, so
//! [`Discovery::resolve`] is a map lookup and [`Discovery::watch`] a
//! broadcast subscription; backends differ in how the catalog is fed:
//!
//! | `discovery.backend` | instances come from | the node's own services |
//! |---|---|---|
//! | `local` (default) | this process, plus `discovery.instances` | registered in-process |
//! | `static` | `discovery.instances` only (hot-reloaded) | not advertised |
//! | `nats` (feature `nats`) | a NATS JetStream key-value bucket, watched | a key each, refreshed by a heartbeat |
//! | `dns` (feature `dns`) | A/AAAA or SRV lookups, repeated on an interval | known in-process only |
//!
//! Instances listed in `discovery.instances` are known under every backend
//! and follow config reloads.
//!
//! ```
//! use room619::discovery::{Change, Discovery as _, Instance, LocalDiscovery};
//! use futures_util::StreamExt as _;
//!
//! # async fn demo() -> room619::Result<()> {
//! let discovery = LocalDiscovery::new(&[]);
//! let mut changes = discovery.watch("users");
//! discovery.register(Instance::new("users", "1.4.0".parse().unwrap(), "10.0.0.5:8080")).await?;
//! discovery.register(Instance::new("users", "2.0.0".parse().unwrap(), "10.0.0.6:8080")).await?;
//! let v1 = discovery.resolve("users", &"^1".parse().unwrap());
//! assert_eq!(v1.len(), 1);
//! assert_eq!(v1[0].address(), "10.0.0.5:8080");
//! assert!(matches!(changes.next().await, Some(Change::Reset(_))));
//! assert!(matches!(changes.next().await, Some(Change::Up(_))));
//! # Ok(()) }
//! ```

mod catalog;
mod config;
#[cfg(feature = "dns")]
mod dns;
mod fixed;
mod instance;
mod local;
#[cfg(feature = "nats")]
mod nats;
#[cfg(any(feature = "dns", feature = "nats"))]
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use semver::VersionReq;
use serde::Serialize;

pub use catalog::Watch;
pub(crate) use catalog::prereleases_left_out;
pub use config::{DiscoveryBackend, DnsDiscoveryConfig, DnsServiceConfig, NatsDiscoveryConfig};
#[cfg(feature = "dns")]
pub use dns::DnsDiscovery;
pub use instance::{Change, Instance, InstanceHealth};
pub use local::LocalDiscovery;
#[cfg(feature = "nats")]
pub use nats::NatsDiscovery;

use crate::{Result, config::DiscoveryConfig};

/// A service registry: where instances are registered and found.
///
/// Implementations keep a local view, so [`resolve`](Self::resolve) and
/// [`watch`](Self::watch) never wait on the network.
pub trait Discovery: Send + Sync + 'static {
    /// The backend's name (`local`, `static`, `nats`).
    fn backend(&self) -> &'static str;

    /// Announces `instance` until it is deregistered (or, for a shared
    /// registry, until this process stops refreshing it).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for an id or a service name the backend cannot
    /// store; `Unavailable` when the shared registry cannot be reached.
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<()>>;

    /// Withdraws an instance registered by this process.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the shared registry cannot be reached.
    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<()>>;

    /// The serving instances of `name` whose version matches `requirement`,
    /// newest version first.
    ///
    /// Matching is semver's, as in Cargo: a pre-release version
    /// (`2.0.0-rc.1`) matches only a requirement naming a pre-release of the
    /// same `major.minor.patch` (`>=2.0.0-rc.1`, `=2.0.0-rc.1`), never an
    /// ordinary one such as `^2`, `>=1` or `*`.
    fn resolve(&self, name: &str, requirement: &VersionReq) -> Vec<Instance>;

    /// Changes to the instances of `name` (any version, any health),
    /// starting with a [`Change::Reset`] holding the current set.
    fn watch(&self, name: &str) -> Watch;

    /// Every instance the backend knows, of every service, version and
    /// health (by name, newest version first), for inspection such as the
    /// node's `GET /registry`. Default: none.
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }

    /// Whether the backend is in touch with its source. Default: `Ok`.
    fn status(&self) -> DiscoveryStatus {
        DiscoveryStatus::Ok
    }

    /// Applies a new configuration: the listed instances are replaced by
    /// those of `config`. Default: nothing.
    fn reload(&self, _config: &DiscoveryConfig) {}
}

/// How a discovery backend is doing, as readiness reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DiscoveryStatus {
    /// In touch with its source.
    Ok,
    /// Out of touch: it answers from the last instances it knew.
    Degraded(String),
}

/// The future of [`connect`].
pub type Connecting<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Arc<dyn Discovery>>> + Send + 'a>>;

/// Connects the backend `config.backend` names. Background work (watchers,
/// heartbeats) stops when `shutdown` is cancelled.
///
/// # Errors
///
/// `Unavailable` when the NATS registry cannot be reached at start (naming
/// the URL and the `discovery.nats.url` key); `Config` when the backend needs
/// a cargo feature that is not enabled.
// A boxed future rather than an `async fn`: built without the `nats` and
// `dns` features, no backend awaits anything.
#[must_use = "the backend connects only when the future is awaited"]
pub fn connect<'a>(
    config: &'a DiscoveryConfig,
    node: &'a str,
    shutdown: tokio_util::sync::CancellationToken,
) -> Connecting<'a> {
    Box::pin(async move {
        let connected: Arc<dyn Discovery> = match config.backend {
            DiscoveryBackend::Local => Arc::new(LocalDiscovery::new(&config.instances)),
            DiscoveryBackend::Static => Arc::new(LocalDiscovery::listed_only(&config.instances)),
            #[cfg(feature = "nats")]
            DiscoveryBackend::Nats => Arc::new(
                NatsDiscovery::connect(&config.nats, &config.instances, node, shutdown).await?,
            ),
            #[cfg(feature = "dns")]
            DiscoveryBackend::Dns => {
                Arc::new(DnsDiscovery::start(&config.dns, &config.instances, shutdown).await?)
            }
            #[cfg(not(all(feature = "nats", feature = "dns")))]
            backend => {
                drop((node, shutdown));
                return Err(crate::config::ConfigError::new(
                    "discovery.backend",
                    format!("`{}` needs room619's cargo feature `{0}`", backend.as_str()),
                )
                .into());
            }
        };
        Ok(connected)
    })
}
