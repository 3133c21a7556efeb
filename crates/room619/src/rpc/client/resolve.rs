//! [`Clients`]: resolves a service name and version requirement to a
//! colocated or remote transport, and caches remote ones.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::Router;
use http::uri::Authority;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use semver::VersionReq;
use tokio_util::sync::CancellationToken;

use tower::{
    Layer as _, ServiceBuilder,
    layer::util::{Identity, Stack},
    util::{BoxCloneSyncService, Either},
};

use super::{
    HttpClient, RpcChannel,
    balance::{Admission, Balanced},
    channel::RemoteGrpc,
    follow,
    http::{HttpInstance, RemoteHttp},
};
use crate::{
    Error, Result,
    discovery::{self, Discovery, Instance},
    error::BoxError,
    observability::metrics::Metrics,
    resilience::{
        ClientPolicy, ResilienceConfig, bulkhead::BulkheadLayer,
        circuit_breaker::CircuitBreakerLayer, hedge::HedgeLayer, retry::RetryLayer,
    },
    service::ServiceDescriptor,
};

/// How long connecting to a remote instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's own routers, for in-process calls, and the services they
/// route (a service being added or removed is hosted, not routed).
#[derive(Clone)]
pub(crate) struct LocalRouters {
    pub(crate) grpc: Router,
    pub(crate) http: Router,
    pub(crate) routed: Arc<[ServiceDescriptor]>,
}

impl LocalRouters {
    /// Whether they route a version of `name` that `requirement` accepts.
    fn route(&self, name: &str, requirement: &VersionReq) -> bool {
        self.routed
            .iter()
            .any(|service| service.name() == name && requirement.matches(service.version()))
    }
}

/// What a colocated client (`C`: an [`RpcChannel`] or an [`HttpClient`])
/// calls through: the node's routers when it was made, while they are still
/// the node's current ones (one atomic load a call). When services are added
/// or removed the node has new routers, and the client is resolved again,
/// once per change for all its clones: in process through the new routers
/// while they still route its service, else to another instance (a client
/// made before a `remove_service` fails over instead of being refused for
/// ever), and back in process if the service returns.
///
/// Like the routers it calls, a client kept after its node stopped keeps the
/// node's last routers, and the services' state, until it is dropped.
pub(crate) struct Colocation<C> {
    routers: Arc<LocalRouters>,
    /// The node's current routers.
    current: Arc<ArcSwapOption<LocalRouters>>,
    /// To resolve again; weak, so a client does not keep the clients' caches.
    clients: Weak<Inner>,
    requirement: Arc<str>,
    /// Shared by the clones: the client resolved again, and the routers it
    /// was resolved under.
    moved: Arc<ArcSwapOption<Moved<C>>>,
}

/// A colocated client resolved again under the node's routers `under`.
struct Moved<C> {
    under: Arc<LocalRouters>,
    client: C,
}

impl<C> Clone for Colocation<C> {
    fn clone(&self) -> Self {
        Self {
            routers: Arc::clone(&self.routers),
            current: Arc::clone(&self.current),
            clients: Weak::clone(&self.clients),
            requirement: Arc::clone(&self.requirement),
            moved: Arc::clone(&self.moved),
        }
    }
}

impl<C: Clone> Colocation<C> {
    pub(crate) fn grpc(&self) -> &Router {
        &self.routers.grpc
    }

    pub(crate) fn http(&self) -> &Router {
        &self.routers.http
    }

    /// `None` while the node serves through the routers this client was made
    /// with. Otherwise the client to call through instead, resolved by
    /// `resolve` (given the clients and the requirement) once per change of
    /// the node's routers; `None` too when that fails (the old routers then
    /// answer, refusing a service being removed) or the node is gone.
    pub(crate) fn moved(
        &self,
        target: &str,
        resolve: impl FnOnce(&Clients, &str) -> Result<C>,
    ) -> Option<C> {
        let current = self.current.load();
        let current = current.as_ref()?;
        if Arc::ptr_eq(current, &self.routers) {
            return None;
        }
        if let Some(moved) = self.moved.load().as_ref()
            && Arc::ptr_eq(&moved.under, current)
        {
            return Some(moved.client.clone());
        }
        let clients = Clients {
            inner: self.clients.upgrade()?,
        };
        match resolve(&clients, &self.requirement) {
            Ok(client) => {
                self.moved.store(Some(Arc::new(Moved {
                    under: Arc::clone(current),
                    client: client.clone(),
                })));
                Some(client)
            }
            Err(err) => {
                tracing::debug!(target, error = %err, "cannot resolve a colocated client again");
                None
            }
        }
    }
}

