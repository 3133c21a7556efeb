//! The node: one process hosting services on one port, from start to a
//! graceful stop.
//!
//! ```no_run
//! use room619::{config::Config, node::Node, service::ServiceBuilder};
//!
//! # async fn run() -> room619::Result<()> {
//! let echo = ServiceBuilder::new("echo", "1.0.0")?
//!     .route("/v1/echo", axum::routing::post(|body: String| async move { body }))
//!     .build()?;
//! Node::builder()
//!     .config(Config::load()?)
//!     .service(echo)
//!     .build()?
//!     .run() // until SIGTERM or Ctrl-C, then a graceful drain
//!     .await
//! # }
//! ```
//!
//! # Lifecycle
//!
//! **Start** ([`Node::start`]): bind the listeners → assemble routes (gRPC
//! services, health, reflection; HTTP routes and admin endpoints) → run each
//! service's start hooks in order (each service's bounded by
//! `node.start_timeout`) → mark running: readiness answers `200` and
//! the gRPC health service `SERVING` for the running services, then as
//! their health checks say (a round run beside the start, then every 5 s
//! and for `/health/ready` calls) → accept connections.
//!
//! **Stop** (a signal, or [`NodeHandle::shutdown`]): readiness `503` and gRPC
//! health `NOT_SERVING` at once → keep accepting for `node.shutdown_delay`
//! (so load balancers notice) → end open gRPC health `Watch` streams and stop
//! accepting (new connections are refused) → let in-flight requests finish,
//! for at most `node.drain_timeout`, then close what is left → run stop
//! hooks in reverse start order (one that fails or panics does not keep the
//! others from running) → done.
//!
//! # Hardening
//!
//! Every limit in [`Limits`](crate::config::Limits) is applied here: the
//! first-byte timeout on new connections, the HTTP/1 header read timeout (a
//! connection quiet that long is closed) and header size, HTTP/2 stream and
//! header-list limits, gRPC message sizes and the HTTP body limit.

mod app;
mod dynamic;
pub(crate) mod fast;
mod handle;
mod health;
mod live;
mod registry;
mod reload;
mod serve;
mod signal;
mod start;
mod stop;
mod watch;
mod wiring;

use std::{collections::HashSet, fmt, net::SocketAddr, sync::Arc};

pub(crate) use app::ADMIN_PATHS;
pub use handle::{NodeHandle, RunningNode};
pub use health::{LIVE_PATH, Phase, READY_PATH};
pub use registry::REGISTRY_PATH;
pub use signal::shutdown_signal;
use tokio::net::TcpListener;

use crate::{
    Error, Result,
    config::{Config, ConfigError},
    service::{Registry, Service},
};

/// A node ready to start: its configuration and the services it hosts.
///
/// Made with [`Node::builder`].
pub struct Node {
    config: Arc<Config>,
    registry: Registry,
    reload: Option<reload::ReloadSource>,
}

impl Node {
    /// A builder with the default configuration and no services.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Starts the node and serves until Ctrl-C or SIGTERM, then shuts down
    /// gracefully; a second signal cuts the shutdown short
    /// ([`RunningNode::stop_on_signal`]).
    ///
    /// # Errors
    ///
    /// When a listener cannot bind, routes cannot be assembled, a start hook
    /// fails, a stop hook fails during shutdown, or a second signal cut the
    /// shutdown short.
    pub async fn run(self) -> Result<()> {
        self.start().await?.stop_on_signal().await
    }

    /// Binds, starts every service and begins serving; returns a
    /// [`RunningNode`] to learn the bound addresses and to stop it.
    ///
    /// # Errors
    ///
    /// When a listener cannot bind, routes cannot be assembled (conflicting
    /// routes, a gRPC service hosted twice) or a start hook fails, panics
    /// or overruns `node.start_timeout` (`DeadlineExceeded`); services
    /// started before the failure are stopped again.
    pub async fn start(self) -> Result<RunningNode> {
        let listener = bind(self.config.node.listen, "node.listen").await?;
        let admin = match self.config.node.admin_listen {
            Some(addr) => Some(bind(addr, "node.admin_listen").await?),
            None => None,
        };
        start::start(self.config, self.registry, listener, admin, self.reload).await
    }

    /// The node's configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.config.node.name)
            .field("services", &self.registry)
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        Error::unavailable(format!("cannot listen on {addr} (`{key}`): {err}")).with_source(err)
    })
}

/// Builds a [`Node`]: its configuration and services.
///
/// Defaults: [`Config::default`], no services.
#[derive(Default)]
#[must_use]
pub struct NodeBuilder {
    config: Config,
    services: Vec<Arc<dyn Service>>,
    reload: Option<reload::ReloadSource>,
    adjust: Option<reload::Adjust>,
}

