//! Bounded label sets, resolved once per route: the gRPC methods a node
//! serves (from the services' file descriptor sets) and the owners of HTTP
//! route templates.

use std::{collections::HashMap, sync::Arc};

use http::Method;
use prost::Message as _;

use crate::observability::metrics::labels::{
    HttpRouteLabels, Interner, OTHER, RpcRouteLabels, method_label,
};

/// One gRPC route's labels and span names.
#[derive(Debug, Clone)]
pub(crate) struct GrpcRoute {
    pub(crate) labels: RpcRouteLabels,
    /// `pkg.Service/Method`, the span name.
    pub(crate) name: Arc<str>,
    /// The room619 service serving it.
    pub(crate) owner: Arc<str>,
}

/// Every gRPC method a node serves, by path (`/pkg.Service/Method`).
#[derive(Debug)]
pub(crate) struct GrpcRoutes {
    methods: HashMap<Box<str>, GrpcRoute>,
    /// Known services whose method is not in a descriptor.
    services: HashMap<Box<str>, GrpcRoute>,
    other: GrpcRoute,
}

impl GrpcRoutes {
    /// The routes of `services` (gRPC name, owning service), with the
    /// methods listed in the encoded `descriptor_sets`.
    pub(crate) fn new(services: &[(String, String)], descriptor_sets: &[&[u8]]) -> Self {
        let other_name: Arc<str> = Arc::from(OTHER);
        let mut routes = Self {
            methods: HashMap::new(),
            services: HashMap::new(),
            other: route(&other_name, &other_name, &other_name),
        };
        let owners: HashMap<&str, Arc<str>> = services
            .iter()
            .map(|(name, owner)| (name.as_str(), Arc::from(owner.as_str())))
            .collect();
        for (name, owner) in &owners {
            let service: Arc<str> = Arc::from(*name);
            routes
                .services
                .insert((*name).into(), route(&service, &other_name, owner));
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
                            route(&service_name, &method_name, owner),
                        );
                    }
                }
            }
        }
        routes
    }

    /// The route of `path`: its method, the service with method `other`, or
    /// `other` entirely.
    pub(crate) fn resolve(&self, path: &str) -> GrpcRoute {
        if let Some(found) = self.methods.get(path) {
            return found.clone();
        }
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|service| self.services.get(service))
            .unwrap_or(&self.other)
            .clone()
    }
}

fn route(service: &Arc<str>, method: &Arc<str>, owner: &Arc<str>) -> GrpcRoute {
    GrpcRoute {
        labels: RpcRouteLabels {
            system: "grpc",
            service: Arc::clone(service),
            method: Arc::clone(method),
        },
        name: Arc::from(format!("{service}/{method}")),
        owner: Arc::clone(owner),
    }
}

/// One HTTP request's route labels and owner.
#[derive(Debug, Clone)]
pub(crate) struct HttpRoute {
    pub(crate) labels: HttpRouteLabels,
    pub(crate) owner: Arc<str>,
}

/// Who serves which HTTP route template.
#[derive(Debug)]
pub(crate) struct HttpOwners {
    routes: Arc<Interner>,
    exact: HashMap<Box<str>, Arc<str>>,
    nested: Vec<(Box<str>, Arc<str>)>,
    node: Arc<str>,
}

impl HttpOwners {
    /// `node` owns what no service claims; `routes` shares template strings.
    pub(crate) fn new(node: &str, routes: Arc<Interner>) -> Self {
        Self {
            routes,
            exact: HashMap::new(),
            nested: Vec::new(),
            node: Arc::from(node),
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

    /// The labels of a request by `method` whose matched route template is
    /// `matched` (none: no route matched, the template is `other`).
    pub(crate) fn resolve(&self, method: &Method, matched: Option<&str>) -> HttpRoute {
        let (route, owner) = match matched {
            Some(template) => (self.routes.get(template), self.owner(template)),
            None => (self.routes.other(), Arc::clone(&self.node)),
        };
        HttpRoute {
            labels: HttpRouteLabels {
                http_request_method: method_label(method),
                http_route: route,
            },
            owner,
        }
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
