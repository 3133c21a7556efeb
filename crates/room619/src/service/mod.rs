//! Services: the unit a node hosts, with a clear contract.
//!
//! A service has a [`ServiceDescriptor`] (name, semver version, description),
//! gRPC services and HTTP routes ([`ServiceRoutes`]), start and stop hooks and a
//! health check. Most services are made with [`ServiceBuilder`]; a type can also
//! implement [`Service`] itself.
//!
//! ```
//! use axum::routing::get;
//! use room619::service::{Service as _, ServiceBuilder};
//!
//! let service = ServiceBuilder::new("greeter", "1.2.0")
//!     .unwrap()
//!     .description("Says hello")
//!     .route("/v1/hello", get(|| async { "hello" }))
//!     .on_start(|ctx| async move {
//!         tracing::info!(service = ctx.name(), "warming up");
//!         Ok(())
//!     })
//!     .build()
//!     .unwrap();
//! assert_eq!(service.descriptor().name(), "greeter");
//! ```
//!
//! Handlers reach their [`ServiceContext`] through the request extensions:
//! `axum::Extension<ServiceContext>` in an axum handler,
//! `request.extensions().get::<ServiceContext>()` in a tonic one.

mod builder;
mod context;
mod dependency;
pub mod deprecation;
mod descriptor;
mod health;
mod hooks;
mod in_flight;
mod registry;
mod routes;
mod subscriber;

use futures_util::future::BoxFuture;

pub use builder::{BuiltService, ServiceBuilder};
pub use context::ServiceContext;
pub use dependency::DependencyHealth;
pub use deprecation::Deprecation;
pub use descriptor::ServiceDescriptor;
pub use health::Health;
pub(crate) use in_flight::{Track, TrackLayer};
pub use registry::{Registry, ServiceState, ServiceStatus};
pub use routes::{GrpcServer, GrpcService, ServiceRoutes};
pub use subscriber::Subscriber;

use crate::Result;

/// A service that a [`Node`](crate::node::Node) can host.
///
/// The node calls [`routes`](Service::routes) when it assembles what it
/// serves (at start, and again whenever a service is added or removed, once
/// for its gRPC services and once for its HTTP routes: build shared state
/// outside it, in the service, and hand out clones), then
/// [`start`](Service::start), then subscribes its
/// [`subscribers`](Service::subscribers); it calls [`stop`](Service::stop)
/// during shutdown after in-flight requests and messages have drained, and
/// [`health`](Service::health) whenever readiness is asked (and every few
/// seconds, for gRPC health).
pub trait Service: Send + Sync + 'static {
    /// The service's name and version.
    fn descriptor(&self) -> &ServiceDescriptor;

    /// The gRPC services and HTTP routes this service serves.
    fn routes(&self) -> ServiceRoutes;

    /// Runs before the service takes traffic. An error (or a panic) aborts
    /// the node's start.
    fn start(&self, _ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Runs after the node stopped taking traffic and drained; services stop
    /// in the reverse of their start order. An error or a panic is logged
    /// and answered by the shutdown (or `remove_service`), and the rest of
    /// it goes on.
    fn stop(&self, _ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The message handlers the node runs for this service: subscribed after
    /// [`start`](Service::start), drained before [`stop`](Service::stop).
    /// Default: none.
    fn subscribers(&self) -> Vec<Subscriber> {
        Vec::new()
    }

    /// What callers of each method and route must prove (see
    /// [`middleware::auth`](crate::middleware::auth)). Default: no rules, so
    /// with `[auth]` configured every call needs an authenticated caller.
    fn access(&self) -> crate::middleware::auth::AccessPolicy {
        crate::middleware::auth::AccessPolicy::default()
    }

    /// Reports the service's health (its dependencies, its own state). A
    /// check that panics, or takes longer than 5 s, reports
    /// [`Health::Unhealthy`].
    fn health(&self) -> BoxFuture<'static, Health> {
        Box::pin(async { Health::Healthy })
    }

    /// Reports the health of each named dependency (database, NATS, ...),
    /// listed in the readiness answer: a degraded one keeps the node ready,
    /// an unhealthy (failing) one makes it not ready; checks that panic, or
    /// take longer than 6 s together, are failing. Default: none.
    fn dependencies(&self) -> BoxFuture<'static, Vec<DependencyHealth>> {
        Box::pin(async { Vec::new() })
    }
}
