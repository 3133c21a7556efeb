//! Assembles the routers of all hosted services into what a listener serves.

use std::{collections::HashSet, sync::Arc};

use axum::{Extension, Router};
use tonic::service::RoutesBuilder;
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use tower::ServiceBuilder;

use super::{
    health::{LIVE_PATH, READY_PATH, Readiness},
    registry::REGISTRY_PATH,
};
use crate::{
    Error, Result,
    config::{Config, Limits},
    middleware::NodeMiddleware,
    observability::{
        metrics::{self, METRICS_PATH, Metrics},
        server::{GrpcRoutes, HttpOwners, ObserveLayer},
    },
    rpc::{
        ProtocolSplit,
        client::LocalRouters,
        deadline::DeadlineLayer,
        grpc::{LimitedMessages, MessageLimitLayer},
        http::{HttpEdgeLayer, RouteTable, not_found},
        shed::LoadShedLayer,
    },
    service::{Registry, Service, ServiceContext, TrackLayer},
};

/// The owner named when a service's route collides with an admin route.
const ADMIN_OWNER: &str = "room619 admin endpoints";

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
    /// Auth and rate limiting: started with the node, updatable at run time.
    pub(crate) middleware: NodeMiddleware,
}

/// What a re-assembly keeps of a running node (services added or removed):
/// its readiness, whose gRPC health statuses are kept, and its middleware,
/// whose keys and rate-limit state are kept.
#[derive(Clone, Copy)]
pub(crate) struct Existing<'a> {
    pub(crate) readiness: &'a Readiness,
    pub(crate) middleware: &'a NodeMiddleware,
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
    let reporter = existing.map_or_else(HealthReporter::new, |e| e.readiness.reporter());
    let health_service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));

    let GrpcAssembly {
        routes: grpc,
        names: grpc_names,
        descriptor_sets,
    } = grpc_routes(hosted, health_service, &mut grpc_owners)?;
    let limits = &config.limits;
    let grpc_observe =
        ObserveLayer::grpc(GrpcRoutes::new(&grpc_owners, &descriptor_sets), measured);
    // Its message limits and auth and rate limiting join the outer layers
    // (`grpc_outer`): tonic's router answers unknown methods with a
    // fallback, so those layers see every call either way.
    let grpc_router = grpc.routes().into_axum_router();

    // HTTP: every hosted route, checked for conflicts before axum sees it.
    let readiness = match existing {
        Some(Existing { readiness, .. }) => {
            readiness.set_grpc_names(grpc_names);
            readiness.clone()
        }
        None => Readiness::new(
            config.node.name.clone(),
            registry.clone(),
            reporter,
            grpc_names,
        ),
    };
    let mut table = RouteTable::default();
    let mut http = Router::new();
    let route_names = measured.map_or_else(Default::default, |m| m.server().routes.clone());
    let mut owners = HttpOwners::new(node_name, route_names.clone());
    let admin_router = || admin_routes(&readiness, measured);
    if !separate_admin {
        table.claim(ADMIN_OWNER, LIVE_PATH)?;
        table.claim(ADMIN_OWNER, READY_PATH)?;
        table.claim(ADMIN_OWNER, REGISTRY_PATH)?;
        table.claim(ADMIN_OWNER, METRICS_PATH)?;
        http = http.merge(middleware.guard(admin_router()));
    }
    for Hosted { service, ctx } in hosted {
        let routes = service.routes();
        table.add(ctx.name(), &routes)?;
        // Auth and rate limiting, tracking and the context as one layer:
        // axum boxes every layer of a route per request. (The fallback is
        // not guarded: an unknown path is a 404 whoever asks.)
        let per_route = ServiceBuilder::new()
            .layer(middleware.guard_layers())
            .layer(TrackLayer::new(
                ctx.in_flight().clone(),
                ctx.descriptor().clone(),
            ))
            .layer(Extension(ctx.clone()));
        for (path, handler) in routes.http {
            owners.add_route(&path, ctx.name());
            let handler = handler.layer::<_, std::convert::Infallible>(per_route.clone());
            http = http.route(&path, handler);
        }
        for (prefix, nested) in routes.nested {
            owners.add_nested(&prefix, ctx.name());
            http = http.nest(&prefix, nested.layer(per_route.clone()));
        }
    }
    let observe = ObserveLayer::http(owners, measured);
    let http = http.fallback(not_found);
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
    let (local, grpc_router, http) = layered(
        &middleware,
        (grpc_router, http),
        (&grpc_observe, &observe),
        limits,
    );
    Ok(Assembled {
        local,
        main: ProtocolSplit::new(grpc_router, http),
        admin,
        readiness,
        middleware,
    })
}

/// Auth and rate limiting for the hosted services' access rules.
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
    match existing {
        Some(running) => running.rebuilt(policies),
        None => NodeMiddleware::new(config, policies),
    }
}

