//! [`ServiceRoutes`]: the gRPC services and HTTP routes a service serves.

use std::{convert::Infallible, fmt, sync::Arc};

use axum::{Router, routing::MethodRouter};
use tonic::{body::Body, server::NamedService};

use super::{ServiceContext, context::WithContext};
use crate::rpc::grpc::GrpcLayers;

type MountGrpc = dyn Fn(Router, &GrpcLayers, Option<&ServiceContext>) -> Router + Send + Sync;

/// A tonic server a node can mount: what `tonic-build` generates as
/// `FooServer<T>` (any tower service of the same shape with a gRPC name).
pub trait GrpcServer:
    tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcServer for S where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// One tonic service (a generated `FooServer<T>`), type-erased so the node can
/// mount it with the owning service's context.
#[derive(Clone)]
pub struct GrpcService {
    name: &'static str,
    mount: Arc<MountGrpc>,
}

impl GrpcService {
    /// Wraps a tonic service.
    pub fn new<S: GrpcServer>(service: S) -> Self {
        Self {
            name: S::NAME,
            mount: Arc::new(move |router, layers, ctx| match ctx {
                Some(ctx) => layers.mount(
                    router,
                    S::NAME,
                    WithContext::new(service.clone(), ctx.clone()),
                ),
                None => layers.mount(router, S::NAME, service.clone()),
            }),
        }
    }

    /// The fully qualified gRPC service name, such as `shop.echo.v1.Echo`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Serves it on `router` with `layers`, and with the context of the
    /// service that hosts it (none for the node's own: health, reflection).
    pub(crate) fn mount(
        &self,
        router: Router,
        layers: &GrpcLayers,
        ctx: Option<&ServiceContext>,
    ) -> Router {
        (self.mount)(router, layers, ctx)
    }
}

impl fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The gRPC services and HTTP routes of one service.
#[derive(Clone, Default)]
pub struct ServiceRoutes {
    /// gRPC services, each under `/<package>.<Service>/`.
    pub grpc: Vec<GrpcService>,
    /// HTTP routes by path (axum syntax: `/v1/users/{id}`).
    pub http: Vec<(String, MethodRouter)>,
    /// Whole routers nested under a path prefix.
    pub nested: Vec<(String, Router)>,
    /// Encoded `FileDescriptorSet`s of the gRPC contracts, for reflection.
    pub file_descriptor_sets: Vec<&'static [u8]>,
}

impl fmt::Debug for ServiceRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRoutes")
            .field("grpc", &self.grpc)
            .field(
                "http",
                &self.http.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            )
            .field(
                "nested",
                &self.nested.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
