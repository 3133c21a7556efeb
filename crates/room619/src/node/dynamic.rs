//! Dynamic registration: services added to and removed from a running node
//! through its [`NodeHandle`](super::NodeHandle), without touching the
//! listener.
//!
//! **Add**: the service is registered, its routes assembled with the others
//! (a conflict fails the call and changes nothing), its start hook runs, then
//! the new routes are swapped in, readiness follows and the service is
//! registered in discovery.
//!
//! **Remove**: the service is withdrawn from discovery, the routes without
//! it are swapped in (new requests get `404` / `UNIMPLEMENTED`), its
//! [shutdown signal](crate::ServiceContext::shutdown_signal) fires so its
//! streams end, requests already in flight finish on the routes they
//! started with, each until its response body has been sent (waited for,
//! at most `node.drain_timeout`), then its stop hook runs and it leaves
//! the registry, even when the hook fails, panics or overruns (it can be
//! added again).
//!
//! Services with bus subscribers cannot be added at run time yet.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use semver::Version;
use tokio_util::sync::CancellationToken;

use super::{
    NodeHandle,
    app::{self, Hosted},
    health::Readiness,
    live::LiveSplit,
    start, stop,
};
use crate::{
    Error, Result,
    bus::MessageBus,
    config::{Config, LiveConfig},
    discovery::{Discovery, Instance},
    middleware::NodeMiddleware,
    observability::metrics::Metrics,
    rpc::{client::Clients, shed::LoadShedLayer},
    service::{Registry, Service, ServiceContext, ServiceDescriptor, ServiceState},
};

/// The longest a node waits for discovery to confirm that its records are
/// withdrawn, on shutdown or when a service is removed.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

impl NodeHandle {
    /// The node's service discovery (the backend `discovery.backend` chose).
    #[must_use]
    pub fn discovery(&self) -> &Arc<dyn Discovery> {
        &self.hosting().discovery
    }

    /// The node's configuration as it is now, following hot reloads.
    #[must_use]
    pub fn live_config(&self) -> &LiveConfig {
        &self.hosting().live_config
    }

    /// Adds `service` to the running node: its start hook runs, its routes
    /// start answering, readiness and discovery follow. The listener keeps
    /// running; see [`node`](super) for the details.
    ///
    /// ```no_run
    /// # async fn demo(handle: room619::NodeHandle) -> room619::Result<()> {
    /// let users = room619::ServiceBuilder::new("users", "2.0.0")?
    ///     .route("/v2/users", axum::routing::get(|| async { "[]" }))
    ///     .build()?;
    /// handle.add_service(users).await?;
    /// handle.remove_service("users", "2.0.0").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when a service with the same name and major version
    /// is hosted; `InvalidArgument` when its routes conflict with hosted ones
    /// or it has bus subscribers; the start hook's error (`Internal` when
    /// it panics, `DeadlineExceeded` past `node.start_timeout`);
    /// `Unavailable` once the node is shutting down. The node is unchanged
    /// after an error. The addition runs to its end even if the caller
    /// stops waiting; the node stays ready meanwhile (its other services
    /// serve).
    pub async fn add_service(&self, service: impl Service) -> Result<()> {
        let hosting = Arc::clone(self.hosting());
        let service: Arc<dyn Service> = Arc::new(service);
        to_the_end(async move { hosting.add(service).await }).await
    }

    /// Removes the service `name` at exactly `version` from the running
    /// node: it leaves discovery, its routes stop answering new requests,
    /// its [shutdown signal](crate::ServiceContext::shutdown_signal) fires,
    /// requests in flight finish and streams end (for at most
    /// `node.drain_timeout`), then its stop hook runs. A request routed to
    /// it just before, that reaches it only after that wait (an HTTP/2
    /// stream's task starting late), is answered `503` / `UNAVAILABLE`
    /// rather than served by a stopping service.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `version` is not semver; `NotFound` when no
    /// such service is hosted; the stop hook's error (`Internal` when it
    /// panics, `DeadlineExceeded` past `node.drain_timeout`; the service is
    /// removed anyway). The removal runs to its end even if the caller stops
    /// waiting; the node stays ready meanwhile.
    pub async fn remove_service(&self, name: &str, version: &str) -> Result<()> {
        let hosting = Arc::clone(self.hosting());
        let (name, version) = (name.to_owned(), version.to_owned());
        to_the_end(async move { hosting.remove(&name, &version).await }).await
    }
}

/// Runs `change` (an addition or a removal) to its end on a task of its own:
/// a caller that stops waiting (a timeout, an admin request cut short) must
/// not leave a service half added or half removed.
async fn to_the_end(change: impl Future<Output = Result<()>> + Send + 'static) -> Result<()> {
    tokio::spawn(change).await.unwrap_or_else(|err| {
        Err(Error::internal(format!(
            "the change of services on the node did not finish: {err}"
        )))
    })
}

