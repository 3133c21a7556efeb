//! [`LoadShedLayer`]: the permits shared by every service it wraps.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::Layer;

use super::LoadShed;

/// Sheds requests beyond `max_concurrent` in flight; see the
/// [module docs](super). Clones share the same permits, so one layer applied
/// to several routers limits them together.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    /// A limit of `max_concurrent` requests in flight (at least 1; capped at
    /// the largest number of permits a semaphore can hold).
    #[must_use]
    pub fn new(max_concurrent: usize) -> Self {
        let limit = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The configured limit.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many requests hold a permit now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: Arc::clone(&self.permits),
            limit: self.limit,
        }
    }
}
