//! [`ServiceBuilder`] and the [`BuiltService`] it makes.

use std::{collections::HashSet, fmt, future::Future, sync::Arc};

use axum::{Router, routing::MethodRouter};
use futures_util::future::BoxFuture;

use super::{
    DependencyHealth, GrpcServer, GrpcService, Health, Service, ServiceContext, ServiceDescriptor,
    ServiceRoutes, Subscriber,
    hooks::{Hook, Hooks},
};
use crate::{
    Error, Result,
    bus::{Event, Payload},
    middleware::auth::{AccessPolicy, AccessTable, Requirement, ServedPaths},
};

type HealthCheck = Arc<dyn Fn() -> BoxFuture<'static, Health> + Send + Sync>;
type Dependencies = Vec<(String, super::dependency::DependencyCheck)>;

/// Builds a [`Service`] from its parts.
///
/// Every setter takes and returns the builder by value; [`build`](Self::build)
/// checks the whole and returns an error instead of panicking on bad input
/// (duplicate or malformed routes, a gRPC service added twice).
///
/// Defaults: no description, no routes, no hooks, no subscribers, always
/// healthy.
#[must_use]
pub struct ServiceBuilder {
    descriptor: ServiceDescriptor,
    routes: ServiceRoutes,
    hooks: Hooks,
    health: Option<HealthCheck>,
    subscribers: Vec<Subscriber>,
    access: AccessPolicy,
    dependencies: Dependencies,
}

impl ServiceBuilder {
    /// Starts a service called `name` at semver `version`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the name or the version is invalid (see
    /// [`ServiceDescriptor::new`]).
    pub fn new(name: &str, version: &str) -> Result<Self> {
        Ok(Self {
            descriptor: ServiceDescriptor::new(name, version)?,
            routes: ServiceRoutes::default(),
            hooks: Hooks::default(),
            health: None,
            subscribers: Vec::new(),
            access: AccessPolicy::default(),
            dependencies: Vec::new(),
        })
    }

