//! Assembles the routers of all hosted services into what a listener serves.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{Extension, Router, handler::Handler as _};
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};

use super::{
    fast::FastRoutes,
    health::{GrpcHealthServer, GrpcName, LIVE_PATH, READY_PATH, Readiness},
    registry::REGISTRY_PATH,
};
use crate::{
    Error, Result,
    config::{Config, Limits},
    middleware::{GuardLayers, NodeMiddleware, auth::ServedPaths, rate_limit::RateLimitRule},
    observability::{
        metrics::{self, METRICS_PATH, Metrics},
        server::{GrpcRoutes, HttpOwners, ObserveLayer},
    },
    rpc::{
        ProtocolSplit,
        client::LocalRouters,
        grpc::GrpcLayers,
        http::{HttpEdgeLayer, IdleRequests, RouteTable, not_found},
        shed::LoadShedLayer,
    },
    service::{GrpcService, Registry, Service, ServiceContext, TrackLayer},
};

/// The owner named when a service's route collides with an admin route.
const ADMIN_OWNER: &str = "room619 admin endpoints";
/// The admin paths, served beside the services' routes unless the admin
/// endpoints have a listener of their own (a service's access rule may name
/// them).
pub(crate) const ADMIN_PATHS: [&str; 4] = [LIVE_PATH, READY_PATH, REGISTRY_PATH, METRICS_PATH];

/// A service and the context it runs with.
#[derive(Clone)]
pub(crate) struct Hosted {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) ctx: ServiceContext,
}

/// What the listeners serve.
pub(crate) struct Assembled {
    pub(crate) main: ProtocolSplit,
    /// The same routers, for in-process calls of colocated clients.
    pub(crate) local: LocalRouters,
    /// The admin router when it has a listener of its own.
    pub(crate) admin: Option<ProtocolSplit>,
    pub(crate) readiness: Readiness,
    /// What gRPC health answers for, each with its service: handed to
    /// [`Readiness::set_grpc_names`] once the change of services is made
    /// (an addition whose start hook fails leaves the names as they were).
    pub(crate) grpc_names: Vec<GrpcName>,
    /// Auth and rate limiting: started with the node, updatable at run time.
    pub(crate) middleware: NodeMiddleware,
    /// The node's one load-shedding limit over its network routers.
    pub(crate) shed: LoadShedLayer,
}

/// What a re-assembly keeps of a running node (services added or removed):
/// its readiness, whose gRPC health statuses are kept, its middleware,
/// whose keys and rate-limit state are kept, and its load-shedding permits,
/// which the requests in flight on the routers it replaces still hold.
#[derive(Clone, Copy)]
pub(crate) struct Existing<'a> {
    pub(crate) readiness: &'a Readiness,
    pub(crate) middleware: &'a NodeMiddleware,
    pub(crate) shed: &'a LoadShedLayer,
}

