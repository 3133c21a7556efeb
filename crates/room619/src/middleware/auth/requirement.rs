//! [`Requirement`] and [`AccessPolicy`]: what one service declares (the
//! node-wide table the auth layer consults is in `table`).

use http::Method;

use super::Principal;

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
///
/// A path is matched as the node's router matches it: against the full path
/// (a nested router's prefix included), the most specific pattern first,
/// with the node's own routes and gRPC services among the patterns. So a
/// broad rule (`/{*path}`) never reaches a served route or gRPC service with
/// a more specific pattern: those keep the default, an authenticated caller,
/// unless a rule names their own pattern. Two rules for the same pattern
/// (whatever its parameters are called) and method are refused when the
/// service is built, and so is a rule the router cannot hold beside a
/// route it would decide for (a public `/{*path}` beside a route
/// `/{page}`), and a rule that names nothing the service serves: a rule
/// for a nested router's route names its full path (`/admin/users` for
/// `/users` nested at `/admin`), not the path the router sees. A rule for a
/// built-in path (`/metrics`, `/registry`, health) replaces its public
/// default.
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
}