    /// Says what the service does (shown in health answers and the registry).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.descriptor = self.descriptor.with_description(description);
        self
    }

    /// Marks this version deprecated, going away at `sunset` if given: its
    /// HTTP responses and gRPC response metadata carry `Deprecation: true`
    /// and `Sunset: <HTTP-date>`, and calls to it log a warning at most once
    /// a minute. Default: not deprecated.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    ///
    /// let v1 = room619::ServiceBuilder::new("users", "1.4.0")
    ///     .unwrap()
    ///     .deprecated(Some(SystemTime::now() + Duration::from_secs(90 * 86_400)))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn deprecated(mut self, sunset: Option<std::time::SystemTime>) -> Self {
        self.descriptor = self.descriptor.deprecated(sunset);
        self
    }

    /// Serves a tonic service (a generated `FooServer<T>`).
    pub fn grpc(mut self, service: impl GrpcServer) -> Self {
        self.routes.grpc.push(GrpcService::new(service));
        self
    }

    /// Registers an encoded `FileDescriptorSet` of the service's contracts so
    /// gRPC reflection can describe them.
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.routes.file_descriptor_sets.push(encoded);
        self
    }

    /// Serves an HTTP route (axum path syntax, e.g. `/v1/users/{id}`).
    pub fn route(mut self, path: impl Into<String>, handler: MethodRouter) -> Self {
        self.routes.http.push((path.into(), handler));
        self
    }

    /// Serves a whole axum router under a path prefix such as `/v1/admin`.
    pub fn nest(mut self, prefix: impl Into<String>, router: Router) -> Self {
        self.routes.nested.push((prefix.into(), router));
        self
    }

    /// Runs `hook` before the service takes traffic; hooks run in the order
    /// they were added and an error (or a panic) aborts the node's start, or
    /// the [`add_service`](crate::node::NodeHandle::add_service) call. What a
    /// hook set up that must be released if a later hook fails belongs in
    /// [`lifecycle`](Self::lifecycle).
    pub fn on_start<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.hooks.on_start(hook_of(hook));
        self
    }

    /// Runs `hook` during shutdown, after in-flight requests drained; hooks
    /// run in the reverse of the order they were added, every one of them
    /// even when one fails (the first failure is the stop's error).
    pub fn on_stop<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.hooks.on_stop(hook_of(hook));
        self
    }

    /// A start hook and the stop hook that undoes it. `start` runs in order
    /// with the [`on_start`](Self::on_start) hooks, `stop` in reverse with
    /// the [`on_stop`](Self::on_stop) hooks; and when a start hook added
    /// after this one fails, panics or outlasts `node.start_timeout`, `stop`
    /// runs then (after the stops of the pairs started later), so what
    /// `start` set up is released whichever way the start ends. `stop` never
    /// runs when `start` itself failed.
    ///
    /// ```
    /// use room619::ServiceBuilder;
    ///
    /// # fn main() -> room619::Result<()> {
    /// let service = ServiceBuilder::new("catalog", "1.0.0")?
    ///     .lifecycle(
    ///         |_ctx| async { /* open a connection pool */ Ok(()) },
    ///         |_ctx| async { /* close it: at shutdown, or if the next hook fails */ Ok(()) },
    ///     )
    ///     .on_start(|_ctx| async { /* warm a cache from the pool */ Ok(()) })
    ///     .build()?;
    /// # drop(service);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lifecycle<S, SFut, T, TFut>(mut self, start: S, stop: T) -> Self
    where
        S: Fn(ServiceContext) -> SFut + Send + Sync + 'static,
        SFut: Future<Output = Result<()>> + Send + 'static,
        T: Fn(ServiceContext) -> TFut + Send + Sync + 'static,
        TFut: Future<Output = Result<()>> + Send + 'static,
    {
        self.hooks.paired(hook_of(start), hook_of(stop));
        self
    }

    /// Handles every message on `subject` (wildcards `*` and `>` allowed),
    /// decoded as a `T`; every instance of the service gets each message.
    /// See [`Subscriber`] for the delivery rules.
    pub fn subscribe<T, F, Fut>(self, subject: impl Into<String>, handler: F) -> Self
    where
        T: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscriber(Subscriber::new(subject, handler))
    }

    /// As [`subscribe`](Self::subscribe), but the members of queue group
    /// `group` (this service's instances, say) share the messages: each goes
    /// to one of them.
    pub fn queue_subscribe<T, F, Fut>(
        self,
        subject: impl Into<String>,
        group: impl Into<String>,
        handler: F,
    ) -> Self
    where
        T: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscriber(Subscriber::new(subject, handler).queue(group))
    }

    /// Handles the messages on `subject` through the JetStream durable
    /// consumer `durable`: stored, acked after the handler succeeds,
    /// redelivered with backoff on failure, dead-lettered after
    /// `max_deliver` attempts; each goes to one instance. On the memory and
    /// NATS core backends it is a queue group `durable` (at most once).
    pub fn durable_subscribe<T, F, Fut>(
        self,
        subject: impl Into<String>,
        durable: impl Into<String>,
        handler: F,
    ) -> Self
    where
        T: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscriber(Subscriber::new(subject, handler).durable(durable))
    }

    /// Answers requests on `subject` (see
    /// [`MessageBus::request`](crate::bus::MessageBus::request)) with what
    /// `handler` returns; the service's instances share the requests.
    pub fn respond<T, R, F, Fut>(self, subject: impl Into<String>, handler: F) -> Self
    where
        T: Payload,
        R: Payload,
        F: Fn(ServiceContext, Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        self.subscriber(Subscriber::responder(subject, handler))
    }

    /// Adds a subscriber made with [`Subscriber`]'s constructors.
    pub fn subscriber(mut self, subscriber: Subscriber) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    /// Requires `requirement` of callers of `path`: a gRPC method
    /// (`/users.v1.Users/Delete`), a whole gRPC service
    /// (`/users.v1.Users/{*method}`), an HTTP route (`/v1/users/{id}`), a
    /// path of a nested router, or a built-in path (`/metrics`,
    /// `/registry`, `/health/live`, `/health/ready`, gRPC health and
    /// reflection). Default, once `[auth]` is configured: an authenticated
    /// caller. [`build`](Self::build) refuses a second rule for the same
    /// path and method, and a rule that names nothing the service serves.
    /// See [`AccessPolicy`] for how paths match and
    /// [`middleware::auth`](crate::middleware::auth).
    ///
    /// A rule names the full path of a request, a nested router's prefix
    /// included: `/admin/users` for the route `/users` of a router nested
    /// at `/admin`. **Upgrading:** such rules used to be written relative to
    /// the prefix (`/users`); [`build`](Self::build) now refuses them and
    /// names the full path to write.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use room619::{ServiceBuilder, middleware::auth::Requirement};
    ///
    /// let admin = Router::new().route("/users", get(|| async { "every user" }));
    /// let service = ServiceBuilder::new("backoffice", "1.0.0")?
    ///     .nest("/admin", admin.clone())
    ///     .require("/admin/users", Requirement::roles(["admin"]))
    ///     .build()?;
    /// # drop(service);
    /// let relative = ServiceBuilder::new("backoffice", "1.0.0")?
    ///     .nest("/admin", admin)
    ///     .require("/users", Requirement::roles(["admin"]))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(relative.message().contains("`/admin/users`"));
    /// # Ok::<(), room619::Error>(())
    /// ```
    pub fn require(mut self, path: impl Into<String>, requirement: Requirement) -> Self {
        self.access = self.access.require(path, requirement);
        self
    }

    /// As [`require`](Self::require), for one HTTP method of a route only;
    /// `path` is the full path too (`/admin/users/{id}` for a router
    /// nested at `/admin`).
    pub fn require_method(
        mut self,
        method: http::Method,
        path: impl Into<String>,
        requirement: Requirement,
    ) -> Self {
        self.access = self.access.require_method(method, path, requirement);
        self
    }

    /// Lets anyone call `path`, with or without credentials (a login method,
    /// a public page); `path` is the full path, as for
    /// [`require`](Self::require).
    pub fn public(self, path: impl Into<String>) -> Self {
        self.require(path, Requirement::public())
    }

    /// Checks the service's health when readiness is asked, and every few
    /// seconds for gRPC health (default: healthy); a check that panics, or
    /// takes longer than 5 s, reports [`Health::Unhealthy`].
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        self.health = Some(Arc::new(move || Box::pin(check())));
        self
    }

    /// Checks a named dependency (`"postgres"`, `"nats"`) whenever readiness
    /// is asked, at most 5 s each: [`Health::Degraded`] is reported and keeps
    /// the node ready, [`Health::Unhealthy`] (failing) makes it not ready. A
    /// check that panics or takes longer is failing.
    ///
    /// ```
    /// use room619::{ServiceBuilder, service::Health};
    ///
    /// let service = ServiceBuilder::new("orders", "1.0.0")?
    ///     .dependency("cache", || async { Health::Degraded("replica lagging".into()) })
    ///     .build()?;
    /// # Ok::<(), room619::Error>(())
    /// ```
    pub fn dependency<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        self.dependencies
            .push((name.into(), Arc::new(move || Box::pin(check()))));
        self
    }

    /// Checks the parts and makes the service.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when an HTTP path does not start with `/`, a path or
    /// a gRPC service appears twice, two routes conflict, an access rule
    /// does not parse, is declared twice for the same path and method,
    /// overlaps a route in a way the access table cannot hold, or names
    /// nothing the service serves nor a built-in path (a rule written
    /// relative to a nested router's prefix: the error names the full path
    /// to write), a subscriber's subject, queue group or durable name is
    /// malformed, or a durable name is used twice, or the sunset of
    /// [`deprecated`](Self::deprecated) is not between 1970 and 9999.
    pub fn build(self) -> Result<BuiltService> {
        let name = self.descriptor.name();
        let mut durables = HashSet::new();
        for subscriber in &self.subscribers {
            subscriber.check().map_err(|err| {
                Error::invalid_argument(format!("service `{name}`: {}", err.message()))
            })?;
            if let Some(durable) = subscriber.durable_name()
                && !durables.insert(durable)
            {
                return Err(Error::invalid_argument(format!(
                    "service `{name}`: durable consumer `{durable}` declared twice"
                )));
            }
        }
        let mut grpc_names = HashSet::new();
        for grpc in &self.routes.grpc {
            if !grpc_names.insert(grpc.name()) {
                return Err(Error::invalid_argument(format!(
                    "service `{name}`: gRPC service `{}` added twice",
                    grpc.name()
                )));
            }
        }
        crate::rpc::http::check_routes(name, &self.routes)?;
        let mut served = ServedPaths::default();
        served.add(&self.routes);
        for path in crate::node::ADMIN_PATHS {
            served.admin(path);
        }
        AccessTable::new([(name, &self.access)], &served)?;
        served.check_rules(name, &self.access)?;
        if let Some(deprecation) = self.descriptor.deprecation()
            && !deprecation.is_valid()
        {
            return Err(Error::invalid_argument(format!(
                "service `{name}`: the sunset must be between 1970 and 9999 (an HTTP date)"
            )));
        }
        Ok(BuiltService {
            descriptor: self.descriptor,
            routes: self.routes,
            hooks: self.hooks,
            health: self.health,
            subscribers: self.subscribers,
            access: self.access,
            dependencies: self.dependencies,
        })
    }
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("descriptor", &self.descriptor)
            .field("routes", &self.routes)
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

