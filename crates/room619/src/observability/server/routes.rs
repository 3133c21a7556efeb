//! Bounded label sets, resolved once per route: the gRPC methods a node
//! serves (from the services' file descriptor sets) and the owners of HTTP
//! route templates. A request finds its route with one lookup and shares it
//! (an `Arc`): labels, span name and the route's metric handles.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use fnv::FnvHashMap;
use http::Method;
use prost::Message as _;

use crate::observability::metrics::{
    kept::KeptMetrics,
    labels::{
        HttpRouteLabels, Interner, METHOD_LABELS, OTHER, RpcRouteLabels, method_index, method_label,
    },
};

/// One gRPC route's labels, span name and metrics.
#[derive(Debug)]
pub(crate) struct GrpcRoute {
    pub(crate) labels: RpcRouteLabels,
    /// `pkg.Service/Method`, the span name.
    pub(crate) name: Arc<str>,
    /// The room619 service serving it.
    pub(crate) owner: Arc<str>,
    /// Whether the method answers with a stream (server streaming or
    /// bidirectional; any method no descriptor lists may): the handler's
    /// code then runs as the answer's body is sent.
    pub(crate) streams: bool,
    pub(crate) metrics: KeptMetrics,
}

/// Every gRPC method a node serves, by path (`/pkg.Service/Method`).
#[derive(Debug)]
pub(crate) struct GrpcRoutes {
    methods: FnvHashMap<Box<str>, Arc<GrpcRoute>>,
    /// Known services whose method is not in a descriptor.
    services: FnvHashMap<Box<str>, Arc<GrpcRoute>>,
    other: Arc<GrpcRoute>,
}

impl GrpcRoutes {
    /// The routes of `services` (gRPC name, owning service), with the
    /// methods listed in the encoded `descriptor_sets`.
    pub(crate) fn new(services: &[(String, String)], descriptor_sets: &[&[u8]]) -> Self {
        let other_name: Arc<str> = Arc::from(OTHER);
        let mut routes = Self {
            methods: FnvHashMap::default(),
            services: FnvHashMap::default(),
            other: route(&other_name, &other_name, &other_name, true),
        };
        let owners: HashMap<&str, Arc<str>> = services
            .iter()
            .map(|(name, owner)| (name.as_str(), Arc::from(owner.as_str())))
            .collect();
        for (name, owner) in &owners {
            let service: Arc<str> = Arc::from(*name);
            routes
                .services
                .insert((*name).into(), route(&service, &other_name, owner, true));
        }
        for encoded in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
                tracing::debug!(
                    "a file descriptor set does not decode; its methods count as `other`"
                );
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let full = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    let Some(owner) = owners.get(full.as_str()) else {
                        continue;
                    };
                    let service_name: Arc<str> = Arc::from(full.as_str());
                    for method in &service.method {
                        let method_name: Arc<str> = Arc::from(method.name());
                        routes.methods.insert(
                            format!("/{full}/{}", method.name()).into(),
                            route(
                                &service_name,
                                &method_name,
                                owner,
                                method.server_streaming(),
                            ),
                        );
                    }
                }
            }
        }
        routes
    }

    /// The route of `path`: its method, the service with method `other`, or
    /// `other` entirely.
    pub(crate) fn resolve(&self, path: &str) -> Arc<GrpcRoute> {
        if let Some(found) = self.methods.get(path) {
            return Arc::clone(found);
        }
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|service| self.services.get(service))
            .map_or_else(|| Arc::clone(&self.other), Arc::clone)
    }
}

fn route(service: &Arc<str>, method: &Arc<str>, owner: &Arc<str>, streams: bool) -> Arc<GrpcRoute> {
    Arc::new(GrpcRoute {
        labels: RpcRouteLabels {
            system: "grpc",
            service: Arc::clone(service),
            method: Arc::clone(method),
        },
        name: Arc::from(format!("{service}/{method}")),
        owner: Arc::clone(owner),
        streams,
        metrics: KeptMetrics::default(),
    })
}

/// One HTTP route's labels, span name, owner and metrics (per method).
#[derive(Debug)]
pub(crate) struct HttpRoute {
    pub(crate) labels: HttpRouteLabels,
    /// `METHOD /template`, the span name.
    pub(crate) name: Arc<str>,
    pub(crate) owner: Arc<str>,
    pub(crate) metrics: KeptMetrics,
}