/// Assembles the routes of `hosted`; `existing` is what the node keeps when
/// it already runs.
pub(crate) fn assemble(
    config: &Config,
    registry: &Registry,
    hosted: &[Hosted],
    metrics: &Metrics,
    existing: Option<Existing<'_>>,
) -> Result<Assembled> {
    let (node_name, measured) = (
        &config.node.name,
        config.telemetry.metrics.then_some(metrics),
    );
    let mut grpc_owners = builtin_grpc_owners(node_name);
    let separate_admin = config.node.admin_listen.is_some();
    let middleware = middleware_for(config, hosted, existing.map(|e| e.middleware))?;
    let readiness = match existing {
        Some(Existing { readiness, .. }) => readiness.clone(),
        None => Readiness::new(config.node.name.clone(), registry.clone()),
    };

    let GrpcAssembly {
        services: grpc,
        names: grpc_names,
        descriptor_sets,
    } = grpc_routes(
        hosted,
        readiness.grpc_service(),
        &mut grpc_owners,
        config.limits.http_body_idle_timeout,
    )?;
    let limits = &config.limits;
    let grpc_observe =
        ObserveLayer::grpc(GrpcRoutes::new(&grpc_owners, &descriptor_sets), measured);

    // HTTP: every hosted route, checked for conflicts before axum sees it.
    let mut table = RouteTable::default();
    let route_names = measured.map_or_else(Default::default, |m| m.server().routes.clone());
    let mut owners = HttpOwners::new(node_name, route_names.clone());
    if !separate_admin {
        for path in ADMIN_PATHS {
            table.claim(ADMIN_OWNER, path)?;
        }
    }
    let mut hosted_routes = Vec::with_capacity(hosted.len());
    for Hosted { service, ctx } in hosted {
        let routes = service.routes();
        table.add(ctx.name(), &routes)?;
        for (path, _) in &routes.http {
            owners.add_route(path, ctx.name());
        }
        for (prefix, _) in &routes.nested {
            owners.add_nested(prefix, ctx.name());
        }
        hosted_routes.push(HostedRoutes {
            ctx,
            http: routes.http,
            nested: routes.nested,
        });
    }
    let observe = ObserveLayer::http(owners, measured);
    let admin_router = || admin_routes(&readiness, measured);
    let admin = separate_admin.then(|| {
        let unimplemented = tonic::service::Routes::default().into_axum_router();
        let observe = ObserveLayer::http(HttpOwners::new(node_name, route_names), measured);
        let admin = admin_router().fallback(not_found).layer(
            ServiceBuilder::new()
                .layer(observe)
                .layer(http_edge(limits)),
        );
        ProtocolSplit::new(unimplemented, admin)
    });
    // The network path sheds load (one per-node limit over both routers);
    // colocated clients call the same stack without it: an in-process call
    // is part of a request already admitted.
    let shed = existing.map_or_else(
        || LoadShedLayer::new(limits.max_concurrent_requests),
        |e| e.shed.clone(),
    );
    let unshed = LoadShedLayer::new(usize::MAX);
    let shared_admin = (!separate_admin).then(admin_router);
    let http_with = |shed| HttpLayers {
        observe: &observe,
        shed,
        limits,
        middleware: &middleware,
    };
    let grpc_with = |shed| grpc.router(&GrpcLayers::new(&middleware, &grpc_observe, shed, limits));
    // (`with_state` finishes every handler's route once, as `ProtocolSplit`
    // does for the network path.)
    let local = LocalRouters {
        grpc: grpc_with(&unshed).with_state(()),
        http: http_with(&unshed)
            .router(&hosted_routes, shared_admin.clone())
            .with_state(()),
        routed: hosted
            .iter()
            .map(|host| host.ctx.descriptor().clone())
            .collect(),
    };
    let main = http_with(&shed).split(grpc_with(&shed), &hosted_routes, shared_admin);
    Ok(Assembled {
        main,
        local,
        admin,
        readiness,
        grpc_names,
        middleware,
        shed,
    })
}

/// Auth and rate limiting for the hosted services' access rules, and for
/// everything the main listener serves (the access table finds a path
/// under the pattern the router routes it by).
fn middleware_for(
    config: &Config,
    hosted: &[Hosted],
    existing: Option<&NodeMiddleware>,
) -> Result<NodeMiddleware> {
    let policies: Vec<_> = hosted
        .iter()
        .map(|host| (host.ctx.name().to_owned(), host.service.access()))
        .collect();
    let policies = policies
        .iter()
        .map(|(name, policy)| (name.as_str(), policy));
    let mut served = ServedPaths::default();
    // The admin endpoints the main listener serves (`/metrics` only when
    // metrics are on): public unless a service rule names them.
    if config.node.admin_listen.is_none() {
        for path in ADMIN_PATHS {
            if config.telemetry.metrics || path != METRICS_PATH {
                served.admin(path);
            }
        }
    }
    for host in hosted {
        served.add(&host.service.routes());
    }
    warn_of_unserved_rate_limits(config, &served);
    match existing {
        Some(running) => running.rebuilt(policies, &served),
        None => NodeMiddleware::new(config, policies, &served),
    }
}

/// Warns of each `[[rate_limit.rules]]` route that matches nothing the main
/// listener serves (see [`unserved_rate_limits`]): it limits nothing, most
/// likely a route of a nested router written without its prefix (routes
/// are matched by the full path of a request). A warning, not an error: the
/// section is node-wide and reloadable, and may name the routes of a service
/// added later.
fn warn_of_unserved_rate_limits(config: &Config, served: &ServedPaths) {
    for (route, full) in unserved_rate_limits(&config.rate_limit.rules, served) {
        if full.is_empty() {
            tracing::warn!(
                route,
                "the rate_limit rule for `{route}` matches no route, nested router or gRPC \
                 service this node serves: it limits nothing"
            );
        } else {
            let full: Vec<String> = full.iter().map(|path| format!("`{path}`")).collect();
            tracing::warn!(
                route,
                "the rate_limit rule for `{route}` matches nothing this node serves: it limits \
                 nothing; routes are matched by the full path of a request, a nested router's \
                 prefix included: for a route of a nested router, write {}",
                full.join(" or ")
            );
        }
    }
}