/// Hands out clients of services by name and version requirement.
#[derive(Clone)]
pub(crate) struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    local: Arc<ArcSwapOption<LocalRouters>>,
    discovery: Arc<dyn Discovery>,
    /// The policies new remote stacks are built with; replaced on reload.
    resilience: ArcSwap<ResilienceConfig>,
    /// Stops the tasks that follow discovery watches.
    shutdown: CancellationToken,
    grpc: Mutex<HashMap<String, Cached<(RemoteGrpc, usize)>>>,
    http: Mutex<HashMap<String, Cached<RemoteHttp>>>,
    metrics: Option<Metrics>,
}

/// A remote stack in the cache (its discovery follower runs while a
/// client, or the cache, holds the stack, and until the node shuts down).
struct Cached<T> {
    stack: T,
    /// The service it calls, and the policy it was made with.
    service: String,
    policy: ClientPolicy,
}

impl<T> Cached<T> {
    /// Whether `resilience` protects its service as its stack does.
    fn is_current(&self, resilience: &ResilienceConfig) -> bool {
        *resilience.for_service(&self.service) == self.policy
    }
}

impl Clients {
    pub(crate) fn new(
        discovery: Arc<dyn Discovery>,
        resilience: ResilienceConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                local: Arc::new(ArcSwapOption::empty()),
                discovery,
                resilience: ArcSwap::from_pointee(resilience),
                shutdown,
                grpc: Mutex::new(HashMap::new()),
                http: Mutex::new(HashMap::new()),
                metrics: None,
            }),
        }
    }

    /// Counts client calls, breaker transitions and retries in `metrics`
    /// (before the clients are shared).
    pub(crate) fn observed(mut self, metrics: Option<Metrics>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = metrics;
        }
        self
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_ref()
    }

    /// Replaces the resilience policies (a configuration reload). Stacks
    /// made from now on use them: the cached remote stacks of the services
    /// whose policy changed are dropped (their breakers start closed again,
    /// with the new settings); the others keep theirs, open breakers and
    /// spent budgets included. A client already handed out keeps the policy
    /// it was made with, and keeps following discovery (its follower ends
    /// once no client uses its balancer).
    pub(crate) fn set_resilience(&self, resilience: ResilienceConfig) {
        let resilience = Arc::new(resilience);
        self.inner.resilience.store(Arc::clone(&resilience));
        self.inner
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, cached| cached.is_current(&resilience));
        self.inner
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, cached| cached.is_current(&resilience));
    }

    /// Makes colocated services reachable in-process (once routes exist,
    /// and again when services are added or removed).
    pub(crate) fn set_local(&self, routers: LocalRouters) {
        self.inner.local.store(Some(Arc::new(routers)));
    }

    pub(crate) fn channel(&self, name: &str, requirement: &str) -> Result<RpcChannel> {
        match self.resolve(name, requirement)? {
            Resolved::Local(routers) => Ok(RpcChannel::local(
                name,
                self.colocation(routers, requirement),
            )
            .observed(self.metrics())),
            Resolved::Remote(remote) => {
                let mut cache = self
                    .inner
                    .grpc
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(Cached {
                    stack: (service, count),
                    ..
                }) = cache.get(&remote.key)
                {
                    return Ok(
                        RpcChannel::remote(name, service.clone(), *count).observed(self.metrics())
                    );
                }
                let resilience = self.inner.resilience.load_full();
                let policy = resilience.for_service(name).clone();
                let service_name = name.to_owned();
                let metrics = self.inner.metrics.clone();
                let make = move |instance: &Instance| {
                    let address = instance.address();
                    let endpoint = match tonic::transport::Endpoint::from_shared(format!(
                        "http://{address}"
                    )) {
                        Ok(endpoint) => endpoint,
                        Err(err) => {
                            tracing::warn!(?instance, error = %err, "unusable instance address");
                            return None;
                        }
                    }
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true);
                    let breaker =
                        instance_breaker(&service_name, address, &policy, metrics.as_ref(), GRPC);
                    Some(breaker.layer(endpoint.connect_lazy()))
                };
                let (balanced, count) = self.follow(&remote, make, self.inner.shutdown.clone());
                let service = BoxCloneSyncService::new(
                    protect(name, resilience.for_service(name), self.metrics(), GRPC)
                        .service(balanced),
                );
                cache.insert(
                    remote.key,
                    Cached {
                        stack: (service.clone(), count),
                        service: remote.name,
                        policy: resilience.for_service(name).clone(),
                    },
                );
                Ok(RpcChannel::remote(name, service, count).observed(self.metrics()))
            }
        }
    }

    pub(crate) fn http(&self, name: &str, requirement: &str) -> Result<HttpClient> {
        match self.resolve(name, requirement)? {
            Resolved::Local(routers) => Ok(HttpClient::local(
                name,
                self.colocation(routers, requirement),
            )
            .observed(self.metrics())),
            Resolved::Remote(remote) => {
                let mut cache = self
                    .inner
                    .http
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(cached) = cache.get(&remote.key) {
                    return Ok(
                        HttpClient::remote(name, cached.stack.clone()).observed(self.metrics())
                    );
                }
                let resilience = self.inner.resilience.load_full();
                let policy = resilience.for_service(name).clone();
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let service_name = name.to_owned();
                let metrics = self.inner.metrics.clone();
                let make = move |instance: &Instance| {
                    let address = instance.address();
                    let authority: Authority = match address.parse() {
                        Ok(authority) => authority,
                        Err(err) => {
                            tracing::warn!(?instance, error = %err, "unusable instance address");
                            return None;
                        }
                    };
                    let breaker =
                        instance_breaker(&service_name, address, &policy, metrics.as_ref(), HTTP);
                    Some(breaker.layer(HttpInstance::new(client.clone(), authority)))
                };
                let (balanced, _) = self.follow(&remote, make, self.inner.shutdown.clone());
                let service = BoxCloneSyncService::new(
                    protect(name, resilience.for_service(name), self.metrics(), HTTP)
                        .service(balanced),
                );
                cache.insert(
                    remote.key,
                    Cached {
                        stack: service.clone(),
                        service: remote.name,
                        policy: resilience.for_service(name).clone(),
                    },
                );
                Ok(HttpClient::remote(name, service).observed(self.metrics()))
            }
        }
    }

    /// The way of a client colocated through `routers`.
    fn colocation<C>(&self, routers: Arc<LocalRouters>, requirement: &str) -> Colocation<C> {
        Colocation {
            routers,
            current: Arc::clone(&self.inner.local),
            clients: Arc::downgrade(&self.inner),
            requirement: requirement.into(),
            moved: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// A balancer over the resolved instances, kept in step with discovery
    /// until `stop`.
    fn follow<S, Req, F>(
        &self,
        remote: &Remote,
        make: F,
        stop: CancellationToken,
    ) -> (Balanced<S, Req>, usize)
    where
        S: tower::Service<Req> + Admission + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        Req: Send + 'static,
        F: Fn(&Instance) -> Option<S> + Send + 'static,
    {
        let mut known = HashMap::new();
        let mut services = Vec::with_capacity(remote.instances.len());
        for instance in &remote.instances {
            if let Some(service) = make(instance) {
                known.insert(instance.id().to_owned(), instance.address().to_owned());
                services.push((instance.id().to_owned(), service));
            }
        }
        let count = services.len();
        let balanced = Balanced::new(&remote.name, services);
        follow::follow(
            balanced.clone(),
            self.inner.discovery.watch(&remote.name),
            remote.requirement.clone(),
            known,
            make,
            stop,
        );
        (balanced, count)
    }

    fn resolve(&self, name: &str, requirement: &str) -> Result<Resolved> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::internal(
                "clients must be made inside a tokio runtime (they spawn connection tasks)",
            ));
        }
        let parsed = VersionReq::parse(requirement).map_err(|err| {
            Error::invalid_argument(format!(
                "`{requirement}` is not a semver requirement for service `{name}`: {err}"
            ))
        })?;
        // In process only through routers that route the service: during
        // `remove_service`'s drain (routers already without it) or an
        // `add_service` under way (not yet with it), the call goes to
        // another instance, as if the service were not hosted here.
        if let Some(routers) = self.inner.local.load_full()
            && routers.route(name, &parsed)
        {
            return Ok(Resolved::Local(routers));
        }
        let instances = self.inner.discovery.resolve(name, &parsed);
        if instances.is_empty() {
            let backend = self.inner.discovery.backend();
            // Pre-releases the requirement leaves out would otherwise look
            // like a service discovery does not know (`GET /registry`
            // lists them).
            let left_out =
                discovery::prereleases_left_out(&self.inner.discovery.instances(), name, &parsed);
            let known = match left_out.first() {
                None => {
                    format!("{backend} discovery knows none (its registry, or discovery.instances)")
                }
                Some(newest) => format!(
                    "the only instances {backend} discovery knows that `{requirement}` would \
                     otherwise match are pre-releases ({}): a requirement matches a pre-release \
                     only when it names one of the same major.minor.patch, such as `>={newest}`",
                    left_out
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(Error::unavailable(format!(
                "no instance of service `{name}` matching `{requirement}`: it is not hosted on this \
                 node and {known}"
            )));
        }
        Ok(Resolved::Remote(Remote {
            key: format!("{name} {parsed}"),
            name: name.to_owned(),
            requirement: parsed,
            instances,
        }))
    }
}

