//! [`AccessTable`]: the access rules of every hosted service, with every
//! path the node serves, looked up by path and method.
//!
//! The table holds, in one `matchit` router (the one axum routes with):
//!
//! - the built-in public paths: gRPC health and reflection, and the admin
//!   endpoints served on the same listener (health, registry, metrics);
//! - every rule the services declare (a rule for a built-in path replaces
//!   it);
//! - every pattern the node serves that no rule names: each HTTP route
//!   template, each nested router (`/prefix` and `/prefix/{*rest}`) and one
//!   `/<gRPC service>/{*method}` per gRPC service, needing an authenticated
//!   caller.
//!
//! So a path is found under the most specific pattern, as the router finds
//! its route: a broad rule (`.public("/{*path}")` for a single-page app)
//! covers only what no more specific route or rule claims.
//!
//! One router cannot hold a parameter and a catch-all at the same place
//! (`/{page}` beside `/{*path}`). When a served pattern meets a rule that
//! way, the rule decides for the route's paths if it is a catch-all that
//! does not let anyone in (or a rule for every method of a gRPC service).
//! A nested router's `/prefix/{*rest}` meeting a rule under its prefix
//! (`DELETE /users/{id}` for a router nested at `/users`) is left out: the
//! router's paths no pattern names then need an authenticated caller (or
//! what a broader rule asks, which never lets anyone in), unless a public
//! rule reaches under the prefix from above (`/{*path}`), which would open
//! them. Otherwise the table is refused, with an error naming the route.

use std::{
    collections::{HashMap, hash_map},
    fmt,
    sync::Arc,
};

use http::Method;

use super::{
    AUTH_TARGET, AccessPolicy, Requirement,
    served::{BUILT_IN_PUBLIC, ServedPaths},
};
use crate::{Error, Result};

type Rules = Vec<(Option<Method>, Requirement)>;

/// Where a pattern of the table comes from; also the order they are put in
/// the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// A path every node serves to anyone.
    BuiltIn,
    /// A service's access rule.
    Rule,
    /// A hosted gRPC service that no rule names.
    Grpc,
    /// A hosted HTTP route, or a nested router's own path (`/prefix`), that
    /// no rule names.
    Route,
    /// The rest of a nested router's paths (`/prefix/{*rest}`), when no
    /// rule names that pattern.
    Nested,
}

/// One pattern of the table.
struct Entry {
    /// The pattern as first written.
    path: String,
    /// The pattern with its parameters unnamed (see [`canonical`]).
    canonical: String,
    origin: Origin,
    rules: Rules,
}

/// The patterns of the table, one per [`canonical`] form, in the order they
/// were added.
#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    by_pattern: HashMap<String, usize>,
}

impl Entries {
    /// Adds `rule` for `path` from `origin`. A service's rule replaces a
    /// built-in entry and joins another rule's; a served pattern that is
    /// already there (named by a rule, or built in) adds nothing.
    fn add(&mut self, path: &str, origin: Origin, rule: (Option<Method>, Requirement)) {
        let canonical = canonical(path);
        if let Some(entry) = self
            .by_pattern
            .get(&canonical)
            .and_then(|index| self.list.get_mut(*index))
        {
            match (entry.origin, origin) {
                (Origin::BuiltIn, Origin::Rule) => {
                    path.clone_into(&mut entry.path);
                    entry.origin = Origin::Rule;
                    entry.rules = vec![rule];
                }
                (Origin::Rule, Origin::Rule) => entry.rules.push(rule),
                _ => {}
            }
            return;
        }
        self.by_pattern.insert(canonical.clone(), self.list.len());
        self.list.push(Entry {
            path: path.to_owned(),
            canonical,
            origin,
            rules: vec![rule],
        });
    }

