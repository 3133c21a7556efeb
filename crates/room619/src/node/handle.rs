//! Starting a node, the [`RunningNode`] it becomes, and the [`NodeHandle`]
//! that stops it.

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    app::{self, Hosted},
    dynamic::{self, Hosting},
    health::{Phase, Readiness},
    live::LiveSplit,
    reload::{self, ReloadSource},
    serve::Signals,
    wiring,
};
use crate::{
    Error, Result,
    bus::{MessageBus, Subscribers},
    config::{Config, LiveConfig},
    observability::metrics::Metrics,
    rpc::client::{Clients, GrpcClient, HttpClient, RpcChannel},
    service::{Registry, ServiceState},
};

/// A started node. Dropping it leaves the node running; call
/// [`wait`](Self::wait) or [`shutdown`](Self::shutdown) to see it end.
pub struct RunningNode {
    handle: NodeHandle,
    task: JoinHandle<Result<()>>,
}

impl RunningNode {
    /// A handle to the node, to pass to whoever should be able to stop it.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The address the main listener is bound to (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Waits until the node has stopped (after a signal or
    /// [`NodeHandle::shutdown`]).
    ///
    /// # Errors
    ///
    /// The first failing stop hook's error, or `Internal` if the node's task
    /// panicked.
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|err| Error::internal("the node's lifecycle task failed").with_source(err))?
    }

    /// Starts a graceful shutdown and waits for it to finish.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub async fn shutdown(self) -> Result<()> {
        self.handle.shutdown();
        self.wait().await
    }
}

impl fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningNode")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    readiness: Readiness,
    registry: Registry,
    clients: Clients,
    bus: MessageBus,
    rate_limiter: Arc<crate::middleware::rate_limit::RateLimiter>,
    metrics: Metrics,
    hosting: Arc<Hosting>,
}

impl NodeHandle {
    /// A typed gRPC client of service `name` matching semver `requirement`;
    /// see [`ServiceContext::client`](crate::ServiceContext::client).
    ///
    /// # Errors
    ///
    /// As [`ServiceContext::client`](crate::ServiceContext::client).
    pub fn client<C: GrpcClient>(&self, name: &str, requirement: &str) -> Result<C> {
        Ok(C::from_channel(self.channel(name, requirement)?))
    }

    /// The channel to service `name` matching `requirement`, for any
    /// generated client's `new`.
    ///
    /// # Errors
    ///
    /// As [`ServiceContext::client`](crate::ServiceContext::client).
    pub fn channel(&self, name: &str, requirement: &str) -> Result<RpcChannel> {
        self.inner.clients.channel(name, requirement)
    }

    /// A REST client of service `name` matching `requirement`.
    ///
    /// # Errors
    ///
    /// As [`ServiceContext::client`](crate::ServiceContext::client).
    pub fn http_client(&self, name: &str, requirement: &str) -> Result<HttpClient> {
        self.inner.clients.http(name, requirement)
    }

    /// The node's message bus (what [`ServiceContext::bus`](crate::ServiceContext::bus) returns).
    #[must_use]
    pub fn bus(&self) -> &MessageBus {
        &self.inner.bus
    }

    /// The node's metrics registry (what [`ServiceContext::metrics`](crate::ServiceContext::metrics) returns).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Begins a graceful shutdown; returns at once. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// The address serving gRPC and HTTP.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The node's rate limiter: [`update`](crate::middleware::rate_limit::RateLimiter::update)
    /// swaps its rules at run time.
    #[must_use]
    pub fn rate_limiter(&self) -> &crate::middleware::rate_limit::RateLimiter {
        &self.inner.rate_limiter
    }

    /// The admin listener's address, when it has its own.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// Where the node is in its lifecycle.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.inner.readiness.phase()
    }

    /// The services the node hosts.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// What the node hosts, changeable while it runs.
    pub(super) fn hosting(&self) -> &Arc<Hosting> {
        &self.inner.hosting
    }
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle")
            .field("local_addr", &self.inner.local_addr)
            .field("admin_addr", &self.inner.admin_addr)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

