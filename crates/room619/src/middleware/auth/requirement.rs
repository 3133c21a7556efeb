//! [`Requirement`], [`AccessPolicy`] (what one service declares) and the
//! node-wide table the auth layer consults.

use std::sync::Arc;

use http::Method;

use super::Principal;
use crate::{Error, Result};

/// What a method or route asks of its caller.
///
/// ```
/// use room619::middleware::auth::Requirement;
///
/// let write = Requirement::scopes(["users:write"]);
/// let admin = Requirement::roles(["admin"]);
/// let open = Requirement::public();
/// # let _ = (write, admin, open);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Public,
    Authenticated,
    AllScopes(Vec<String>),
    AnyRole(Vec<String>),
}

/// What the auth layer does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// No (valid) credentials: 401 / `UNAUTHENTICATED`.
    Unauthenticated,
    /// Valid credentials, not enough rights: 403 / `PERMISSION_DENIED`.
    Forbidden,
}

impl Requirement {
    /// Anyone, with or without credentials (health, login).
    #[must_use]
    pub fn public() -> Self {
        Self { kind: Kind::Public }
    }

    /// Any authenticated caller: the default when `[auth]` is configured.
    #[must_use]
    pub fn authenticated() -> Self {
        Self {
            kind: Kind::Authenticated,
        }
    }

    /// An authenticated caller granted every one of `scopes`.
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self {
            kind: Kind::AllScopes(scopes.into_iter().map(Into::into).collect()),
        }
    }

    /// An authenticated caller holding at least one of `roles`.
    #[must_use]
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        Self {
            kind: Kind::AnyRole(roles.into_iter().map(Into::into).collect()),
        }
    }

    /// Whether this requirement lets anyone in.
    #[must_use]
    pub fn is_public(&self) -> bool {
        self.kind == Kind::Public
    }

    pub(crate) fn check(&self, principal: Option<&Principal>) -> Decision {
        let Some(principal) = principal else {
            return if self.is_public() {
                Decision::Allow
            } else {
                Decision::Unauthenticated
            };
        };
        let allowed = match &self.kind {
            Kind::Public | Kind::Authenticated => true,
            Kind::AllScopes(scopes) => scopes.iter().all(|s| principal.has_scope(s)),
            Kind::AnyRole(roles) => roles.iter().any(|r| principal.has_role(r)),
        };
        if allowed {
            Decision::Allow
        } else {
            Decision::Forbidden
        }
    }
}

/// The access rules one service declares on its builder: paths are gRPC
/// method paths (`/users.v1.Users/Delete`, or a whole service as
/// `/users.v1.Users/{*method}`) or HTTP routes in axum syntax
/// (`/v1/users/{id}`), optionally for one HTTP method.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    pub(crate) rules: Vec<(Option<Method>, String, Requirement)>,
}

impl AccessPolicy {
    /// Adds a rule for every method of `path`.
    #[must_use]
    pub fn require(mut self, path: impl Into<String>, requirement: Requirement) -> Self {
        self.rules.push((None, path.into(), requirement));
        self
    }

    /// Adds a rule for HTTP `method` on `path` only.
    #[must_use]
    pub fn require_method(
        mut self,
        method: Method,
        path: impl Into<String>,
        requirement: Requirement,
    ) -> Self {
        self.rules.push((Some(method), path.into(), requirement));
        self
    }

    /// Whether some rule asks for more than [`Requirement::public`].
    #[must_use]
    pub fn needs_auth(&self) -> bool {
        self.rules.iter().any(|(_, _, r)| !r.is_public())
    }
}

/// Paths every node serves that anyone may call.
const BUILT_IN_PUBLIC: &[&str] = &[
    "/grpc.health.v1.Health/{*method}",
    "/grpc.reflection.v1.ServerReflection/{*method}",
    "/grpc.reflection.v1alpha.ServerReflection/{*method}",
    "/health/live",
    "/health/ready",
    "/metrics",
    // Like health and metrics, an operator's endpoint: set
    // `node.admin_listen` to keep all of them off the public port.
    "/registry",
];

type Rules = Vec<(Option<Method>, Requirement)>;

/// The rules of every hosted service, looked up by path and method; a path
/// with no rule needs an authenticated caller.
#[derive(Clone)]
pub(crate) struct AccessTable {
    router: Arc<matchit::Router<Rules>>,
    fallback: Arc<Requirement>,
}

impl AccessTable {
    /// The table of `policies` (owner name, policy) plus the built-in
    /// public paths.
    pub(crate) fn new<'a>(
        policies: impl IntoIterator<Item = (&'a str, &'a AccessPolicy)>,
    ) -> Result<Self> {
        let mut grouped: Vec<(String, Rules)> = BUILT_IN_PUBLIC
            .iter()
            .map(|path| ((*path).to_owned(), vec![(None, Requirement::public())]))
            .collect();
        for (owner, policy) in policies {
            for (method, path, requirement) in &policy.rules {
                if !path.starts_with('/') {
                    return Err(Error::invalid_argument(format!(
                        "service `{owner}`: access rule path `{path}` must start with `/`"
                    )));
                }
                match grouped.iter_mut().find(|(p, _)| p == path) {
                    Some((_, rules)) => rules.push((method.clone(), requirement.clone())),
                    None => {
                        grouped.push((path.clone(), vec![(method.clone(), requirement.clone())]));
                    }
                }
            }
        }
        let mut router = matchit::Router::new();
        for (path, mut rules) in grouped {
            // Method-specific rules first, so they win over catch-alls.
            rules.sort_by_key(|(method, _)| method.is_none());
            router.insert(path.clone(), rules).map_err(|err| {
                Error::invalid_argument(format!("access rule `{path}` cannot be added: {err}"))
            })?;
        }
        Ok(Self {
            router: Arc::new(router),
            fallback: Arc::new(Requirement::authenticated()),
        })
    }

    /// The requirement for `method` on `path`; `HEAD` (which axum answers
    /// with the `GET` handler) is under the `GET` rules unless it has its
    /// own.
    pub(crate) fn lookup(&self, method: &Method, path: &str) -> &Requirement {
        self.router
            .at(path)
            .ok()
            .and_then(|found| crate::middleware::for_method(found.value, method))
            .unwrap_or(&self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::auth::Credential;

    fn alice(scopes: &[&str]) -> Principal {
        Principal::new(
            "alice",
            scopes.iter().map(|s| (*s).to_owned()),
            ["user".to_owned()],
            Credential::Jwt { kid: None },
        )
    }

    #[test]
    fn decisions_tell_401_from_403() {
        let write = Requirement::scopes(["users:write"]);
        assert_eq!(write.check(None), Decision::Unauthenticated);
        assert_eq!(write.check(Some(&alice(&[]))), Decision::Forbidden);
        assert_eq!(write.check(Some(&alice(&["users:write"]))), Decision::Allow);
        assert_eq!(
            Requirement::roles(["admin", "user"]).check(Some(&alice(&[]))),
            Decision::Allow
        );
        assert_eq!(Requirement::public().check(None), Decision::Allow);
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
        let table = AccessTable::new([("users", &policy)]).unwrap();
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
        let table = AccessTable::new([("reports", &policy)]).unwrap();
        assert_eq!(
            table.lookup(&Method::HEAD, "/v1/reports"),
            &Requirement::roles(["admin"])
        );
        assert!(table.lookup(&Method::POST, "/v1/reports").is_public());
    }
}
