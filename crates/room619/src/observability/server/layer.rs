//! [`ObserveLayer`]: wraps a router's routes in [`Observe`].

use std::sync::Arc;

use tower::Layer;

use super::{GrpcRoutes, HttpOwners, Observe, Protocol, Shared};
use crate::observability::metrics::Metrics;

/// Observes every request of the router it is applied to.
#[derive(Clone)]
pub(crate) struct ObserveLayer {
    shared: Arc<Shared>,
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
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