/// The routes of `rules` that match nothing `served` holds, as an access
/// rule's check finds it ([`ServedPaths::patterns`]), once each, with the
/// full paths they would match under the prefixes of nested routers.
fn unserved_rate_limits<'a>(
    rules: &'a [RateLimitRule],
    served: &ServedPaths,
) -> Vec<(&'a str, Vec<String>)> {
    if rules.is_empty() {
        return Vec::new();
    }
    let patterns = served.patterns();
    let mut unserved: Vec<(&str, Vec<String>)> = Vec::new();
    for rule in rules {
        let route = rule.route.as_str();
        if patterns.names(route) || unserved.iter().any(|(seen, _)| *seen == route) {
            continue;
        }
        let full = patterns
            .under_nested(route)
            .into_iter()
            .map(|(_, full)| full)
            .collect();
        unserved.push((route, full));
    }
    unserved
}

/// A hosted service's HTTP routes and nested routers.
struct HostedRoutes<'a> {
    ctx: &'a ServiceContext,
    http: Vec<(String, axum::routing::MethodRouter)>,
    nested: Vec<(String, Router)>,
}

/// The outer layers of every HTTP route: request id, sensitive headers,
/// tracing and metrics (all three in the observe layer), load shedding, body
/// limits and deadline.
type HttpOuter =
    ServiceBuilder<Stack<HttpEdgeLayer, Stack<LoadShedLayer, Stack<ObserveLayer, Identity>>>>;

fn http_outer(observe: &ObserveLayer, shed: &LoadShedLayer, limits: &Limits) -> HttpOuter {
    ServiceBuilder::new()
        .layer(observe.clone())
        .layer(shed.clone())
        .layer(http_edge(limits))
}

/// The inner layers of a hosted route (see [`HttpLayers::inner`]).
type InnerLayers = ServiceBuilder<
    Stack<Extension<ServiceContext>, Stack<TrackLayer, Stack<GuardBuilder, Identity>>>,
>;

/// Auth and rate limiting, as [`NodeMiddleware::guard_layers`] gives them.
type GuardBuilder = ServiceBuilder<GuardLayers>;

/// How the HTTP router of a listener (or of colocated clients) is layered.
struct HttpLayers<'a> {
    observe: &'a ObserveLayer,
    shed: &'a LoadShedLayer,
    limits: &'a Limits,
    middleware: &'a NodeMiddleware,
}

