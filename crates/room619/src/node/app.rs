//! Assembles the routers of all hosted services into what a listener serves.

use std::{collections::HashSet, sync::Arc};

use axum::{Extension, Router};
use tonic::service::RoutesBuilder;

use super::health::{LIVE_PATH, READY_PATH, Readiness};
use crate::{
    Error, Result,
    config::Config,
    middleware::NodeMiddleware,
    rpc::{
        ProtocolSplit,
        client::LocalRouters,
        deadline::DeadlineLayer,
        grpc::MessageLimitLayer,
        http::{HttpEdgeLayer, RouteTable, not_found},
    },
    service::{Registry, Service, ServiceContext},
};

/// The owner named when a service's route collides with an admin route.
const ADMIN_OWNER: &str = "room619 admin endpoints";

/// A service and the context it runs with.
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

pub(crate) fn assemble(
    config: &Config,
    registry: &Registry,
    hosted: &[Hosted],
) -> Result<Assembled> {
    let separate_admin = config.node.admin_listen.is_some();
    let policies: Vec<_> = hosted
        .iter()
        .map(|host| (host.ctx.name().to_owned(), host.service.access()))
        .collect();
    let middleware = NodeMiddleware::new(
        config,
        policies
            .iter()
            .map(|(name, policy)| (name.as_str(), policy)),
    )?;
    let (reporter, health_service) = tonic_health::server::health_reporter();

    // gRPC: every hosted tonic service, then health and reflection.
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
    let limits = &config.limits;
    let grpc_router = middleware
        .guard(NodeMiddleware::grpc(grpc.routes().into_axum_router()))
        .layer(MessageLimitLayer::new(
            limits.grpc_max_decode_message_size,
            limits.grpc_max_encode_message_size,
        ))
        .layer(DeadlineLayer::grpc());
    let grpc_router = NodeMiddleware::edge(grpc_router);

    // HTTP: every hosted route, checked for conflicts before axum sees it.
    let readiness = Readiness::new(
        config.node.name.clone(),
        registry.clone(),
        reporter,
        grpc_names,
    );
    let mut table = RouteTable::default();
    let mut http = Router::new();
    if !separate_admin {
        table.claim(ADMIN_OWNER, LIVE_PATH)?;
        table.claim(ADMIN_OWNER, READY_PATH)?;
        http = http.merge(readiness.router());
    }
    for Hosted { service, ctx } in hosted {
        let routes = service.routes();
        table.add(ctx.name(), &routes)?;
        for (path, handler) in routes.http {
            http = http.route(&path, handler.layer(Extension(ctx.clone())));
        }
        for (prefix, router) in routes.nested {
            http = http.nest(&prefix, router.layer(Extension(ctx.clone())));
        }
    }
    let http = middleware.http_edge(http_stack(middleware.guard(http), limits.http_body_limit));
    let admin = separate_admin.then(|| {
        let unimplemented = tonic::service::Routes::default().into_axum_router();
        ProtocolSplit::new(
            unimplemented,
            http_stack(readiness.router(), limits.http_body_limit),
        )
    });
    let local = LocalRouters {
        grpc: grpc_router.clone(),
        http: http.clone(),
    };
    Ok(Assembled {
        local,
        main: ProtocolSplit::new(grpc_router, http),
        admin,
        readiness,
        middleware,
    })
}

/// A reflection builder over the encoded descriptor sets.
fn reflection<'a>(descriptor_sets: &[&'a [u8]]) -> tonic_reflection::server::Builder<'a> {
    descriptor_sets.iter().fold(
        tonic_reflection::server::Builder::configure(),
        |builder, encoded| builder.register_encoded_file_descriptor_set(encoded),
    )
}

/// What every HTTP router gets: the 404 fallback and the edge layer (body
/// limits, deadline, problem+json for bare error answers).
fn http_stack(router: Router, body_limit: usize) -> Router {
    router
        .fallback(not_found)
        .layer(HttpEdgeLayer::new(body_limit))
}