    /// Adds the rules of `policies` (owner name, policy).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when a path does not start with `/`, when one
    /// service declares two rules for the same pattern and method, or two
    /// services different ones.
    fn declare<'a>(
        &mut self,
        policies: impl IntoIterator<Item = (&'a str, &'a AccessPolicy)>,
    ) -> Result<()> {
        let mut declared: HashMap<(String, Option<Method>), (&str, &Requirement)> = HashMap::new();
        for (owner, policy) in policies {
            for (method, path, requirement) in &policy.rules {
                if !path.starts_with('/') {
                    return Err(Error::invalid_argument(format!(
                        "service `{owner}`: access rule path `{path}` must start with `/`"
                    )));
                }
                let (first_owner, first_requirement) =
                    match declared.entry((canonical(path), method.clone())) {
                        hash_map::Entry::Vacant(slot) => {
                            slot.insert((owner, requirement));
                            self.add(path, Origin::Rule, (method.clone(), requirement.clone()));
                            continue;
                        }
                        hash_map::Entry::Occupied(first) => *first.get(),
                    };
                let what = match method {
                    Some(method) => format!("{method} `{path}`"),
                    None => format!("`{path}`"),
                };
                if first_owner == owner {
                    return Err(Error::invalid_argument(format!(
                        "service `{owner}`: two access rules for {what}; keep one"
                    )));
                }
                // The same rule from another service is one rule.
                if first_requirement != requirement {
                    return Err(Error::invalid_argument(format!(
                        "services `{first_owner}` and `{owner}` declare different access \
                         rules for {what}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The router of every pattern: built-in and declared ones first, then
    /// the served ones, gRPC services before routes (each in the order
    /// added).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when a rule does not parse or conflicts with
    /// another, or when a served pattern conflicts with a rule that does
    /// not cover it (see [`covered`]) and is not a nested router's
    /// catch-all that may be left out (see [`opened_under`]).
    fn into_router(self) -> Result<matchit::Router<Rules>> {
        let mut list = self.list;
        list.sort_by_key(|entry| entry.origin);
        let mut router = matchit::Router::new();
        let mut inserted: Vec<Inserted> = Vec::with_capacity(list.len());
        for Entry {
            path,
            canonical,
            origin,
            mut rules,
        } in list
        {
            // Method-specific rules first, so they win over catch-alls.
            rules.sort_by_key(|(method, _)| method.is_none());
            let open = rules.iter().any(|(_, requirement)| requirement.is_public());
            match router.insert(path.clone(), rules) {
                Ok(()) => inserted.push(Inserted { canonical, open }),
                Err(err) if origin < Origin::Grpc => {
                    return Err(Error::invalid_argument(format!(
                        "access rule `{path}` cannot be added: {err}"
                    )));
                }
                // Not a pattern at all: the node's route checks refuse the
                // route itself, with a message saying how to write it.
                Err(err) if !matches!(err, matchit::InsertError::Conflict { .. }) => {
                    tracing::debug!(target: AUTH_TARGET, path = %path, %err,
                        "a served path that is no pattern is left to the route checks");
                }
                Err(err) if covered(&canonical, origin, &inserted) => {
                    tracing::debug!(target: AUTH_TARGET, path = %path, %err,
                        "a served pattern is looked up under the wider access rule covering it");
                }
                Err(err) if origin == Origin::Nested && !opened_under(&canonical, &inserted) => {
                    tracing::debug!(target: AUTH_TARGET, path = %path, %err,
                        "a nested router's catch-all is left out beside a rule under its \
                         prefix: the paths no pattern names need an authenticated caller");
                }
                Err(err) => {
                    return Err(Error::invalid_argument(format!(
                        "the served pattern `{path}` and an access rule overlap in a way one \
                         router cannot hold ({err}): the rule cannot decide for the route's \
                         paths; name the route's own pattern in the rule, or serve the route \
                         elsewhere"
                    )));
                }
            }
        }
        Ok(router)
    }
}

/// The rules of every hosted service and every served pattern, looked up by
/// path and method; a path under no pattern needs an authenticated caller.
#[derive(Clone)]
pub(crate) struct AccessTable {
    router: Arc<matchit::Router<Rules>>,
    fallback: Arc<Requirement>,
}

impl AccessTable {
    /// The table of `policies` (owner name, policy), the built-in public
    /// paths and what `served` lists.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when a rule's path does not start with `/` or does
    /// not parse, when one service declares two rules for the same pattern
    /// and method (or two services different ones), or when a rule and a
    /// served pattern overlap in a way one router cannot hold and the rule
    /// does not cover the route (`/files/{id}` against a route
    /// `/files/{*path}`), or would open it to anyone (a public
    /// `/files/{*path}` against a route `/files/{id}`; a rule under a
    /// nested router's prefix beside a public `/{*path}`).
    pub(crate) fn new<'a>(
        policies: impl IntoIterator<Item = (&'a str, &'a AccessPolicy)>,
        served: &ServedPaths,
    ) -> Result<Self> {
        let mut entries = Entries::default();
        for path in BUILT_IN_PUBLIC.iter().chain(&served.admin) {
            entries.add(path, Origin::BuiltIn, (None, Requirement::public()));
        }
        entries.declare(policies)?;
        for name in &served.grpc {
            entries.add(
                &format!("/{name}/{{*method}}"),
                Origin::Grpc,
                (None, Requirement::authenticated()),
            );
        }
        for path in &served.routes {
            entries.add(path, Origin::Route, (None, Requirement::authenticated()));
        }
        for prefix in &served.nested {
            entries.add(prefix, Origin::Route, (None, Requirement::authenticated()));
            entries.add(
                &format!("{prefix}/{{*rest}}"),
                Origin::Nested,
                (None, Requirement::authenticated()),
            );
        }
        Ok(Self {
            router: Arc::new(entries.into_router()?),
            fallback: Arc::new(Requirement::authenticated()),
        })
    }

    /// The requirement for `method` on `path`; `HEAD` (which axum answers
    /// with the `GET` handler) is under the `GET` rules unless it has its
    /// own. A path under no pattern, or under one with no rule for
    /// `method`, needs an authenticated caller.
    pub(crate) fn lookup(&self, method: &Method, path: &str) -> &Requirement {
        self.router
            .at(path)
            .ok()
            .and_then(|found| crate::middleware::for_method(found.value, method))
            .unwrap_or(&self.fallback)
    }
}

impl fmt::Debug for AccessTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessTable")
    }
}

/// `pattern` with its parameters unnamed (`{}`, and `{*}` for a catch-all):
/// patterns the router cannot tell apart (`/users/{id}`, `/users/{name}`)
/// have the same form.
pub(super) fn canonical(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // `{{` and `}}` are a literal brace.
            '{' | '}' if chars.peek() == Some(&c) => {
                chars.next();
                out.push(c);
                out.push(c);
            }
            '{' => {
                let catch_all = chars.peek() == Some(&'*');
                for inside in chars.by_ref() {
                    if inside == '}' {
                        break;
                    }
                }
                out.push_str(if catch_all { "{*}" } else { "{}" });
            }
            c => out.push(c),
        }
    }
    out
}

/// A pattern in the router, for [`covered`].
struct Inserted {
    canonical: String,
    /// Whether a rule of it lets anyone in.
    open: bool,
}

/// Whether the served pattern `canonical`, which the router could not take
/// beside an inserted one, may be left out: its paths then fall under an
/// inserted catch-all at the place of its parameter (`/files/{*path}` for a
/// route `/files/{id}/meta`), or a more specific pattern, so the
/// catch-all must not let anyone in (the route has no rule: its paths need
/// at least an authenticated caller). For a gRPC service, a rule naming
/// every method with a parameter (`/pkg.Svc/{method}`) covers it whatever it
/// requires: that is the rule's very point, and a gRPC method path has no
/// more segments.
fn covered(canonical: &str, origin: Origin, inserted: &[Inserted]) -> bool {
    let grpc_service = canonical
        .strip_suffix("{*}")
        .filter(|_| origin == Origin::Grpc);
    inserted.iter().any(|other| {
        let every_method =
            grpc_service.is_some_and(|service| other.canonical.strip_suffix("{}") == Some(service));
        (catch_all_over(&other.canonical, canonical) && !other.open) || every_method
    })
}

/// Whether the pattern `catch_all` (canonical) is a catch-all at the place
/// of a parameter of the pattern `served` (canonical): `/files/{*}` over
/// `/files/{}/meta`.
pub(super) fn catch_all_over(catch_all: &str, served: &str) -> bool {
    catch_all.strip_suffix("{*}").is_some_and(|prefix| {
        served
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('{') && !rest.starts_with("{{"))
    })
}

