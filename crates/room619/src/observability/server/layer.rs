//! [`ObserveLayer`]: wraps a router's routes in [`Observe`].

use std::sync::Arc;

use tower::Layer;

use super::{GrpcRoutes, HttpOwners, Observe, Protocol, Shared, routes::BoundRoute};
use crate::observability::metrics::Metrics;

/// Observes every request of the router it is applied to.
#[derive(Clone)]
pub(crate) struct ObserveLayer {
    shared: Arc<Shared>,
    /// The route template it is applied to, when it is applied to one route.
    route: Option<Arc<BoundRoute>>,
}

impl ObserveLayer {
    /// For the gRPC router: `routes` bounds the method labels.
    pub(crate) fn grpc(routes: GrpcRoutes, metrics: Option<&Metrics>) -> Self {
        Self::new(Protocol::Grpc(routes), metrics)
    }

    /// For an HTTP router.
    pub(crate) fn http(owners: HttpOwners, metrics: Option<&Metrics>) -> Self {
        Self::new(Protocol::Http(owners), metrics)
    }

    fn new(protocol: Protocol, metrics: Option<&Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                protocol,
                metrics: metrics.map(|metrics| metrics.server().clone()),
            }),
            route: None,
        }
    }

    /// The same layer for the HTTP route `template` alone: its requests
    /// are labelled without looking their matched path up.
    pub(crate) fn for_route(&self, template: &str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            route: Some(Arc::new(BoundRoute::new(template))),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            shared: Arc::clone(&self.shared),
            route: self.route.clone(),
        }
    }
}