/// The routers' outer layers: what colocated clients call, and what the
/// network path serves (`(local, grpc, http)`).
fn layered(
    middleware: &NodeMiddleware,
    (grpc_router, http): (Router, Router),
    (grpc_observe, observe): (&ObserveLayer, &ObserveLayer),
    limits: &Limits,
) -> (LocalRouters, Router, Router) {
    // Colocated clients call the same stack, minus load shedding: an
    // in-process call is part of a request already admitted, so its shed
    // layer is its own and holds as many permits as a semaphore can.
    let unshed = LoadShedLayer::new(usize::MAX);
    // (`with_state` finishes every handler's route once, as `ProtocolSplit`
    // does for the network path.)
    let local = LocalRouters {
        grpc: grpc_outer(
            middleware,
            grpc_router.clone(),
            grpc_observe,
            &unshed,
            limits,
        )
        .with_state(()),
        http: http_outer(middleware, http.clone(), observe, &unshed, limits).with_state(()),
    };
    // The network path, outermost first: request id and sensitive headers,
    // tracing and metrics, load shedding (one per-node limit over both
    // routers), deadline (and HTTP body limits), auth, rate limit, handler.
    let shed = LoadShedLayer::new(limits.max_concurrent_requests);
    let grpc_router = grpc_outer(middleware, grpc_router, grpc_observe, &shed, limits);
    let http = http_outer(middleware, http, observe, &shed, limits);
    (local, grpc_router, http)
}

/// The gRPC router's layers (request id, sensitive headers, tracing and
/// metrics, load shedding, deadline, message limits, auth, rate limit) as
/// one `Router::layer`: axum boxes and clones every request once per layer.
fn grpc_outer(
    middleware: &NodeMiddleware,
    grpc: Router,
    observe: &ObserveLayer,
    shed: &LoadShedLayer,
    limits: &Limits,
) -> Router {
    grpc.layer(
        ServiceBuilder::new()
            .layer(NodeMiddleware::edge_layers())
            .layer(observe.clone())
            .layer(shed.clone())
            .layer(DeadlineLayer::grpc())
            .map_response(limited_body)
            .layer(MessageLimitLayer::new(
                limits.grpc_max_decode_message_size,
                limits.grpc_max_encode_message_size,
            ))
            .layer(middleware.guard_layers()),
    )
}

/// A gRPC answer whose messages are limited, as axum's body.
fn limited_body(
    response: http::Response<LimitedMessages<axum::body::Body>>,
) -> http::Response<axum::body::Body> {
    response.map(axum::body::Body::new)
}

/// The HTTP router's outer layers (request id, sensitive headers, CORS and
/// compression, tracing and metrics, load shedding, body limits and
/// deadline): one `Router::layer` without CORS and compression, two with.
fn http_outer(
    middleware: &NodeMiddleware,
    http: Router,
    observe: &ObserveLayer,
    shed: &LoadShedLayer,
    limits: &Limits,
) -> Router {
    let inner = ServiceBuilder::new()
        .layer(observe.clone())
        .layer(shed.clone())
        .layer(http_edge(limits));
    if middleware.has_http_layers() {
        middleware.http_edge(http.layer(inner))
    } else {
        http.layer(
            ServiceBuilder::new()
                .layer(NodeMiddleware::edge_layers())
                .layer(inner),
        )
    }
}

/// The gRPC side of a node, before its layers.
struct GrpcAssembly {
    routes: RoutesBuilder,
    /// What gRPC health answers for.
    names: Vec<String>,
    descriptor_sets: Vec<&'static [u8]>,
}

/// Every hosted tonic service, then health and reflection: the routes, the
/// names gRPC health answers for, and the descriptor sets. Adds each gRPC
/// service and its room619 owner to `owners`.
fn grpc_routes(
    hosted: &[Hosted],
    health_service: HealthServer<HealthService>,
    owners: &mut Vec<(String, String)>,
) -> Result<GrpcAssembly> {
    let mut grpc = RoutesBuilder::default();
    let mut grpc_names: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut descriptor_sets = vec![tonic_health::pb::FILE_DESCRIPTOR_SET];
    for Hosted { service, ctx } in hosted {
        let routes = service.routes();
        for grpc_service in &routes.grpc {
            if !seen.insert(grpc_service.name()) {
                return Err(Error::invalid_argument(format!(
                    "service `{}`: gRPC service `{}` is served by another service on this node",
                    ctx.name(),
                    grpc_service.name()
                )));
            }
            grpc_service.add_to(&mut grpc, ctx);
            owners.push((grpc_service.name().to_owned(), ctx.name().to_owned()));
            grpc_names.push(grpc_service.name().to_owned());
        }
        descriptor_sets.extend(routes.file_descriptor_sets);
        grpc_names.push(ctx.name().to_owned());
    }
    let reflection_v1 = reflection(&descriptor_sets)
        .build_v1()
        .map_err(|err| Error::invalid_argument(format!("gRPC reflection: {err}")))?;
    let reflection_v1alpha = reflection(&descriptor_sets)
        .build_v1alpha()
        .map_err(|err| Error::invalid_argument(format!("gRPC reflection: {err}")))?;
    grpc.add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(GrpcAssembly {
        routes: grpc,
        names: grpc_names,
        descriptor_sets,
    })
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