/// What the node hosts, changeable while it runs.
pub(super) struct Hosting {
    pub(super) config: Arc<Config>,
    pub(super) live_config: LiveConfig,
    pub(super) registry: Registry,
    pub(super) hosted: Mutex<Vec<Hosted>>,
    /// This node's registrations in discovery.
    pub(super) instances: Mutex<Vec<Instance>>,
    pub(super) live: LiveSplit,
    pub(super) readiness: Readiness,
    /// The middleware the node started with: its keys and rate limits are
    /// kept when services come and go.
    pub(super) middleware: NodeMiddleware,
    /// The node's load-shedding permits, kept when services come and go.
    pub(super) shed: LoadShedLayer,
    pub(super) metrics: Metrics,
    pub(super) clients: Clients,
    pub(super) discovery: Arc<dyn Discovery>,
    pub(super) bus: MessageBus,
    /// The node's shutdown: it has begun.
    pub(super) shutdown: CancellationToken,
    /// The parent of the services' stop signals: the node drains (after
    /// `node.shutdown_delay`).
    pub(super) draining: CancellationToken,
    /// The address registered in discovery.
    pub(super) advertised: String,
    /// One change at a time.
    pub(super) changing: tokio::sync::Mutex<()>,
}

impl Hosting {
    /// What re-assembling keeps of the running node.
    fn existing(&self) -> app::Existing<'_> {
        app::Existing {
            readiness: &self.readiness,
            middleware: &self.middleware,
            shed: &self.shed,
        }
    }

    pub(super) fn hosted(&self) -> Vec<Hosted> {
        self.hosted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn instances(&self) -> Vec<Instance> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) async fn add(&self, service: Arc<dyn Service>) -> Result<()> {
        let _one_at_a_time = self.changing.lock().await;
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable("the node is shutting down"));
        }
        let descriptor = service.descriptor().clone();
        if !service.subscribers().is_empty() {
            return Err(Error::invalid_argument(format!(
                "service {descriptor} has bus subscribers, which cannot be added at run time"
            )));
        }
        self.registry.register(Arc::clone(&service))?;
        let ctx = ServiceContext::new(
            descriptor.clone(),
            self.live_config.clone(),
            self.registry.clone(),
            &self.draining,
            self.clients.clone(),
            self.bus.clone(),
            self.metrics.clone(),
        );
        let host = Hosted { service, ctx };
        let mut all = self.hosted();
        all.push(host.clone());
        let assembled = match app::assemble(
            &self.config,
            &self.registry,
            &all,
            &self.metrics,
            Some(self.existing()),
        ) {
            Ok(assembled) => assembled,
            Err(err) => {
                self.registry.remove(&descriptor);
                return Err(err);
            }
        };
        self.registry.set_state(&descriptor, ServiceState::Starting);
        // A start hook that panics or overruns `node.start_timeout` fails
        // the addition like one that errs: the service leaves the registry
        // (left `starting`, it would be ignored by readiness for good).
        if let Err(err) = start::run_start_hooks(&host, self.config.node.start_timeout).await {
            tracing::error!(service = %descriptor, error = ?err, "start hook failed");
            // What its hooks began before failing is told to stop.
            host.ctx.signal_stop();
            self.registry.remove(&descriptor);
            return Err(err);
        }
        self.registry.set_state(&descriptor, ServiceState::Running);
        *self.hosted.lock().unwrap_or_else(PoisonError::into_inner) = all;
        // The names gRPC health answers for change with the routes, once
        // the start hook has succeeded: one that failed left them as they
        // were (its service's name would answer `NOT_SERVING`).
        self.readiness.set_grpc_names(assembled.grpc_names);
        self.live.store(assembled.main);
        self.clients.set_local(assembled.local);
        self.readiness.refresh().await;
        let instance = own_instance(&self.config, &descriptor, &self.advertised);
        // Withdrawn at removal or shutdown even when this first registration
        // failed: a backend with a heartbeat (NATS) registers it later.
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(instance.clone());
        if let Err(err) = self.discovery.register(instance).await {
            tracing::warn!(service = %descriptor, error = ?err, "serving, but not registered in discovery yet");
        }
        tracing::info!(service = %descriptor, "service added");
        Ok(())
    }

    /// Takes `instances` out of discovery, all at once and for at most
    /// [`DEREGISTER_TIMEOUT`]: with the registry unreachable, draining goes
    /// on without its confirmation (its records then expire with its TTL;
    /// the heartbeat stopped when the deregistration began) instead of
    /// waiting for its timeout once per service.
    pub(super) async fn withdraw(&self, instances: &[Instance]) {
        withdraw(self.discovery.as_ref(), instances).await;
    }

    pub(super) async fn remove(&self, name: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.changing.lock().await;
        // A shutdown under way (it holds `changing` to its end) has stopped
        // every service already.
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable("the node is shutting down"));
        }
        let version = Version::parse(version).map_err(|err| {
            Error::invalid_argument(format!("`{version}` is not a semver version: {err}"))
        })?;
        let mut all = self.hosted();
        let Some(position) = all.iter().position(|host| {
            host.ctx.descriptor().name() == name && *host.ctx.descriptor().version() == version
        }) else {
            return Err(Error::not_found(format!(
                "service {name}@{version} is not hosted on this node"
            )));
        };
        let host = all.remove(position);
        let descriptor = host.ctx.descriptor().clone();
        let assembled = app::assemble(
            &self.config,
            &self.registry,
            &all,
            &self.metrics,
            Some(self.existing()),
        )?;
        self.registry.set_state(&descriptor, ServiceState::Stopping);
        let withdrawn: Vec<Instance> = {
            let mut instances = self
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (gone, kept) = instances
                .drain(..)
                .partition(|i| i.name() == name && *i.version() == version);
            *instances = kept;
            gone
        };
        self.withdraw(&withdrawn).await;
        *self.hosted.lock().unwrap_or_else(PoisonError::into_inner) = all;
        self.readiness.set_grpc_names(assembled.grpc_names);
        self.live.store(assembled.main);
        self.clients.set_local(assembled.local);
        self.readiness.refresh().await;

        let timeout = self.config.node.drain_timeout;
        // Its streams end (they select on the service's shutdown signal),
        // and each counts as in flight until its body has ended.
        host.ctx.signal_stop();
        let in_flight = host.ctx.in_flight();
        if !in_flight.drain(timeout).await {
            tracing::warn!(service = %descriptor, ?timeout, open = in_flight.len(), "requests still in flight at the drain timeout");
        }
        // A stop hook that fails, panics or overruns still leaves the
        // registry: the service can be added again.
        let stopped = stop::stop_within(&host, timeout).await;
        self.registry.remove(&descriptor);
        tracing::info!(service = %descriptor, "service removed");
        stopped
    }
}

