//! `GET /registry`: what the node knows of services, read-only, as JSON: the
//! services it hosts (with their state and gRPC services) and every instance
//! its discovery backend knows (with its health), for `room619 registry
//! list` and operators.

use axum::{Json, extract::State, response::IntoResponse};
use serde::Serialize;

use super::health::{Phase, Readiness};
use crate::{
    discovery::{DiscoveryStatus, Instance},
    service::ServiceState,
};

/// The path of the registry endpoint (on the admin listener when the node
/// has one).
pub const REGISTRY_PATH: &str = "/registry";

/// The answer of `GET /registry`.
#[derive(Serialize)]
struct RegistryReport {
    node: String,
    phase: Phase,
    hosted: Vec<HostedReport>,
    discovery: Option<DiscoveryReport>,
}

/// A service this node hosts.
#[derive(Serialize)]
struct HostedReport {
    name: String,
    version: String,
    state: ServiceState,
    /// The gRPC services it serves (`package.Service`).
    grpc: Vec<String>,
}

/// What the node's discovery backend knows.
#[derive(Serialize)]
struct DiscoveryReport {
    backend: &'static str,
    #[serde(flatten)]
    status: DiscoveryStatus,
    instances: Vec<Instance>,
}

/// `GET /registry`.
pub(super) async fn list(State(readiness): State<Readiness>) -> impl IntoResponse {
    let hosted = readiness
        .registry()
        .snapshot()
        .into_iter()
        .map(|(service, status)| HostedReport {
            name: status.descriptor.name().to_owned(),
            version: status.descriptor.version().to_string(),
            state: status.state,
            grpc: service
                .routes()
                .grpc
                .iter()
                .map(|grpc| grpc.name().to_owned())
                .collect(),
        })
        .collect();
    let discovery = readiness.discovery().map(|discovery| DiscoveryReport {
        backend: discovery.backend(),
        status: discovery.status(),
        instances: discovery.instances(),
    });
    Json(RegistryReport {
        node: readiness.node().to_owned(),
        phase: readiness.phase(),
        hosted,
        discovery,
    })
}
