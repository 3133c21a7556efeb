//! [`ServedPaths`]: what a listener serves besides the access rules; and
//! [`ServedPatterns`], which tells whether a rule names any of it.
//!
//! Rules are matched against the full path of a request, a nested router's
//! prefix included. A rule written the way a nested router's rules once
//! were, relative to its prefix (`/users` for the `/admin/users` of a
//! router nested at `/admin`), names nothing the node serves: the path it
//! meant falls under the router's `/admin/{*rest}`, which only asks for an
//! authenticated caller. So a service's rule that names none of its own
//! patterns (nor a built-in path) is refused when the service is built, with
//! the full path to write.

use super::{
    AccessPolicy,
    table::{canonical, catch_all_over},
};
use crate::{Error, Result, service::ServiceRoutes};

/// The gRPC services every node serves that anyone may call.
pub(super) const BUILT_IN_PUBLIC: &[&str] = &[
    "/grpc.health.v1.Health/{*method}",
    "/grpc.reflection.v1.ServerReflection/{*method}",
    "/grpc.reflection.v1alpha.ServerReflection/{*method}",
];

/// What a listener serves besides the access rules, so that the table
/// finds a path under the pattern the router routes it by.
#[derive(Debug, Default)]
pub(crate) struct ServedPaths {
    /// The HTTP route templates of the hosted services.
    pub(super) routes: Vec<String>,
    /// The prefixes of their nested routers, each serving `/prefix` and
    /// `/prefix/{*rest}`.
    pub(super) nested: Vec<String>,
    /// The full names of the hosted gRPC services.
    pub(super) grpc: Vec<String>,
    /// The admin endpoints served on the same listener: public unless a
    /// service rule names one. Like health and metrics, an operator's
    /// endpoints: set `node.admin_listen` to keep all of them off the
    /// public port.
    pub(super) admin: Vec<&'static str>,
}

impl ServedPaths {
    /// Adds what `routes` serve.
    pub(crate) fn add(&mut self, routes: &ServiceRoutes) {
        self.routes
            .extend(routes.http.iter().map(|(path, _)| path.clone()));
        self.nested
            .extend(routes.nested.iter().map(|(prefix, _)| prefix.clone()));
        self.grpc
            .extend(routes.grpc.iter().map(|grpc| grpc.name().to_owned()));
    }

    /// Adds the admin endpoint `path`, served on the same listener.
    pub(crate) fn admin(&mut self, path: &'static str) {
        self.admin.push(path);
    }

    /// Every pattern served: the HTTP routes, the nested routers (`/prefix`
    /// and `/prefix/{*rest}`), one `/<gRPC service>/{*method}` per gRPC
    /// service, the admin endpoints and the built-in gRPC services.
    pub(crate) fn patterns(&self) -> ServedPatterns<'_> {
        let nested = self
            .nested
            .iter()
            .flat_map(|prefix| [prefix.clone(), format!("{prefix}/{{*rest}}")]);
        let grpc = self.grpc.iter().map(|name| format!("/{name}/{{*method}}"));
        let fixed = self
            .admin
            .iter()
            .chain(BUILT_IN_PUBLIC)
            .map(|path| (*path).to_owned());
        let patterns = self
            .routes
            .iter()
            .cloned()
            .chain(nested)
            .chain(grpc)
            .chain(fixed)
            .filter_map(|pattern| {
                // Not a pattern at all: the route checks refuse it.
                let mut router = matchit::Router::new();
                router.insert(pattern.as_str(), ()).ok()?;
                Some((canonical(&pattern), router))
            })
            .collect();
        ServedPatterns {
            patterns,
            nested: &self.nested,
        }
    }

    /// Refuses the first rule of `policy` (the service `owner`'s, serving
    /// what `self` holds) that names nothing served (see
    /// [`ServedPatterns::names`]).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` naming the service and the rule, and the full path
    /// to write when the rule would name a path under a nested router's
    /// prefix.
    pub(crate) fn check_rules(&self, owner: &str, policy: &AccessPolicy) -> Result<()> {
        let patterns = self.patterns();
        let Some((method, path, _)) = policy
            .rules
            .iter()
            .find(|(_, path, _)| !patterns.names(path))
        else {
            return Ok(());
        };
        let what = match method {
            Some(method) => format!("{method} `{path}`"),
            None => format!("`{path}`"),
        };
        let nested = patterns.under_nested(path);
        let advice = if nested.is_empty() {
            "a rule names a route, a nested router's path or a gRPC method or service \
             (`/pkg.Service/Method`, `/pkg.Service/{*method}`) of the service, or a built-in \
             path (`/metrics`, `/registry`, `/health/live`, `/health/ready`, gRPC health and \
             reflection)"
                .to_owned()
        } else {
            let full: Vec<String> = nested
                .iter()
                .map(|(prefix, full)| format!("`{full}` for the router nested at `{prefix}`"))
                .collect();
            format!(
                "it would under a nested router's prefix: rules name the full path of a \
                 request, the prefix included (not the path the nested router sees); write {}",
                full.join(", or ")
            )
        };
        Err(Error::invalid_argument(format!(
            "service `{owner}`: access rule {what} matches nothing the service serves; {advice}"
        )))
    }
}