/// The routes of one template, by method label.
type ByMethod = Vec<(&'static str, Arc<HttpRoute>)>;

/// Who serves which HTTP route template.
#[derive(Debug)]
pub(crate) struct HttpOwners {
    routes: Arc<Interner>,
    exact: HashMap<Box<str>, Arc<str>>,
    nested: Vec<(Box<str>, Arc<str>)>,
    node: Arc<str>,
    /// The routes requests were resolved to, by template (`""`: no route
    /// matched). Bounded: templates come from the router (at most the
    /// interner's limit, then `other`), method labels are a fixed set.
    resolved: RwLock<FnvHashMap<Box<str>, ByMethod>>,
}

impl HttpOwners {
    /// `node` owns what no service claims; `routes` shares template strings.
    pub(crate) fn new(node: &str, routes: Arc<Interner>) -> Self {
        Self {
            routes,
            exact: HashMap::new(),
            nested: Vec::new(),
            node: Arc::from(node),
            resolved: RwLock::default(),
        }
    }

    /// Service `owner` serves the route template `path`.
    pub(crate) fn add_route(&mut self, path: &str, owner: &str) {
        self.exact.insert(path.into(), Arc::from(owner));
    }

    /// Service `owner` serves everything under `prefix`.
    pub(crate) fn add_nested(&mut self, prefix: &str, owner: &str) {
        self.nested.push((prefix.into(), Arc::from(owner)));
    }

    /// The route of a request by `method` whose matched route template is
    /// `matched` (none: no route matched, the template is `other`).
    pub(crate) fn resolve(&self, method: &Method, matched: Option<&str>) -> Arc<HttpRoute> {
        let method = method_label(method);
        let template = matched.unwrap_or_default();
        let find = |resolved: &FnvHashMap<Box<str>, ByMethod>| {
            resolved.get(template).and_then(|routes| {
                routes
                    .iter()
                    .find(|(label, _)| *label == method)
                    .map(|(_, route)| Arc::clone(route))
            })
        };
        if let Some(route) = find(&self.resolved.read().unwrap_or_else(PoisonError::into_inner)) {
            return route;
        }
        let mut resolved = self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = find(&resolved) {
            return route;
        }
        let route = self.route(method, matched);
        resolved
            .entry(template.into())
            .or_default()
            .push((method, Arc::clone(&route)));
        route
    }

    fn route(&self, method: &'static str, matched: Option<&str>) -> Arc<HttpRoute> {
        let (route, owner) = match matched {
            Some(template) => (self.routes.get(template), self.owner(template)),
            None => (self.routes.other(), Arc::clone(&self.node)),
        };
        Arc::new(HttpRoute {
            name: Arc::from(format!("{method} {route}")),
            labels: HttpRouteLabels {
                http_request_method: method,
                http_route: route,
            },
            owner,
            metrics: KeptMetrics::default(),
        })
    }

    fn owner(&self, template: &str) -> Arc<str> {
        if let Some(owner) = self.exact.get(template) {
            return Arc::clone(owner);
        }
        self.nested
            .iter()
            .find(|(prefix, _)| template.starts_with(&**prefix))
            .map_or_else(|| Arc::clone(&self.node), |(_, owner)| Arc::clone(owner))
    }
}

/// The routes of one route template, by method, resolved through
/// [`HttpOwners::resolve`] on a method's first request and kept: a request
/// to a route the layer was applied to finds its route without a lock or a
/// hash lookup.
#[derive(Debug)]
pub(crate) struct BoundRoute {
    template: Box<str>,
    by_method: [OnceLock<Arc<HttpRoute>>; METHOD_LABELS.len()],
}

impl BoundRoute {
    pub(crate) fn new(template: &str) -> Self {
        Self {
            template: template.into(),
            by_method: Default::default(),
        }
    }

    /// The route of a `method` request to this template.
    pub(crate) fn resolve(&self, owners: &HttpOwners, method: &Method) -> Arc<HttpRoute> {
        let route = self.by_method[method_index(method)]
            .get_or_init(|| owners.resolve(method, Some(&self.template)));
        Arc::clone(route)
    }
}