/// A service made by [`ServiceBuilder`].
pub struct BuiltService {
    descriptor: ServiceDescriptor,
    routes: ServiceRoutes,
    hooks: Hooks,
    health: Option<HealthCheck>,
    subscribers: Vec<Subscriber>,
    access: AccessPolicy,
    dependencies: Dependencies,
}

impl Service for BuiltService {
    fn descriptor(&self) -> &ServiceDescriptor {
        &self.descriptor
    }

    fn routes(&self) -> ServiceRoutes {
        self.routes.clone()
    }

    fn start(&self, ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        self.hooks.start(ctx)
    }

    fn stop(&self, ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        self.hooks.stop(ctx)
    }

    fn subscribers(&self) -> Vec<Subscriber> {
        self.subscribers.clone()
    }

    fn access(&self) -> AccessPolicy {
        self.access.clone()
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        match &self.health {
            Some(check) => check(),
            None => Box::pin(async { Health::Healthy }),
        }
    }

    fn dependencies(&self) -> BoxFuture<'static, Vec<DependencyHealth>> {
        super::dependency::check_all(&self.dependencies)
    }
}

impl fmt::Debug for BuiltService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltService")
            .field("descriptor", &self.descriptor)
            .field("routes", &self.routes)
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

/// A hook closure as the builder keeps it.
fn hook_of<F, Fut>(hook: F) -> Hook
where
    F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(hook(ctx)))
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use http::Method;

    use super::*;

    /// A service with the route `/v1/orders/{id}` and a router nested at
    /// `/admin` serving `/users`.
    fn shop() -> ServiceBuilder {
        ServiceBuilder::new("shop", "1.0.0")
            .unwrap()
            .route("/v1/orders/{id}", get(|| async { "an order" }))
            .nest(
                "/admin",
                Router::new().route("/users", get(|| async { "users" })),
            )
    }

    #[test]
    fn a_rule_relative_to_a_nested_router_is_refused_naming_the_full_path() {
        let err = shop()
            .require("/users", Requirement::roles(["admin"]))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        for part in [
            "service `shop`",
            "`/users`",
            "`/admin/users`",
            "nested at `/admin`",
        ] {
            assert!(err.message().contains(part), "{part}: {err}");
        }
        assert!(
            shop()
                .require("/admin/users", Requirement::roles(["admin"]))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn rules_for_built_in_paths_and_served_patterns_are_accepted() {
        let service = shop()
            .require_method(
                Method::DELETE,
                "/v1/orders/{order}",
                Requirement::roles(["ops"]),
            )
            .require("/admin/{*rest}", Requirement::roles(["admin"]))
            .require("/metrics", Requirement::roles(["ops"]))
            .require("/registry", Requirement::authenticated())
            .require("/health/live", Requirement::public())
            .require(
                "/grpc.health.v1.Health/{*method}",
                Requirement::authenticated(),
            )
            .require(
                "/grpc.reflection.v1alpha.ServerReflection/{*method}",
                Requirement::authenticated(),
            )
            .build();
        assert!(service.is_ok(), "{:?}", service.err());
    }

    #[test]
    fn a_rule_for_a_grpc_service_not_served_is_refused() {
        let err = ServiceBuilder::new("catalog", "1.0.0")
            .unwrap()
            .route("/v1/items", get(|| async { "items" }))
            .public("/auth.v1.Auth/Login")
            .build()
            .unwrap_err();
        for part in ["service `catalog`", "`/auth.v1.Auth/Login`", "gRPC method"] {
            assert!(err.message().contains(part), "{part}: {err}");
        }
    }

    /// A full-path rule with a parameter under a nested router's prefix is
    /// no longer refused for overlapping the router's catch-all.
    #[test]
    fn a_rule_with_a_parameter_under_a_nested_prefix_builds() {
        let users = Router::new().route("/{id}", get(|| async { "a user" }));
        let service = ServiceBuilder::new("users", "1.0.0")
            .unwrap()
            .nest("/users", users)
            .require_method(Method::DELETE, "/users/{id}", Requirement::roles(["admin"]))
            .build();
        assert!(service.is_ok(), "{:?}", service.err());
    }
}