/// The patterns a listener serves, each in a router of its own (the
/// patterns of several services need not fit in one router), to find which
/// a rule's pattern names.
pub(crate) struct ServedPatterns<'a> {
    /// Each pattern's [`canonical`] form, with a router holding it alone.
    patterns: Vec<(String, matchit::Router<()>)>,
    /// The prefixes of the nested routers.
    nested: &'a [String],
}

impl ServedPatterns<'_> {
    /// Whether `pattern` (a rule's: an access rule, a rate limit) names
    /// something served: a path it matches, each parameter taken as `x`
    /// (`/users/x` for `/users/{id}`), is under a served pattern; or it is a
    /// catch-all where a served pattern has a parameter (`/files/{*path}`
    /// beside a route `/files/{id}/meta`), which the access table lets
    /// decide for that pattern's paths.
    pub(crate) fn names(&self, pattern: &str) -> bool {
        let path = sample(pattern);
        let canonical = canonical(pattern);
        self.patterns
            .iter()
            .any(|(served, router)| router.at(&path).is_ok() || catch_all_over(&canonical, served))
    }

    /// `pattern` written under the prefix of each nested router where it
    /// names something served: (prefix, full path). `/` under `/admin` is
    /// `/admin`.
    pub(crate) fn under_nested(&self, pattern: &str) -> Vec<(&str, String)> {
        self.nested
            .iter()
            .filter_map(|prefix| {
                let full = if pattern == "/" {
                    prefix.clone()
                } else {
                    format!("{prefix}{pattern}")
                };
                self.names(&full).then_some((prefix.as_str(), full))
            })
            .collect()
    }
}

