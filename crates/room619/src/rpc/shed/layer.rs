//! [`LoadShedLayer`]: the permits shared by every service it wraps.

use std::sync::Arc;

use tower::Layer;

use super::{LoadShed, Permits};

/// Sheds requests beyond `max_concurrent` in flight; see the
/// [module docs](super). Clones share the same permits, so one layer applied
/// to several routers limits them together.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Permits>,
}

impl LoadShedLayer {
    /// A limit of `max_concurrent` requests in flight (at least 1).
    #[must_use]
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Permits::new(max_concurrent.max(1))),
        }
    }

    /// The configured limit.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.permits.limit
    }

    /// How many requests hold a permit now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.permits.in_flight()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: Arc::clone(&self.permits),
        }
    }
}
