//! [`GrpcLayers`]: the node's gRPC layers, mounted with each tonic service
//! inside that service's one route.
//!
//! axum boxes every route once per request, and every `Router::layer`
//! around it once more; tonic's own router adds a body conversion on each
//! side. Mounting the layered service as the route itself skips all three.

use std::convert::Infallible;

use axum::Router;
use http::{Request, Response};
use tower::{
    Service, ServiceBuilder, ServiceExt as _,
    layer::util::{Identity, Stack},
    util::MapResponseLayer,
};

use super::{LimitedMessages, MessageLimitLayer};
use crate::{
    config::Limits,
    middleware::{GuardLayers, NodeMiddleware},
    observability::server::ObserveLayer,
    rpc::{deadline::DeadlineLayer, shed::LoadShedLayer},
};

/// A tonic answer with limited messages, as axum's body.
type LimitedBody = fn(Response<LimitedMessages<axum::body::Body>>) -> Response<axum::body::Body>;

/// Outermost first: request id, sensitive headers, tracing and metrics (all
/// three in the observe layer), load shedding, deadline, message limits, auth, rate limit.
type Stacked = Stack<
    GuardLayers,
    Stack<
        MessageLimitLayer,
        Stack<
            MapResponseLayer<LimitedBody>,
            Stack<DeadlineLayer, Stack<LoadShedLayer, Stack<ObserveLayer, Identity>>>,
        >,
    >,
>;

/// The layers every gRPC route of a node gets, to mount services with.
#[derive(Clone)]
pub(crate) struct GrpcLayers {
    stack: ServiceBuilder<Stacked>,
}

impl GrpcLayers {
    pub(crate) fn new(
        middleware: &NodeMiddleware,
        observe: &ObserveLayer,
        shed: &LoadShedLayer,
        limits: &Limits,
    ) -> Self {
        let limited_body: LimitedBody = |response| response.map(axum::body::Body::new);
        let stack = ServiceBuilder::new()
            .layer(observe.clone())
            .layer(shed.clone())
            .layer(DeadlineLayer::grpc())
            .map_response(limited_body)
            .layer(MessageLimitLayer::new(
                limits.grpc_max_decode_message_size,
                limits.grpc_max_encode_message_size,
            ))
            .layer(middleware.guard_layers().into_inner());
        Self { stack }
    }

    /// Serves `service` for every method of the gRPC service `name`, as
    /// tonic's router would (`/<name>/<method>`).
    pub(crate) fn mount<S>(&self, router: Router, name: &str, service: S) -> Router
    where
        S: Service<
                Request<tonic::body::Body>,
                Response = Response<tonic::body::Body>,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        // (Auth and rate limiting answer with axum's body: tonic's is put in
        // one, as axum's route would.)
        let service = service
            .map_request(|request: Request<LimitedMessages<axum::body::Body>>| {
                request.map(tonic::body::Body::new)
            })
            .map_response(|response: Response<tonic::body::Body>| {
                response.map(axum::body::Body::new)
            });
        router.route_service(&format!("/{name}/{{*rest}}"), self.stack.service(service))
    }

    /// Answers `UNIMPLEMENTED` for every other path, through the same
    /// layers, as tonic's router does.
    pub(crate) fn unimplemented(&self, router: Router) -> Router {
        let unimplemented = tower::service_fn(|_: Request<LimitedMessages<axum::body::Body>>| {
            let (parts, ()) = tonic::Status::unimplemented("")
                .into_http::<()>()
                .into_parts();
            std::future::ready(Ok::<_, Infallible>(Response::from_parts(
                parts,
                axum::body::Body::empty(),
            )))
        });
        router.fallback_service(self.stack.service(unimplemented))
    }
}
