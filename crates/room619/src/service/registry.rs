//! [`Registry`]: the services hosted in this process and their states.

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use semver::VersionReq;
use serde::Serialize;

use super::{Service, ServiceDescriptor};

/// Where a hosted service is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServiceState {
    /// Registered on the node, not started yet.
    Registered,
    /// Its start hook is running.
    Starting,
    /// Taking traffic.
    Running,
    /// The node is shutting down; the service drains.
    Stopping,
    /// Its stop hook has run.
    Stopped,
    /// Its start or stop hook failed.
    Failed,
}

/// A snapshot of one hosted service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// Who the service is.
    pub descriptor: ServiceDescriptor,
    /// Its lifecycle state.
    pub state: ServiceState,
}

/// The in-process registry of the services a node hosts. Cheap to clone; all
/// clones share one registry.
///
/// ```
/// use room619::service::{Registry, ServiceBuilder, ServiceState};
///
/// let registry = Registry::default();
/// let service = ServiceBuilder::new("echo", "1.0.0").unwrap().build().unwrap();
/// registry.register(std::sync::Arc::new(service)).unwrap();
/// let found = registry.find("echo", &"^1".parse().unwrap()).unwrap();
/// assert_eq!(found.state, ServiceState::Registered);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<RwLock<Vec<Entry>>>,
}

struct Entry {
    service: Arc<dyn Service>,
    state: ServiceState,
}

impl Registry {
    /// Adds a service in state [`ServiceState::Registered`]. On a running
    /// node, add services with
    /// [`NodeHandle::add_service`](crate::NodeHandle::add_service): a service
    /// registered here directly is listed but never started nor served.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when a service with the same name and major version is
    /// registered (two majors of one service may run side by side).
    pub fn register(&self, service: Arc<dyn Service>) -> crate::Result<()> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let new = service.descriptor();
        if let Some(existing) = entries.iter().find(|entry| {
            let old = entry.service.descriptor();
            old.name() == new.name() && old.version().major == new.version().major
        }) {
            return Err(crate::Error::already_exists(format!(
                "service {new} conflicts with {} already registered on this node",
                existing.service.descriptor()
            )));
        }
        entries.push(Entry {
            service,
            state: ServiceState::Registered,
        });
        Ok(())
    }

    /// Snapshots of every registered service, in registration order.
    #[must_use]
    pub fn list(&self) -> Vec<ServiceStatus> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.iter().map(Entry::status).collect()
    }

    /// The newest registered service called `name` whose version matches `requirement`.
    #[must_use]
    pub fn find(&self, name: &str, requirement: &VersionReq) -> Option<ServiceStatus> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .filter(|entry| {
                let descriptor = entry.service.descriptor();
                descriptor.name() == name && requirement.matches(descriptor.version())
            })
            .max_by(|a, b| {
                a.service
                    .descriptor()
                    .version()
                    .cmp(b.service.descriptor().version())
            })
            .map(Entry::status)
    }

    /// Every registered service with its status, in registration order.
    pub(crate) fn snapshot(&self) -> Vec<(Arc<dyn Service>, ServiceStatus)> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|entry| (Arc::clone(&entry.service), entry.status()))
            .collect()
    }

    /// Removes the service with `descriptor` (dynamic removal).
    pub(crate) fn remove(&self, descriptor: &ServiceDescriptor) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.service.descriptor() != descriptor);
    }

    pub(crate) fn set_state(&self, descriptor: &ServiceDescriptor, state: ServiceState) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries
            .iter_mut()
            .find(|entry| entry.service.descriptor() == descriptor)
        {
            entry.state = state;
        }
    }
}

impl Entry {
    fn status(&self) -> ServiceStatus {
        ServiceStatus {
            descriptor: self.service.descriptor().clone(),
            state: self.state,
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list()).finish()
    }
}