impl HttpLayers<'_> {
    /// The outer layers of the routes whose template is only known per
    /// request (admin, nested routers, the fallback).
    fn outer(&self) -> HttpOuter {
        http_outer(self.observe, self.shed, self.limits)
    }

    /// The outer layers of the route `template`.
    fn outer_for(&self, template: &str) -> HttpOuter {
        http_outer(&self.observe.for_route(template), self.shed, self.limits)
    }

    /// The inner layers of a route of the service `ctx`: auth and rate
    /// limiting, its in-flight tracking, its context in the extensions.
    fn inner(&self, ctx: &ServiceContext) -> InnerLayers {
        ServiceBuilder::new()
            .layer(self.middleware.guard_layers())
            .layer(TrackLayer::new(
                ctx.in_flight().clone(),
                ctx.descriptor().clone(),
            ))
            .layer(Extension(ctx.clone()))
    }

    /// What a listener serves: `grpc`, and the HTTP routes of `hosted` and
    /// `admin` (the admin routes, when they share the listener), the hosted
    /// ones through their own stacks when they can ([`fast`](Self::fast)).
    fn split(
        &self,
        grpc: Router,
        hosted: &[HostedRoutes<'_>],
        admin: Option<Router>,
    ) -> ProtocolSplit {
        let admin_paths: &[&str] = if admin.is_some() { &ADMIN_PATHS } else { &[] };
        let fast = self.fast(hosted, admin_paths);
        let http = self.router(hosted, admin);
        match fast {
            Some(fast) => ProtocolSplit::with_fast(grpc, http, fast),
            None => ProtocolSplit::new(grpc, http),
        }
    }

    /// The hosted routes, each with all its layers as one unboxed stack
    /// around a router of the plain routes ([`FastRoutes`]); `admin` are
    /// the admin paths served on the same listener. `None` when CORS or
    /// compression go around the router: those requests keep its way.
    fn fast(&self, hosted: &[HostedRoutes<'_>], admin: &[&str]) -> Option<FastRoutes> {
        if !self.middleware.http_is_plain() {
            return None;
        }
        let plain = hosted
            .iter()
            .flat_map(|service| &service.http)
            .fold(Router::new(), |router, (path, handler)| {
                router.route(path, handler.clone())
            })
            .fallback(not_found)
            .with_state(());
        let mut fast = FastRoutes::new();
        for path in admin {
            fast.elsewhere(path);
        }
        for HostedRoutes { ctx, http, nested } in hosted {
            for (prefix, _) in nested {
                fast.nested(prefix);
            }
            let inner = self.inner(ctx);
            for (path, _) in http {
                let stack = ServiceBuilder::new()
                    .layer(self.outer_for(path))
                    .layer(inner.clone())
                    .service(plain.clone());
                fast.route(path, stack);
            }
        }
        Some(fast)
    }

    /// Every hosted route (and the admin routes), each with all its layers as
    /// one: axum boxes every layer of a route, and every `Router::layer`,
    /// once per request. Outermost first: the outer layers, then auth and
    /// rate limiting, in-flight tracking and the service's context. The
    /// 404 fallback has the outer layers only (an unknown path is a 404
    /// whoever asks); CORS and compression, when configured, go around it
    /// all.
    fn router(&self, hosted: &[HostedRoutes<'_>], admin: Option<Router>) -> Router {
        let mut http = Router::new();
        if let Some(admin) = admin {
            http = http.merge(
                admin.layer(
                    ServiceBuilder::new()
                        .layer(self.outer())
                        .layer(self.middleware.guard_layers()),
                ),
            );
        }
        for HostedRoutes {
            ctx,
            http: routes,
            nested,
        } in hosted
        {
            let inner = self.inner(ctx);
            for (path, handler) in routes {
                let layers = ServiceBuilder::new()
                    .layer(self.outer_for(path))
                    .layer(inner.clone());
                let handler = handler.clone().layer::<_, std::convert::Infallible>(layers);
                http = http.route(path, handler);
            }
            for (prefix, nested) in nested {
                let layers = ServiceBuilder::new()
                    .layer(self.outer())
                    .layer(inner.clone());
                http = http.nest(prefix, nested.clone().layer(layers));
            }
        }
        let fallback = not_found.layer(self.outer());
        self.middleware.http_layers(http.fallback(fallback))
    }
}

/// The gRPC side of a node, before its layers.
struct GrpcAssembly {
    services: GrpcServices,
    /// What gRPC health answers for, each with its service.
    names: Vec<GrpcName>,
    descriptor_sets: Vec<&'static [u8]>,
}

/// Every hosted tonic service, then health and reflection: the services,
/// the names gRPC health answers for, and the descriptor sets. Adds each
/// gRPC service and its room619 owner to `owners`. A reflection stream that
/// asks nothing for `idle` fails (see `IdleRequests`).
fn grpc_routes(
    hosted: &[Hosted],
    health_service: GrpcHealthServer,
    owners: &mut Vec<(String, String)>,
    idle: Duration,
) -> Result<GrpcAssembly> {
    let mut services = Vec::new();
    let mut grpc_names: Vec<GrpcName> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut descriptor_sets = vec![tonic_health::pb::FILE_DESCRIPTOR_SET];
    for Hosted { service, ctx } in hosted {
        let routes = service.routes();
        for grpc_service in routes.grpc {
            if !seen.insert(grpc_service.name()) {
                return Err(Error::invalid_argument(format!(
                    "service `{}`: gRPC service `{}` is served by another service on this node",
                    ctx.name(),
                    grpc_service.name()
                )));
            }
            owners.push((grpc_service.name().to_owned(), ctx.name().to_owned()));
            grpc_names.push((grpc_service.name().to_owned(), ctx.descriptor().clone()));
            services.push((grpc_service, Some(ctx.clone())));
        }
        descriptor_sets.extend(routes.file_descriptor_sets);
        grpc_names.push((ctx.name().to_owned(), ctx.descriptor().clone()));
    }
    let reflection_v1 = reflection(&descriptor_sets)
        .build_v1()
        .map_err(|err| Error::invalid_argument(format!("gRPC reflection: {err}")))?;
    let reflection_v1alpha = reflection(&descriptor_sets)
        .build_v1alpha()
        .map_err(|err| Error::invalid_argument(format!("gRPC reflection: {err}")))?;
    services.extend([
        (GrpcService::new(health_service), None),
        (
            GrpcService::new(IdleRequests::new(reflection_v1, idle)),
            None,
        ),
        (
            GrpcService::new(IdleRequests::new(reflection_v1alpha, idle)),
            None,
        ),
    ]);
    Ok(GrpcAssembly {
        services: GrpcServices(services),
        names: grpc_names,
        descriptor_sets,
    })
}

/// A node's tonic services, each with the context of the service hosting it.
struct GrpcServices(Vec<(GrpcService, Option<ServiceContext>)>);

impl GrpcServices {
    /// Every service with `layers` in its route, and `UNIMPLEMENTED` for
    /// any other path (through the same layers, so they see every call).
    fn router(&self, layers: &GrpcLayers) -> Router {
        let router = self.0.iter().fold(Router::new(), |router, (service, ctx)| {
            service.mount(router, layers, ctx.as_ref())
        });
        layers.unimplemented(router)
    }
}

/// The gRPC services every node serves (health, reflection), owned by the node.
fn builtin_grpc_owners(node: &str) -> Vec<(String, String)> {
    [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), node.to_owned()))
    .collect()
}

