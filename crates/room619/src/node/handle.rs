//! The [`RunningNode`] a started node becomes, and the [`NodeHandle`] that
//! stops it.

use std::{fmt, net::SocketAddr, sync::Arc};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    dynamic::Hosting,
    health::{Phase, Readiness},
};
use crate::{
    Error, Result,
    bus::MessageBus,
    observability::metrics::Metrics,
    rpc::client::{Clients, GrpcClient, HttpClient, RpcChannel},
    service::Registry,
};

/// A started node. Dropping it leaves the node running; call
/// [`wait`](Self::wait) or [`shutdown`](Self::shutdown) to see it end.
pub struct RunningNode {
    pub(super) handle: NodeHandle,
    pub(super) task: JoinHandle<Result<()>>,
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
    /// The first failing stop hook's error (`Internal` for one that
    /// panicked, after the rest of the shutdown ran), or `Internal` if the
    /// node's task panicked.
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|err| Error::internal("the node's lifecycle task failed").with_source(err))?
    }

    /// Serves until Ctrl-C or SIGTERM ([`shutdown_signal`]), then shuts
    /// down gracefully and waits for it to finish. A second signal during
    /// the shutdown cuts it short: this returns at once, leaving what was
    /// still stopping to end with the runtime (an operator pressing Ctrl-C
    /// twice, a supervisor's second SIGTERM). A runtime dropped still waits
    /// for the `spawn_blocking` work under way; a binary that must not wait
    /// exits the process itself.
    ///
    /// ```no_run
    /// # async fn demo(node: room619::Node) -> room619::Result<()> {
    /// let running = node.start().await?;
    /// println!("serving on {}", running.local_addr());
    /// running.stop_on_signal().await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait); `Unavailable` when a second signal cut the
    /// shutdown short.
    ///
    /// [`shutdown_signal`]: super::shutdown_signal
    pub async fn stop_on_signal(self) -> Result<()> {
        let handle = self.handle();
        let stopped = self.wait();
        tokio::pin!(stopped);
        tokio::select! {
            result = &mut stopped => return result,
            () = super::shutdown_signal() => handle.shutdown(),
        }
        tokio::select! {
            result = stopped => result,
            () = super::shutdown_signal() => {
                tracing::warn!("a second stop signal: leaving the shutdown unfinished");
                Err(Error::unavailable("the shutdown was cut short by a second stop signal"))
            }
        }
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
    pub(super) inner: Arc<HandleInner>,
}

pub(super) struct HandleInner {
    pub(super) local_addr: SocketAddr,
    pub(super) admin_addr: Option<SocketAddr>,
    pub(super) shutdown: CancellationToken,
    pub(super) readiness: Readiness,
    pub(super) registry: Registry,
    pub(super) clients: Clients,
    pub(super) bus: MessageBus,
    pub(super) rate_limiter: Arc<crate::middleware::rate_limit::RateLimiter>,
    pub(super) metrics: Metrics,
    pub(super) hosting: Arc<Hosting>,
}

impl NodeHandle {
    /// The handle of the node that `hosting` runs, listening at `local_addr`
    /// (and `admin_addr`).
    pub(super) fn new(
        local_addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
        hosting: Arc<Hosting>,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                local_addr,
                admin_addr,
                shutdown: hosting.shutdown.clone(),
                readiness: hosting.readiness.clone(),
                registry: hosting.registry.clone(),
                clients: hosting.clients.clone(),
                bus: hosting.bus.clone(),
                rate_limiter: hosting.middleware.rate_limiter(),
                metrics: hosting.metrics.clone(),
                hosting,
            }),
        }
    }

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