pub(super) async fn start(
    config: Arc<Config>,
    registry: Registry,
    listener: TcpListener,
    admin: Option<TcpListener>,
    reload: Option<ReloadSource>,
) -> Result<RunningNode> {
    let live_config = LiveConfig::from_shared(Arc::clone(&config));
    let bus = MessageBus::connect_as(&config.bus, &config.node.name).await?;
    let (metrics, observed) = wiring::metrics(&config, &bus);
    let shutdown = CancellationToken::new();
    let (discovery, discovery_shutdown, clients) =
        wiring::connect_clients(&config, &registry, observed.clone()).await?;
    let hosted = wiring::host_all(&registry, &live_config, &shutdown, &clients, &bus, &metrics);
    let assembled = app::assemble(&config, &registry, &hosted, &metrics, None)?;
    clients.set_local(assembled.local);
    let readiness = assembled.readiness;
    readiness.set_discovery(Arc::clone(&discovery));
    readiness.set_phase(Phase::Starting).await;
    assembled.middleware.start(&shutdown).await?;
    let targets = reload::Targets {
        live: live_config.clone(),
        discovery: Arc::clone(&discovery),
        rate_limiter: assembled.middleware.rate_limiter(),
        metrics: observed,
    };
    wiring::follow_changes(reload, targets, &shutdown).await;

    let subscribers = Subscribers::new(shutdown.child_token());
    start_services(&registry, &hosted, &bus, &config, &subscribers).await?;

    let local_addr = listener.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let signals = Signals::default();
    let tracker = TaskTracker::new();
    let live = LiveSplit::new(assembled.main);
    wiring::spawn_listeners(
        &config,
        (listener, live.clone()),
        admin.zip(assembled.admin),
        &signals,
        &tracker,
    );
    readiness.set_phase(Phase::Running).await;
    let advertised = dynamic::advertised(&config, local_addr);
    let instances = match dynamic::register(&config, discovery.as_ref(), &hosted, &advertised).await
    {
        Ok(instances) => instances,
        Err(err) => {
            for token in [&shutdown, &signals.drain, &discovery_shutdown] {
                token.cancel();
            }
            undo_start(&registry, &hosted, config.node.drain_timeout).await;
            return Err(err);
        }
    };
    wiring::announce(&config, local_addr, admin_addr, hosted.len());

    let hosting = Arc::new(Hosting {
        config: Arc::clone(&config),
        live_config,
        registry: registry.clone(),
        hosted: Mutex::new(hosted),
        instances: Mutex::new(instances),
        live,
        readiness: readiness.clone(),
        middleware: assembled.middleware.clone(),
        metrics: metrics.clone(),
        clients: clients.clone(),
        discovery: Arc::clone(&discovery),
        bus: bus.clone(),
        shutdown: shutdown.clone(),
        advertised,
        changing: tokio::sync::Mutex::new(()),
    });
    let handle = NodeHandle {
        inner: Arc::new(HandleInner {
            local_addr,
            admin_addr,
            shutdown: shutdown.clone(),
            readiness: readiness.clone(),
            registry: registry.clone(),
            clients,
            bus: bus.clone(),
            rate_limiter: assembled.middleware.rate_limiter(),
            metrics,
            hosting: Arc::clone(&hosting),
        }),
    };
    let stop = Stop {
        hosting,
        discovery_shutdown,
        config,
        registry,
        readiness,
        signals,
        tracker,
        subscribers,
        bus,
    };
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.run().await
    });
    Ok(RunningNode { handle, task })
}

/// What the shutdown sequence needs.
struct Stop {
    /// The hosted services and their registrations (withdrawn before draining).
    hosting: Arc<Hosting>,
    discovery_shutdown: CancellationToken,
    config: Arc<Config>,
    registry: Registry,
    readiness: Readiness,
    signals: Signals,
    tracker: TaskTracker,
    subscribers: Subscribers,
    bus: MessageBus,
}

