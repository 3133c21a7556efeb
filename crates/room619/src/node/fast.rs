//! [`FastRoutes`]: a node's hosted HTTP routes with room619's layers around
//! axum's router rather than inside it.
//!
//! axum boxes every route, and a route built from a handler and then layered
//! is boxed twice: the handler's route, then the layered route around it. A
//! request through it clones two boxed services, allocates two boxed futures
//! and polls two routes' futures. Here each hosted route has its layers
//! (observe, load shedding, the HTTP edge, auth and rate limiting, the
//! service's in-flight tracking and context) as one unboxed stack around
//! the node's router of plain routes, so the only box left is the
//! handler's own, as in a bare axum application.
//!
//! A request takes this way when its path matches a hosted route; admin
//! paths, nested routers and unknown paths go through the fully layered
//! router as before. The router the stacks call routes the request again
//! (axum's path parameters and `MatchedPath` are set there, as handlers
//! expect).

use std::{convert::Infallible, fmt};

use axum::{Extension, Router, body::Body, extract::Request, response::Response};
use fnv::FnvHashMap;
use tower::{Layer, Service};

use crate::{
    middleware::GuardLayers,
    observability::server::Observe,
    rpc::{http::HttpEdgeLayer, shed::LoadShed},
    service::{ServiceContext, Track},
};

/// The innermost layers of a route: the service's in-flight tracking, then
/// its context in the extensions, around the router of plain routes.
type Scoped = Track<<Extension<ServiceContext> as Layer<Router>>::Service>;

/// One hosted route's whole stack, outermost first: observe, load shedding,
/// the HTTP edge, auth and rate limiting, then [`Scoped`]. It is called
/// without `poll_ready`: each of these layers is ready when its inner
/// service is, and the router at the bottom always is. A layer that can be
/// not ready (a concurrency limit, a buffer) does not belong here.
pub(crate) type FastRoute = Observe<LoadShed<<HttpEdgeLayer as Layer<Guarded>>::Service>>;

/// Auth and rate limiting around [`Scoped`].
type Guarded = <GuardLayers as Layer<Scoped>>::Service;

/// The response future of a [`FastRoute`].
pub(crate) type FastFuture = <FastRoute as Service<Request>>::Future;

/// The hosted routes of a node, each with its own stack `S`; see the
/// [module docs](self).
pub(crate) struct FastRoutes<S = FastRoute> {
    /// The hosted routes' stacks.
    stacks: Vec<S>,
    /// Every path template the node's router knows: a hosted route's stack
    /// (its index), or `None` for what the fully layered router answers
    /// (admin paths, nested routers), so that a path matches here what it
    /// matches there.
    matcher: matchit::Router<Option<usize>>,
    /// The hosted templates without parameters, found by one hash lookup
    /// (a path equal to one matches nothing else in `matcher`).
    exact: FnvHashMap<Box<str>, usize>,
    /// The prefixes of nested routers: a path under one is never taken here
    /// (their routes are not in `matcher`, only their prefixes).
    nested: Vec<Box<str>>,
}

impl<S> FastRoutes<S> {
    pub(crate) fn new() -> Self {
        Self {
            stacks: Vec::new(),
            matcher: matchit::Router::new(),
            exact: FnvHashMap::default(),
            nested: Vec::new(),
        }
    }

    /// The hosted route `template` answers through `stack`.
    pub(crate) fn route(&mut self, template: &str, stack: S) {
        let index = self.stacks.len();
        // The node's route table has accepted every template already.
        if self.matcher.insert(template, Some(index)).is_err() {
            tracing::debug!(template, "route left to the router");
            return;
        }
        self.stacks.push(stack);
        if !template.contains(['{', '}']) {
            self.exact.insert(template.into(), index);
        }
    }

    /// The router answers `template` (an admin path) itself.
    pub(crate) fn elsewhere(&mut self, template: &str) {
        if self.matcher.insert(template, None).is_err() {
            tracing::debug!(template, "path left to the router");
        }
    }

    /// The router answers everything under `prefix` (a nested router).
    pub(crate) fn nested(&mut self, prefix: &str) {
        self.elsewhere(prefix);
        self.elsewhere(&format!("{prefix}/{{*rest}}"));
        self.nested.push(prefix.into());
    }

    /// The stack of the hosted route `path` matches, if it matches one.
    pub(crate) fn find(&self, path: &str) -> Option<&S> {
        if self.nested.iter().any(|prefix| is_under(path, prefix)) {
            return None;
        }
        let index = match self.exact.get(path) {
            Some(index) => *index,
            None => (*self.matcher.at(path).ok()?.value)?,
        };
        self.stacks.get(index)
    }
}

impl FastRoutes {
    /// Serves `request` through the stack of its route (see [`find`](Self::find)).
    pub(crate) fn call(route: &FastRoute, request: Request) -> FastFuture {
        // Every layer of the stack passes `poll_ready` through to the
        // router, and an axum router is always ready, so the stack is called
        // without it (see [`FastRoute`]); the clone goes with the request.
        route.clone().call_once(request)
    }
}

/// Whether `path` is `prefix` or below it (`/a` is under `/a`, `/a/b` is,
/// `/ab` is not).
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl<S> fmt::Debug for FastRoutes<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastRoutes")
            .field("routes", &self.stacks.len())
            .field("nested", &self.nested)
            .finish_non_exhaustive()
    }
}

/// A [`FastRoute`] answers with an axum response and never fails.
const _: fn() = || {
    fn answers<S: Service<Request, Response = Response<Body>, Error = Infallible>>() {}
    answers::<FastRoute>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Hosted `/items/{id}`, `/{name}`, `/echo` and `/ui/page`; admin
    /// `/metrics`; a router nested at `/ui`.
    fn routes() -> FastRoutes<&'static str> {
        let mut routes = FastRoutes::new();
        routes.elsewhere("/metrics");
        routes.nested("/ui");
        for template in ["/items/{id}", "/{name}", "/echo", "/ui/page"] {
            routes.route(template, template);
        }
        routes
    }

    #[test]
    fn a_path_takes_its_hosted_route_and_nothing_else() {
        let routes = routes();
        assert_eq!(routes.find("/items/7"), Some(&"/items/{id}"));
        assert_eq!(
            routes.find("/echo"),
            Some(&"/echo"),
            "static before parameter"
        );
        assert_eq!(routes.find("/other"), Some(&"/{name}"));
        assert_eq!(
            routes.find("/metrics"),
            None,
            "an admin path beats `/{{name}}`"
        );
        assert_eq!(routes.find("/ui"), None, "a nested router's prefix");
        assert_eq!(routes.find("/ui/items/7"), None, "below a nested router");
        assert_eq!(
            routes.find("/ui/page"),
            None,
            "below a nested router, exact"
        );
        assert_eq!(routes.find("/items/7/more"), None, "no route");
        assert_eq!(routes.find("/"), None, "no route");
    }

    #[test]
    fn a_route_the_table_would_refuse_is_left_to_the_router() {
        let mut routes = routes();
        routes.route("/echo", "again");
        assert_eq!(routes.find("/echo"), Some(&"/echo"), "the first stays");
    }

    #[test]
    fn a_path_is_under_a_prefix_by_whole_segments() {
        assert!(is_under("/a", "/a"));
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(!is_under("/", "/a"));
    }
}
