//! [`Clients`]: resolves a service name and version requirement to a
//! colocated or remote transport, and caches remote ones.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use axum::Router;
use http::uri::Authority;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use semver::{Version, VersionReq};

use tower::{
    Layer as _, ServiceBuilder,
    layer::util::{Identity, Stack},
    util::BoxCloneSyncService,
};

use super::{
    HttpClient, RpcChannel,
    balance::Balanced,
    channel::RemoteGrpc,
    http::{HttpInstance, RemoteHttp},
};
use crate::{
    Error, Result,
    config::InstanceConfig,
    observability::metrics::Metrics,
    resilience::{
        ClientPolicy, ResilienceConfig, bulkhead::BulkheadLayer,
        circuit_breaker::CircuitBreakerLayer, hedge::HedgeLayer, retry::RetryLayer,
    },
    service::Registry,
};

/// How long connecting to a remote instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's own routers, for in-process calls.
#[derive(Clone)]
pub(crate) struct LocalRouters {
    pub(crate) grpc: Router,
    pub(crate) http: Router,
}

/// Hands out clients of services by name and version requirement.
#[derive(Clone)]
pub(crate) struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    local: OnceLock<LocalRouters>,
    instances: Vec<InstanceConfig>,
    resilience: ResilienceConfig,
    grpc: Mutex<HashMap<String, (RemoteGrpc, usize)>>,
    http: Mutex<HashMap<String, RemoteHttp>>,
    metrics: Option<Metrics>,
}

impl Clients {
    pub(crate) fn new(
        registry: Registry,
        instances: Vec<InstanceConfig>,
        resilience: ResilienceConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                local: OnceLock::new(),
                instances,
                resilience,
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

    /// Makes colocated services reachable in-process (once routes exist).
    pub(crate) fn set_local(&self, routers: LocalRouters) {
        if self.inner.local.set(routers).is_err() {
            tracing::debug!("local routers were already set");
        }
    }

    pub(crate) fn channel(&self, name: &str, requirement: &str) -> Result<RpcChannel> {
        match self.resolve(name, requirement)? {
            Resolved::Local(routers) => {
                Ok(RpcChannel::local(name, routers.grpc).observed(self.metrics()))
            }
            Resolved::Remote(key, addresses) => {
                let mut cache = self
                    .inner
                    .grpc
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some((service, count)) = cache.get(&key) {
                    return Ok(
                        RpcChannel::remote(name, service.clone(), *count).observed(self.metrics())
                    );
                }
                let policy = self.inner.resilience.for_service(name);
                let mut instances = Vec::with_capacity(addresses.len());
                for address in addresses {
                    let endpoint =
                        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                            .map_err(|err| {
                                Error::config(format!("instance address `{address}`: {err}"))
                            })?
                            .connect_timeout(CONNECT_TIMEOUT)
                            .tcp_nodelay(true);
                    let breaker = instance_breaker(name, &address, policy, self.metrics());
                    instances.push((address, breaker.layer(endpoint.connect_lazy())));
                }
                let count = instances.len();
                let service = BoxCloneSyncService::new(
                    protect(name, policy, self.metrics()).service(Balanced::new(instances)),
                );
                cache.insert(key, (service.clone(), count));
                Ok(RpcChannel::remote(name, service, count).observed(self.metrics()))
            }
        }
    }

    pub(crate) fn http(&self, name: &str, requirement: &str) -> Result<HttpClient> {
        match self.resolve(name, requirement)? {
            Resolved::Local(routers) => {
                Ok(HttpClient::local(name, routers.http).observed(self.metrics()))
            }
            Resolved::Remote(key, addresses) => {
                let mut cache = self
                    .inner
                    .http
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(service) = cache.get(&key) {
                    return Ok(HttpClient::remote(name, service.clone()).observed(self.metrics()));
                }
                let policy = self.inner.resilience.for_service(name);
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let mut instances = Vec::with_capacity(addresses.len());
                for address in addresses {
                    let authority: Authority = address.parse().map_err(|err| {
                        Error::config(format!("instance address `{address}`: {err}"))
                    })?;
                    let breaker = instance_breaker(name, &address, policy, self.metrics());
                    instances.push((
                        address,
                        breaker.layer(HttpInstance::new(client.clone(), authority)),
                    ));
                }
                let service = BoxCloneSyncService::new(
                    protect(name, policy, self.metrics()).service(Balanced::new(instances)),
                );
                cache.insert(key, service.clone());
                Ok(HttpClient::remote(name, service).observed(self.metrics()))
            }
        }
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
        if self.inner.registry.find(name, &parsed).is_some()
            && let Some(routers) = self.inner.local.get()
        {
            return Ok(Resolved::Local(routers.clone()));
        }
        let addresses: Vec<String> = self
            .inner
            .instances
            .iter()
            .filter(|instance| {
                instance.name == name
                    && Version::parse(&instance.version)
                        .is_ok_and(|version| parsed.matches(&version))
            })
            .map(|instance| instance.address.clone())
            .collect();
        if addresses.is_empty() {
            return Err(Error::unavailable(format!(
                "no instance of service `{name}` matching `{requirement}`: it is not hosted on this \
                 node and none is listed in discovery.instances"
            )));
        }
        Ok(Resolved::Remote(format!("{name} {parsed}"), addresses))
    }
}

/// The breaker of one instance: not ready while open, so the balancer skips it.
fn instance_breaker(
    service: &str,
    address: &str,
    policy: &ClientPolicy,
    metrics: Option<&Metrics>,
) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        &format!("{service}@{address}"),
        policy.instance_breaker.clone(),
    )
    .unready_while_open()
    .observed(metrics)
}

/// The layers around the balancer, outermost first.
type Protection = ServiceBuilder<
    Stack<
        HedgeLayer,
        Stack<RetryLayer, Stack<CircuitBreakerLayer, Stack<BulkheadLayer, Identity>>>,
    >,
>;

/// The layers around the balancer: bulkhead → service breaker → retry →
/// hedge (each attempt, and each hedge, picks its own instance).
fn protect(service: &str, policy: &ClientPolicy, metrics: Option<&Metrics>) -> Protection {
    ServiceBuilder::new()
        .layer(BulkheadLayer::new(service, policy.bulkhead))
        .layer(CircuitBreakerLayer::new(service, policy.breaker.clone()).observed(metrics))
        .layer(RetryLayer::new(service, policy.retry.clone()).observed(metrics))
        .layer(HedgeLayer::new(service, policy.hedge.clone()))
}

enum Resolved {
    Local(LocalRouters),
    /// Cache key and addresses.
    Remote(String, Vec<String>),
}