/// The admin endpoints: health, the registry, and `/metrics` when metrics
/// are on.
fn admin_routes(readiness: &Readiness, metrics: Option<&Metrics>) -> Router {
    let router = readiness.router();
    match metrics {
        Some(metrics) => router.merge(metrics::router(metrics.clone())),
        None => router,
    }
}

/// A reflection builder over the encoded descriptor sets.
fn reflection<'a>(descriptor_sets: &[&'a [u8]]) -> tonic_reflection::server::Builder<'a> {
    descriptor_sets.iter().fold(
        tonic_reflection::server::Builder::configure(),
        |builder, encoded| builder.register_encoded_file_descriptor_set(encoded),
    )
}

/// What every HTTP router gets inside tracing: body limits, deadline,
/// problem+json for bare error answers.
fn http_edge(limits: &Limits) -> HttpEdgeLayer {
    HttpEdgeLayer::new(limits.http_body_limit).body_idle_timeout(limits.http_body_idle_timeout)
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;
    use crate::service::ServiceBuilder as Builder;

    fn limit(route: &str) -> RateLimitRule {
        RateLimitRule {
            route: route.to_owned(),
            method: None,
            limit: 10,
            period: Duration::from_secs(60),
            burst: 0,
            key: crate::middleware::rate_limit::RateLimitKey::Ip,
        }
    }

    /// A rate limit written relative to a nested router, as routes were
    /// before they named the full path, is reported with the full path.
    #[test]
    fn rate_limits_matching_nothing_served_are_reported_with_the_full_path() {
        let service = Builder::new("shop", "1.0.0")
            .unwrap()
            .route("/v1/orders/{id}", get(|| async { "order" }))
            .nest(
                "/admin",
                Router::new().route("/users", get(|| async { "users" })),
            )
            .build()
            .unwrap();
        let mut served = ServedPaths::default();
        served.add(&service.routes());
        served.admin(METRICS_PATH);
        let rules = [
            limit("/v1/orders/{order}"),
            limit("/admin/users"),
            limit("/metrics"),
            limit("/grpc.health.v1.Health/Check"),
            limit("/users"),
            limit("/users"),
            limit("/v2/orders"),
        ];
        assert_eq!(
            unserved_rate_limits(&rules, &served),
            vec![
                ("/users", vec!["/admin/users".to_owned()]),
                ("/v2/orders", vec!["/admin/v2/orders".to_owned()]),
            ]
        );
    }
}