impl Stop {
    async fn run(self) -> Result<()> {
        let node = &self.config.node;
        tracing::info!(node = %node.name, "shutting down: not ready");
        self.readiness.set_phase(Phase::Draining).await;
        // No service is added or removed from here on.
        let _no_more_changes = self.hosting.changing.lock().await;
        for instance in &self.hosting.instances() {
            if let Err(err) = self.hosting.discovery.deregister(instance).await {
                tracing::warn!(?instance, error = ?err, "cannot deregister");
            }
        }
        let hosted = self.hosting.hosted();
        for host in &hosted {
            self.registry
                .set_state(host.ctx.descriptor(), ServiceState::Stopping);
        }
        if !node.shutdown_delay.is_zero() {
            tokio::time::sleep(node.shutdown_delay).await;
        }
        tracing::info!("no longer accepting connections or messages; draining in-flight work");
        tokio::join!(
            self.drain_connections(),
            self.subscribers.drain(node.drain_timeout)
        );
        let result = stop_services(&self.registry, hosted.iter().rev(), node.drain_timeout).await;
        if let Err(err) = self.bus.flush().await {
            tracing::warn!(error = ?err, "the message bus could not flush");
        }
        self.discovery_shutdown.cancel();
        #[cfg(feature = "otel")]
        crate::observability::tracing::flush_installed().await;
        self.readiness.set_phase(Phase::Stopped).await;
        tracing::info!(node = %node.name, "node stopped");
        result
    }
}

impl Stop {
    /// Stops accepting and lets open connections finish, for at most
    /// `node.drain_timeout`, then closes the rest.
    async fn drain_connections(&self) {
        let node = &self.config.node;
        self.signals.drain.cancel();
        self.tracker.close();
        if tokio::time::timeout(node.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?node.drain_timeout,
                open = self.tracker.len(),
                "drain timeout passed; closing the connections still open"
            );
            self.signals.force_close.cancel();
            self.tracker.wait().await;
        }
    }
}

/// Runs the start hooks in order, then subscribes the subscribers; on a
/// failure, stops what was started and returns the error.
async fn start_services(
    registry: &Registry,
    hosted: &[Hosted],
    bus: &MessageBus,
    config: &Config,
    subscribers: &Subscribers,
) -> Result<()> {
    let timeout = config.node.drain_timeout;
    for (index, host) in hosted.iter().enumerate() {
        registry.set_state(host.ctx.descriptor(), ServiceState::Starting);
        if let Err(err) = host.service.start(host.ctx.clone()).await {
            tracing::error!(service = %host.ctx.descriptor(), error = ?err, "start hook failed");
            registry.set_state(host.ctx.descriptor(), ServiceState::Failed);
            undo_start(registry, &hosted[..index], timeout).await;
            return Err(err);
        }
        registry.set_state(host.ctx.descriptor(), ServiceState::Running);
    }
    if let Err(err) = start_subscribers(bus, config, hosted, subscribers).await {
        tracing::error!(error = ?err, "a subscriber could not start");
        subscribers.drain(timeout).await;
        undo_start(registry, hosted, timeout).await;
        return Err(err);
    }
    Ok(())
}

/// Stops the services started before a failed start, in reverse.
async fn undo_start(registry: &Registry, started: &[Hosted], timeout: Duration) {
    if let Err(err) = stop_services(registry, started.iter().rev(), timeout).await {
        tracing::error!(error = ?err, "stopping after a failed start also failed");
    }
}

/// Subscribes the declared subscribers of every hosted service, in order.
async fn start_subscribers(
    bus: &MessageBus,
    config: &Config,
    hosted: &[Hosted],
    subscribers: &Subscribers,
) -> Result<()> {
    for host in hosted {
        for subscriber in host.service.subscribers() {
            let (spec, handler) = subscriber.bind(host.ctx.clone(), &config.bus);
            subscribers.start(bus, spec, handler).await?;
        }
    }
    Ok(())
}

/// Runs stop hooks in the given order, each bounded by `timeout`; every hook
/// runs even when an earlier one fails, and the first error is returned.
async fn stop_services<'a>(
    registry: &Registry,
    hosted: impl Iterator<Item = &'a Hosted>,
    timeout: Duration,
) -> Result<()> {
    let mut first_error = None;
    for host in hosted {
        let descriptor = host.ctx.descriptor();
        let outcome = match tokio::time::timeout(timeout, host.service.stop(host.ctx.clone())).await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::deadline_exceeded(format!(
                "stop hook of {descriptor} took longer than {timeout:?}"
            ))),
        };
        match outcome {
            Ok(()) => registry.set_state(descriptor, ServiceState::Stopped),
            Err(err) => {
                tracing::error!(service = %descriptor, error = ?err, "stop hook failed");
                registry.set_state(descriptor, ServiceState::Failed);
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