/// The discovery record of a service this node hosts: at `address`, with the
/// node's name and `discovery.metadata`.
pub(super) fn own_instance(
    config: &Config,
    descriptor: &ServiceDescriptor,
    address: &str,
) -> Instance {
    config.discovery.metadata.iter().fold(
        Instance::new(descriptor.name(), descriptor.version().clone(), address)
            .with_metadata("node", config.node.name.as_str()),
        |instance, (key, value)| instance.with_metadata(key.as_str(), value.as_str()),
    )
}

/// The address registered in discovery: `node.advertise`, else the bound
/// address with an unspecified IP replaced by loopback.
pub(super) fn advertised(config: &Config, local_addr: SocketAddr) -> String {
    if let Some(advertise) = &config.node.advertise {
        return advertise.clone();
    }
    let mut addr = local_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr.to_string()
}

/// Registers every hosted service in discovery at `address`.
pub(super) async fn register(
    config: &Config,
    discovery: &dyn Discovery,
    hosted: &[Hosted],
    address: &str,
) -> Result<Vec<Instance>> {
    let mut instances = Vec::with_capacity(hosted.len());
    for host in hosted {
        let instance = own_instance(config, host.ctx.descriptor(), address);
        if let Err(err) = discovery.register(instance.clone()).await {
            // The start fails: nothing of it stays registered (a backend
            // with a heartbeat keeps even the failed one for its next beat).
            instances.push(instance);
            withdraw(discovery, &instances).await;
            return Err(err);
        }
        instances.push(instance);
    }
    Ok(instances)
}

/// Takes `instances` out of `discovery`; see [`Hosting::withdraw`].
async fn withdraw(discovery: &dyn Discovery, instances: &[Instance]) {
    let all = futures_util::future::join_all(instances.iter().map(|instance| async move {
        if let Err(err) = discovery.deregister(instance).await {
            tracing::warn!(?instance, error = ?err, "cannot deregister");
        }
    }));
    if tokio::time::timeout(DEREGISTER_TIMEOUT, all).await.is_err() {
        tracing::warn!(
            instances = instances.len(),
            timeout = ?DEREGISTER_TIMEOUT,
            "discovery did not confirm the deregistrations in time; going on (the records expire with the registry's TTL)"
        );
    }
}