/// Whether a public pattern among `inserted` reaches under the prefix of
/// the nested router whose catch-all is `nested` (canonical,
/// `/prefix/{*}`) from above (see [`reaches_under`]): leaving that
/// catch-all out would then open the router's paths no pattern names.
fn opened_under(nested: &str, inserted: &[Inserted]) -> bool {
    let prefix = nested.strip_suffix("/{*}").unwrap_or(nested);
    inserted
        .iter()
        .any(|other| other.open && reaches_under(&other.canonical, prefix))
}

/// Whether the pattern `pattern` (canonical) matches paths under `prefix/`
/// (a nested router's prefix, which has no parameters) without being
/// written under it: with a catch-all (`/{*}`) or a parameter (`/{}/{}`)
/// where the prefix has a segment.
fn reaches_under(pattern: &str, prefix: &str) -> bool {
    let mut segments = pattern.split('/');
    let mut through_parameter = false;
    for name in prefix.split('/') {
        let Some(segment) = segments.next() else {
            return false;
        };
        if segment.ends_with("{*}") {
            return true;
        }
        if segment != name {
            if !has_parameter(segment) {
                return false;
            }
            through_parameter = true;
        }
    }
    through_parameter && segments.next().is_some()
}

/// Whether the segment `segment` of a canonical pattern has a parameter
/// (a brace that is not an escaped one).
fn has_parameter(segment: &str) -> bool {
    segment.replace("{{", "").replace("}}", "").contains('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node hosting `routes` (HTTP templates) and `grpc` (service
    /// names) serves, with `/metrics` and `/health/ready` beside them.
    fn served(routes: &[&str], grpc: &[&str]) -> ServedPaths {
        ServedPaths {
            routes: routes.iter().map(|path| (*path).to_owned()).collect(),
            nested: Vec::new(),
            grpc: grpc.iter().map(|name| (*name).to_owned()).collect(),
            admin: vec!["/metrics", "/health/ready"],
        }
    }

    /// As [`served`], with routers nested at `prefixes`.
    fn served_nesting(routes: &[&str], prefixes: &[&str]) -> ServedPaths {
        ServedPaths {
            nested: prefixes.iter().map(|prefix| (*prefix).to_owned()).collect(),
            ..served(routes, &[])
        }
    }

    fn table_of(policy: &AccessPolicy, served: &ServedPaths) -> AccessTable {
        AccessTable::new([("svc", policy)], served).unwrap()
    }

    #[test]
    fn the_table_prefers_method_rules_and_defaults_to_authenticated() {
        let policy = AccessPolicy::default()
            .require("/v1/users/{id}", Requirement::roles(["reader"]))
            .require_method(
                Method::DELETE,
                "/v1/users/{id}",
                Requirement::roles(["admin"]),
            )
            .require("/auth.v1.Auth/Login", Requirement::public());
        let table = table_of(&policy, &ServedPaths::default());
        assert_eq!(
            table.lookup(&Method::DELETE, "/v1/users/7"),
            &Requirement::roles(["admin"])
        );
        assert_eq!(
            table.lookup(&Method::GET, "/v1/users/7"),
            &Requirement::roles(["reader"])
        );
        assert!(
            table
                .lookup(&Method::POST, "/auth.v1.Auth/Login")
                .is_public()
        );
        assert!(
            table
                .lookup(&Method::POST, "/grpc.health.v1.Health/Check")
                .is_public()
        );
        assert_eq!(
            table.lookup(&Method::GET, "/other"),
            &Requirement::authenticated()
        );
    }

    /// axum answers `HEAD` with the `GET` handler: a `GET`-only rule guards
    /// it too (status and headers would leak otherwise).
    #[test]
    fn head_is_guarded_by_the_get_rule() {
        let policy = AccessPolicy::default()
            .require("/v1/reports", Requirement::public())
            .require_method(Method::GET, "/v1/reports", Requirement::roles(["admin"]));
        let table = table_of(&policy, &ServedPaths::default());
        assert_eq!(
            table.lookup(&Method::HEAD, "/v1/reports"),
            &Requirement::roles(["admin"])
        );
        assert!(table.lookup(&Method::POST, "/v1/reports").is_public());
    }

    /// `.public("/{*path}")` for a single-page app reaches neither a route
    /// nor a gRPC method that has no rule of its own.
    #[test]
    fn a_broad_public_rule_leaves_served_patterns_without_rules_authenticated() {
        let policy = AccessPolicy::default().require("/{*path}", Requirement::public());
        let served = served(
            &["/{*file}", "/v1/orders", "/v1/orders/{id}"],
            &["shop.v1.Orders"],
        );
        let table = table_of(&policy, &served);
        // (A catch-all matches one character or more: `/` is not under it.)
        for path in ["/index.html", "/assets/app.js"] {
            assert!(table.lookup(&Method::GET, path).is_public(), "{path}");
        }
        for path in ["/v1/orders", "/v1/orders/7", "/shop.v1.Orders/Create"] {
            assert_eq!(
                table.lookup(&Method::POST, path),
                &Requirement::authenticated(),
                "{path}"
            );
        }
        assert!(table.lookup(&Method::GET, "/metrics").is_public());
    }

    /// A rule with a parameter does not reach a static route beside it.
    #[test]
    fn a_parameter_rule_does_not_cover_a_static_route_beside_it() {
        let policy = AccessPolicy::default().require("/v1/products/{pid}", Requirement::public());
        let served = served(&["/v1/products/{id}", "/v1/products/export"], &[]);
        let table = table_of(&policy, &served);
        assert!(table.lookup(&Method::GET, "/v1/products/7").is_public());
        assert_eq!(
            table.lookup(&Method::GET, "/v1/products/export"),
            &Requirement::authenticated()
        );
    }

    /// A nested router's paths are looked up whole: `/ops/metrics` is not
    /// the public `/metrics`.
    #[test]
    fn a_nested_router_is_authenticated_under_its_prefix() {
        let table = table_of(&AccessPolicy::default(), &served_nesting(&[], &["/ops"]));
        assert!(table.lookup(&Method::GET, "/metrics").is_public());
        assert_eq!(
            table.lookup(&Method::GET, "/ops/metrics"),
            &Requirement::authenticated()
        );
    }

    /// A full-path rule with a parameter under a nested router's prefix
    /// (`DELETE /users/{id}` for a router nested at `/users`) cannot sit
    /// beside `/users/{*rest}` in one router: the catch-all is left out, and
    /// the paths no pattern names need an authenticated caller.
    #[test]
    fn a_rule_under_a_nested_prefix_leaves_the_rest_authenticated() {
        let policy = AccessPolicy::default()
            .require_method(Method::DELETE, "/users/{id}", Requirement::roles(["admin"]))
            .require_method(Method::GET, "/users/{id}/avatar", Requirement::public());
        let table = table_of(&policy, &served_nesting(&[], &["/users"]));
        assert_eq!(
            table.lookup(&Method::DELETE, "/users/5"),
            &Requirement::roles(["admin"])
        );
        assert!(table.lookup(&Method::GET, "/users/5/avatar").is_public());
        for (method, path) in [
            (Method::GET, "/users/5"),
            (Method::PATCH, "/users/5"),
            (Method::GET, "/users/5/orders"),
            (Method::GET, "/users"),
            (Method::POST, "/users/5/avatar"),
        ] {
            assert_eq!(
                table.lookup(&method, path),
                &Requirement::authenticated(),
                "{method} {path}"
            );
        }
        // A broader rule that lets no one in still decides under it.
        let ops = policy.require("/{*path}", Requirement::roles(["ops"]));
        let table = table_of(&ops, &served_nesting(&["/{*path}"], &["/users"]));
        assert!(!table.lookup(&Method::GET, "/users/5/orders").is_public());
    }

    /// With a public rule reaching under the prefix from above, leaving the
    /// nested catch-all out would open the router's other paths: refused.
    #[test]
    fn a_rule_under_a_nested_prefix_beside_a_public_catch_all_is_refused() {
        for (open, route) in [("/{*path}", "/{*path}"), ("/{section}/{id}/{more}", "/x")] {
            let policy = AccessPolicy::default()
                .require(open, Requirement::public())
                .require_method(Method::DELETE, "/users/{id}", Requirement::roles(["admin"]));
            let err = AccessTable::new([("svc", &policy)], &served_nesting(&[route], &["/users"]))
                .unwrap_err();
            assert!(err.message().contains("/users/{*rest}"), "{open}: {err}");
        }
    }

    #[test]
    fn patterns_reach_under_a_prefix_through_catch_alls_and_parameters() {
        assert!(reaches_under("/{*}", "/users"));
        assert!(reaches_under("/v1/{*}", "/v1/users"));
        assert!(reaches_under("/{}/{}", "/users"));
        assert!(reaches_under("/v1/{}/{}", "/v1/users"));
        // Written under the prefix, or not reaching below it.
        assert!(!reaches_under("/users/{}", "/users"));
        assert!(!reaches_under("/users/{*}", "/users"));
        assert!(!reaches_under("/{}", "/users"));
        assert!(!reaches_under("/v2/{*}", "/v1/users"));
        assert!(!reaches_under("/{{x}}/{}", "/users"));
    }

    #[test]
    fn a_service_rule_replaces_a_built_in_public_path() {
        let policy = AccessPolicy::default()
            .require("/metrics", Requirement::roles(["ops"]))
            .require(
                "/grpc.reflection.v1.ServerReflection/{*method}",
                Requirement::authenticated(),
            );
        let table = table_of(&policy, &served(&[], &[]));
        assert_eq!(
            table.lookup(&Method::GET, "/metrics"),
            &Requirement::roles(["ops"])
        );
        assert_eq!(
            table.lookup(
                &Method::POST,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            ),
            &Requirement::authenticated()
        );
        assert!(table.lookup(&Method::GET, "/health/ready").is_public());
    }

    #[test]
    fn a_rule_declared_twice_is_refused() {
        let twice = AccessPolicy::default()
            .require("/x", Requirement::public())
            .require("/x", Requirement::roles(["admin"]));
        let err = AccessTable::new([("svc", &twice)], &ServedPaths::default()).unwrap_err();
        assert!(err.message().contains("two access rules for `/x`"), "{err}");
        let renamed = AccessPolicy::default()
            .require_method(Method::GET, "/v1/users/{id}", Requirement::public())
            .require_method(Method::GET, "/v1/users/{user}", Requirement::public());
        let err = AccessTable::new([("svc", &renamed)], &ServedPaths::default()).unwrap_err();
        assert!(err.message().contains("GET `/v1/users/{user}`"), "{err}");
        // Another method, or every method, is another rule.
        let methods = AccessPolicy::default()
            .require("/x", Requirement::authenticated())
            .require_method(Method::GET, "/x", Requirement::public());
        assert!(AccessTable::new([("svc", &methods)], &ServedPaths::default()).is_ok());
        // Two services: the same rule is one; different ones are refused.
        let open = AccessPolicy::default().require("/x", Requirement::public());
        let closed = AccessPolicy::default().require("/x", Requirement::roles(["admin"]));
        let served = ServedPaths::default();
        assert!(AccessTable::new([("a", &open), ("b", &open)], &served).is_ok());
        let err = AccessTable::new([("a", &open), ("b", &closed)], &served).unwrap_err();
        assert!(err.message().contains("`a` and `b`"), "{err}");
    }

    /// A route and a rule the router cannot hold side by side: refused with
    /// an error (never a panic) unless the rule covers the route.
    #[test]
    fn overlapping_patterns_are_refused_unless_the_rule_covers_the_route() {
        let narrow = AccessPolicy::default().require("/files/{id}", Requirement::public());
        let err =
            AccessTable::new([("svc", &narrow)], &served(&["/files/{*path}"], &[])).unwrap_err();
        assert!(err.message().contains("/files/{*path}"), "{err}");

        // A public catch-all would open the route's paths: refused too.
        let open = AccessPolicy::default().require("/{*path}", Requirement::public());
        let err = AccessTable::new([("svc", &open)], &served(&["/{page}"], &[])).unwrap_err();
        assert!(err.message().contains("/{page}"), "{err}");

        let wide = AccessPolicy::default().require("/files/{*path}", Requirement::roles(["ops"]));
        let table = table_of(&wide, &served(&["/files/{id}/meta", "/files/export"], &[]));
        assert_eq!(
            table.lookup(&Method::GET, "/files/7/meta"),
            &Requirement::roles(["ops"])
        );
        assert_eq!(
            table.lookup(&Method::GET, "/files/export"),
            &Requirement::authenticated()
        );

        let methods = AccessPolicy::default().require("/pkg.Svc/{method}", Requirement::public());
        let table = table_of(&methods, &served(&[], &["pkg.Svc"]));
        assert!(table.lookup(&Method::POST, "/pkg.Svc/Get").is_public());
    }

    #[test]
    fn patterns_are_compared_without_parameter_names() {
        assert_eq!(canonical("/v1/users/{id}/x"), "/v1/users/{}/x");
        assert_eq!(canonical("/{*path}"), "/{*}");
        assert_eq!(canonical("/a/{{literal}}/{b}"), "/a/{{literal}}/{}");
    }
}
