//! [`ServiceContext`]: what a service's hooks and handlers can reach.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFuture},
    task::TaskTracker,
};
use tonic::server::NamedService;

use super::{
    Registry, ServiceDescriptor,
    in_flight::{Admission, Tracked, refuse_grpc},
};
use crate::{
    Result,
    bus::MessageBus,
    config::{Config, LiveConfig},
    observability::metrics::Metrics,
    rpc::body::Hold,
    rpc::client::{Clients, GrpcClient, HttpClient, RpcChannel},
};

/// The execution context of one hosted service: who it is, the node's
/// configuration, the registry of services on the node, clients of other
/// services, the message bus and the shutdown signal. Cheap to clone.
#[derive(Clone)]
pub struct ServiceContext {
    inner: Arc<Inner>,
}

struct Inner {
    descriptor: ServiceDescriptor,
    node_name: String,
    config: Arc<Config>,
    live: LiveConfig,
    registry: Registry,
    shutdown: CancellationToken,
    clients: Clients,
    bus: MessageBus,
    metrics: Metrics,
    /// The service's requests in flight (see `node::dynamic`).
    in_flight: Admission,
    /// The undoing of a start that was abandoned half way (its paired stop
    /// hooks), which the node waits for.
    undoing: TaskTracker,
}

impl ServiceContext {
    pub(crate) fn new(
        descriptor: ServiceDescriptor,
        live: LiveConfig,
        registry: Registry,
        shutdown: &CancellationToken,
        clients: Clients,
        bus: MessageBus,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                descriptor,
                node_name: live.current().node.name.clone(),
                config: live.current(),
                live,
                registry,
                // The service's own: cancelled with the node's, or alone
                // when the service is removed from the running node.
                shutdown: shutdown.child_token(),
                clients,
                bus,
                metrics,
                in_flight: Admission::default(),
                undoing: TaskTracker::new(),
            }),
        }
    }

    /// The node's metrics registry, to register the service's own metrics
    /// with (they are served at `/metrics` beside the built-in ones).
    ///
    /// ```
    /// # fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
    /// let placed = prometheus_client::metrics::counter::Counter::<u64>::default();
    /// ctx.metrics().register("shop_orders_placed", "Orders placed", placed.clone())?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Fallbacks for calls to `peer_service`, counted in this node's
    /// `room619_fallbacks_total{peer_service}` (see
    /// [`resilience::fallback`](crate::resilience::fallback)).
    ///
    /// ```
    /// # async fn demo(ctx: room619::ServiceContext) {
    /// let price: Result<u64, tonic::Status> = Err(tonic::Status::deadline_exceeded("slow"));
    /// let shown = ctx.fallbacks("pricing").or_with(price, |_| 0);
    /// # }
    /// ```
    #[must_use]
    pub fn fallbacks(&self, peer_service: &str) -> crate::resilience::fallback::Fallbacks {
        crate::resilience::fallback::Fallbacks::counted(
            peer_service,
            self.inner.metrics.resilience().clone(),
        )
    }

    /// The service's requests in flight.
    pub(crate) fn in_flight(&self) -> &Admission {
        &self.inner.in_flight
    }

    /// The undoing of an abandoned start (see `service::hooks`).
    pub(crate) fn undoing(&self) -> &TaskTracker {
        &self.inner.undoing
    }

    /// The service's descriptor.
    #[must_use]
    pub fn descriptor(&self) -> &ServiceDescriptor {
        &self.inner.descriptor
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.inner.descriptor.name()
    }

    /// The name of the node hosting the service.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The node's configuration when the service was hosted: a snapshot,
    /// which a hot reload does not change (follow
    /// [`live_config`](Self::live_config) for that).
    #[must_use]
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// The node's configuration as it is now, following hot reloads (see
    /// [`NodeBuilder::watch_config`](crate::node::NodeBuilder::watch_config)).
    #[must_use]
    pub fn live_config(&self) -> &LiveConfig {
        &self.inner.live
    }

    /// The services hosted on this node.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// A typed gRPC client of service `name` whose version matches the semver
    /// `requirement` (such as `"^1"`): in-process when the service is hosted
    /// on this node, balanced over its instances otherwise.
    ///
    /// ```no_run
    /// use room619::rpc::client::RpcChannel;
    /// use shop_proto::echo::v1::echo_client::EchoClient;
    ///
    /// # fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
    /// let echo = ctx.client::<EchoClient<RpcChannel>>("echo", "^1")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `requirement` is not a semver requirement;
    /// `Unavailable` when the service is neither hosted here nor known to
    /// discovery (its backend, or `discovery.instances`); `Internal` outside
    /// a tokio runtime.
    pub fn client<C: GrpcClient>(&self, name: &str, requirement: &str) -> Result<C> {
        Ok(C::from_channel(self.channel(name, requirement)?))
    }

    /// The channel to service `name` matching `requirement`, for any
    /// generated client's constructor: `FooClient::new(ctx.channel("foo", "^1")?)`.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub fn channel(&self, name: &str, requirement: &str) -> Result<RpcChannel> {
        self.inner.clients.channel(name, requirement)
    }

    /// A REST client of service `name` matching `requirement`.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub fn http_client(&self, name: &str, requirement: &str) -> Result<HttpClient> {
        self.inner.clients.http(name, requirement)
    }

    /// The node's message bus (the backend `bus.backend` chose).
    ///
    /// ```
    /// # async fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
    /// use room619::bus::Json;
    /// ctx.bus().publish("orders.placed", &Json(serde_json::json!({ "id": 42 }))).await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn bus(&self) -> &MessageBus {
        &self.inner.bus
    }

    /// Whether the service is stopping: the node is draining (shutting
    /// down, after `node.shutdown_delay`, during which it still serves as
    /// usual), or the service is being removed from it
    /// ([`NodeHandle::remove_service`](crate::NodeHandle::remove_service)).
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Completes when the service begins stopping (see
    /// [`is_shutting_down`](Self::is_shutting_down)); long-running work
    /// (streams, background loops) selects on it to finish early. Before
    /// it runs the service's stop hook, for at most `node.drain_timeout`,
    /// the node waits for the service's responses still being sent (on
    /// removal) or for every open connection of the node (on shutdown).
    /// On shutdown, connections upgraded and handed to a handler (a
    /// WebSocket, say) count among them: the handler should close its
    /// socket on this signal (a WebSocket with a close frame). At the drain
    /// timeout the socket's reads and writes fail; one still open a second
    /// later is left to its handler, and the stop hooks run while it is
    /// open. A removal does not wait for upgraded connections.
    ///
    /// ```
    /// # async fn demo(ctx: room619::ServiceContext) {
    /// use futures_util::StreamExt as _;
    ///
    /// let ticks = futures_util::stream::repeat("tick");
    /// // Ends, and lets the stream's response finish, when the service stops.
    /// let stream = ticks.take_until(ctx.shutdown_signal());
    /// # drop(stream);
    /// # }
    /// ```
    pub fn shutdown_signal(&self) -> WaitForCancellationFuture<'_> {
        self.inner.shutdown.cancelled()
    }

    /// Tells the service's long-running work that it is being removed
    /// (its [`shutdown_signal`](Self::shutdown_signal) completes).
    pub(crate) fn signal_stop(&self) {
        self.inner.shutdown.cancel();
    }
}

impl fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceContext")
            .field("service", &self.inner.descriptor)
            .field("node", &self.inner.node_name)
            .finish_non_exhaustive()
    }
}

/// Puts a [`ServiceContext`] into every request's extensions before the
/// wrapped tonic service sees it.
#[derive(Clone)]
pub(crate) struct WithContext<S> {
    inner: S,
    ctx: ServiceContext,
}

impl<S> WithContext<S> {
    pub(crate) fn new(inner: S, ctx: ServiceContext) -> Self {
        Self { inner, ctx }
    }
}

impl<S: NamedService> NamedService for WithContext<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> tower::Service<http::Request<B>> for WithContext<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default + Hold,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(token) = self.ctx.in_flight().admit() else {
            return Tracked::refused(refuse_grpc(self.ctx.descriptor()));
        };
        request.extensions_mut().insert(self.ctx.clone());
        Tracked::new(self.inner.call(request), token, self.ctx.descriptor())
    }
}
