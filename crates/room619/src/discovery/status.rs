//! [`StatusCell`]: a remote backend's current [`DiscoveryStatus`], written by
//! its background task and read by readiness.

use std::sync::{PoisonError, RwLock};

use super::DiscoveryStatus;

/// A [`DiscoveryStatus`] shared between a backend and its background task;
/// it starts `Ok`.
#[derive(Debug)]
pub(crate) struct StatusCell(RwLock<DiscoveryStatus>);

impl Default for StatusCell {
    fn default() -> Self {
        Self(RwLock::new(DiscoveryStatus::Ok))
    }
}

impl StatusCell {
    /// The status now.
    pub(crate) fn get(&self) -> DiscoveryStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the status, first calling `on_change` with it when it differs
    /// from the current one (under the lock, so changes are seen in order).
    pub(crate) fn set(&self, status: DiscoveryStatus, on_change: impl FnOnce(&DiscoveryStatus)) {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if *current != status {
            on_change(&status);
            *current = status;
        }
    }
}
