//! [`Health`]: what a service's health check reports.

use serde::Serialize;

/// The outcome of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Health {
    /// Everything works.
    Healthy,
    /// Working with reduced function (a cache is down, say); still ready.
    Degraded(String),
    /// Not able to serve; the node reports not ready.
    Unhealthy(String),
}

impl Health {
    /// Whether the service can take traffic (healthy or degraded).
    #[must_use]
    pub fn is_serving(&self) -> bool {
        !matches!(self, Self::Unhealthy(_))
    }
}