impl NodeBuilder {
    /// Uses this configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Watches the config file at `path` while the node runs (checked every
    /// `node.config_poll_interval`): a valid change is reloaded from the same
    /// sources as at start (the file, the `ROOM619_*` environment, then
    /// `overrides`) and applied live; an invalid one is logged and counted
    /// (see [`LiveConfig`](crate::config::LiveConfig)) and the running
    /// configuration stays. A change is a difference from the file as it is
    /// when this is called, so an edit made while the node starts is applied
    /// once it runs; changes the application makes in code to the loaded
    /// configuration belong in [`adjust_reloads`](Self::adjust_reloads).
    /// Default: no file is watched.
    ///
    /// ```no_run
    /// use room619::{Node, config::{ConfigLoader, Overrides}};
    ///
    /// # async fn demo() -> room619::Result<()> {
    /// let config = ConfigLoader::new().file("room619.toml").load()?;
    /// Node::builder()
    ///     .config(config)
    ///     .watch_config("room619.toml", Overrides::new())
    ///     .build()?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn watch_config(
        mut self,
        path: impl Into<std::path::PathBuf>,
        overrides: crate::config::Overrides,
    ) -> Self {
        let path = path.into();
        // Changes are measured against the file as it is now: an edit made
        // while the node starts is not missed.
        let baseline = std::fs::read(&path).ok();
        self.reload = Some(reload::ReloadSource {
            path,
            overrides,
            baseline,
            adjust: None,
        });
        self
    }

    /// Adjusts each configuration a reload ([`watch_config`](Self::watch_config))
    /// loads, before it is checked and applied: `adjust` makes again the
    /// changes the application made in code to the configuration it started
    /// with (keys it trusts, defaults of its own), which the file does not
    /// hold and a reload would otherwise drop. Default: none.
    ///
    /// ```no_run
    /// use room619::{Node, config::{Config, ConfigLoader, Overrides}};
    ///
    /// /// Rate limits of the application's own, unless the file sets some.
    /// fn own_defaults(config: &mut Config) {
    ///     if config.rate_limit.rules.is_empty() {
    ///         // config.rate_limit.rules = ...;
    ///     }
    /// }
    ///
    /// # async fn demo() -> room619::Result<()> {
    /// let mut config = ConfigLoader::new().file("room619.toml").load()?;
    /// own_defaults(&mut config);
    /// Node::builder()
    ///     .config(config)
    ///     .watch_config("room619.toml", Overrides::new())
    ///     .adjust_reloads(own_defaults)
    ///     .build()?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn adjust_reloads(mut self, adjust: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.adjust = Some(reload::Adjust::new(adjust));
        self
    }

    /// Hosts a service (subject to `node.services`, which may select a subset).
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Hosts an already shared service.
    pub fn shared_service(mut self, service: Arc<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// Checks the configuration and the service set and makes the node.
    ///
    /// # Errors
    ///
    /// `Config` when the configuration is invalid or `node.services` names a
    /// service that was not added; `AlreadyExists` when two services share a
    /// name and major version.
    pub fn build(self) -> Result<Node> {
        self.config.validate()?;
        let wanted: HashSet<&str> = self
            .config
            .node
            .services
            .iter()
            .map(String::as_str)
            .collect();
        let known: HashSet<&str> = self
            .services
            .iter()
            .map(|s| s.descriptor().name())
            .collect();
        if let Some(unknown) = self
            .config
            .node
            .services
            .iter()
            .find(|name| !known.contains(name.as_str()))
        {
            let mut known: Vec<&str> = known.into_iter().collect();
            known.sort_unstable();
            return Err(ConfigError::new(
                "node.services",
                format!(
                    "no service called `{unknown}` (known: {})",
                    known.join(", ")
                ),
            )
            .into());
        }
        let registry = Registry::default();
        for service in self.services {
            if wanted.is_empty() || wanted.contains(service.descriptor().name()) {
                registry.register(service)?;
            }
        }
        let reload = self.reload.map(|source| reload::ReloadSource {
            adjust: self.adjust,
            ..source
        });
        Ok(Node {
            config: Arc::new(self.config),
            registry,
            reload,
        })
    }
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.config.node.name)
            .field(
                "services",
                &self
                    .services
                    .iter()
                    .map(|s| s.descriptor())
                    .collect::<Vec<_>>(),
            )
            .field("reload", &self.reload)
            .field("adjust", &self.adjust)
            .finish()
    }
}