/// The `protocol` label of the breakers of gRPC clients.
const GRPC: &str = "grpc";
/// The `protocol` label of the breakers of HTTP clients.
const HTTP: &str = "http";

/// The breaker of one instance: not ready while open, so the balancer skips it.
fn instance_breaker(
    service: &str,
    address: &str,
    policy: &ClientPolicy,
    metrics: Option<&Metrics>,
    protocol: &'static str,
) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        &format!("{service}@{address}"),
        policy.instance_breaker.clone(),
    )
    .unready_while_open()
    .observed(metrics, protocol)
}

/// The layers around the balancer, outermost first.
type Protection = ServiceBuilder<
    Stack<
        Either<HedgeLayer, Identity>,
        Stack<RetryLayer, Stack<CircuitBreakerLayer, Stack<BulkheadLayer, Identity>>>,
    >,
>;

/// The layers around the balancer: bulkhead → service breaker → retry →
/// hedge (each attempt, and each hedge, picks its own instance). The hedge
/// layer is left out unless the policy lists methods to hedge, so calls pay
/// nothing for it by default.
fn protect(
    service: &str,
    policy: &ClientPolicy,
    metrics: Option<&Metrics>,
    protocol: &'static str,
) -> Protection {
    ServiceBuilder::new()
        .layer(BulkheadLayer::new(service, policy.bulkhead).observed(metrics))
        .layer(
            CircuitBreakerLayer::new(service, policy.breaker.clone()).observed(metrics, protocol),
        )
        .layer(RetryLayer::new(service, policy.retry.clone()).observed(metrics))
        .option_layer(
            policy
                .hedge
                .is_enabled()
                .then(|| HedgeLayer::new(service, policy.hedge.clone()).observed(metrics)),
        )
}

enum Resolved {
    Local(Arc<LocalRouters>),
    Remote(Remote),
}

/// Remote instances of a service, as first resolved.
struct Remote {
    /// The cache key: name and requirement.
    key: String,
    name: String,
    requirement: VersionReq,
    instances: Vec<Instance>,
}