/// A path `pattern` matches: each parameter (`{id}`, `{*rest}`) written
/// `x`, each escaped brace (`{{`, `}}`) as the brace.
fn sample(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '}' if chars.peek() == Some(&c) => {
                chars.next();
                out.push(c);
            }
            '{' => {
                for inside in chars.by_ref() {
                    if inside == '}' {
                        break;
                    }
                }
                out.push('x');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::middleware::auth::Requirement;

    /// What a service with `routes`, routers nested at `nested` and the
    /// gRPC services `grpc` serves, with the admin endpoints.
    fn served(routes: &[&str], nested: &[&str], grpc: &[&str]) -> ServedPaths {
        ServedPaths {
            routes: routes.iter().map(|path| (*path).to_owned()).collect(),
            nested: nested.iter().map(|prefix| (*prefix).to_owned()).collect(),
            grpc: grpc.iter().map(|name| (*name).to_owned()).collect(),
            admin: vec!["/health/live", "/health/ready", "/registry", "/metrics"],
        }
    }

    #[test]
    fn a_sample_path_takes_each_parameter_as_x() {
        assert_eq!(sample("/v1/users/{id}/x"), "/v1/users/x/x");
        assert_eq!(sample("/{*path}"), "/x");
        assert_eq!(sample("/a/{{literal}}/{b}"), "/a/{literal}/x");
        assert_eq!(sample("/files/{name}.json"), "/files/x.json");
    }

    #[test]
    fn rules_name_routes_nested_paths_grpc_services_and_built_in_paths() {
        let rich = served(&["/v1/users/{id}"], &["/admin"], &["users.v1.Users"]);
        let patterns = rich.patterns();
        for rule in [
            "/v1/users/{user}",
            "/admin",
            "/admin/users",
            "/admin/{*rest}",
            "/admin/users/{id}",
            "/users.v1.Users/Delete",
            "/users.v1.Users/{*method}",
            "/users.v1.Users/{method}",
            "/metrics",
            "/health/ready",
            "/registry",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/{*method}",
        ] {
            assert!(patterns.names(rule), "{rule}");
        }
        let bare = served(&["/v1/orders"], &["/admin"], &["users.v1.Users"]);
        let patterns = bare.patterns();
        for rule in [
            "/users",
            "/{*path}",
            "/v1/orders/{id}",
            "/users.v1.Users",
            "/other.v1.Other/Get",
        ] {
            assert!(!patterns.names(rule), "{rule}");
        }
        // A broad rule names a broad route.
        let app = served(&["/{*page}"], &[], &[]);
        assert!(app.patterns().names("/{*path}"));
    }

    /// A catch-all rule where a route has a parameter decides for the
    /// route's paths (see the access table): it names the route.
    #[test]
    fn a_catch_all_rule_names_a_route_with_a_parameter_at_its_place() {
        let files = served(&["/files/{id}/meta"], &[], &[]);
        assert!(files.patterns().names("/files/{*path}"));
        assert!(!files.patterns().names("/other/{*path}"));
    }

    /// A rule written relative to a nested router, as before rules named the
    /// full path, is refused with the full path to write.
    #[test]
    fn a_rule_relative_to_a_nested_router_is_refused_with_the_full_path() {
        let nesting = served(&["/v1/orders"], &["/admin"], &[]);
        let policy = AccessPolicy::default().require("/users", Requirement::roles(["admin"]));
        let err = nesting.check_rules("shop", &policy).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        for part in [
            "service `shop`",
            "`/users`",
            "`/admin/users`",
            "nested at `/admin`",
        ] {
            assert!(err.message().contains(part), "{part}: {err}");
        }
        let policy = AccessPolicy::default().require_method(
            Method::DELETE,
            "/{id}",
            Requirement::roles(["admin"]),
        );
        let err = nesting.check_rules("shop", &policy).unwrap_err();
        assert!(err.message().contains("DELETE `/{id}`"), "{err}");
        assert!(err.message().contains("`/admin/{id}`"), "{err}");
        // With no nested router, the error says what a rule names.
        let err = served(&["/v1/orders"], &[], &[])
            .check_rules("shop", &policy)
            .unwrap_err();
        assert!(err.message().contains("built-in path"), "{err}");
        assert!(!err.message().contains("nested at"), "{err}");
    }

    #[test]
    fn rules_naming_what_the_service_serves_pass() {
        let shop = served(&["/v1/orders"], &["/admin"], &["shop.v1.Orders"]);
        let admin = || Requirement::roles(["admin"]);
        let policy = AccessPolicy::default()
            .require("/admin/users", admin())
            .require_method(Method::DELETE, "/admin/users/{id}", admin())
            .require("/v1/orders", Requirement::public())
            .require("/shop.v1.Orders/{*method}", Requirement::authenticated())
            .require("/metrics", Requirement::roles(["ops"]));
        assert!(shop.check_rules("shop", &policy).is_ok());
        // The rule `/` under `/admin` is `/admin` itself.
        assert_eq!(
            shop.patterns().under_nested("/"),
            vec![("/admin", "/admin".to_owned())]
        );
    }
}
