//! [`Principal`]: who made a request, as the auth layer proved it.

use std::{collections::BTreeSet, sync::Arc};

use axum::extract::FromRequestParts;
use http::{Extensions, request::Parts};

use crate::Error;

/// How a [`Principal`] proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A verified JWT bearer token; `kid` names the key that verified it.
    Jwt {
        /// The `kid` of the verifying key, if it has one.
        kid: Option<String>,
    },
    /// An API key from `[[auth.api_keys]]`; `name` is the configured name.
    ApiKey {
        /// The key's configured name.
        name: String,
    },
}

/// The authenticated caller: subject, scopes and roles.
///
/// The auth layer puts it in the request extensions. axum handlers take it
/// as an extractor (missing, on a public route: the [`Error`] `401` with
/// `WWW-Authenticate: Bearer`); tonic handlers read
/// `request.extensions().get::<Principal>()` or call [`Principal::of`].
///
/// ```
/// use room619::middleware::auth::Principal;
///
/// async fn me(principal: Principal) -> String {
///     format!("hello {}", principal.subject())
/// }
/// let _: axum::routing::MethodRouter = axum::routing::get(me);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Shared: a principal is cloned into every request it authenticates.
    inner: Arc<Inner>,
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    subject: String,
    scopes: BTreeSet<String>,
    roles: BTreeSet<String>,
    credential: Credential,
}

impl Principal {
    /// A principal; made by the auth layer, public for tests and custom layers.
    #[must_use]
    pub fn new(
        subject: impl Into<String>,
        scopes: impl IntoIterator<Item = String>,
        roles: impl IntoIterator<Item = String>,
        credential: Credential,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                subject: subject.into(),
                scopes: scopes.into_iter().collect(),
                roles: roles.into_iter().collect(),
                credential,
            }),
        }
    }

    /// The principal of a request, from its extensions (`http` or tonic's).
    #[must_use]
    pub fn of(extensions: &Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// The subject: the token's `sub`, or the API key's name.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The granted scopes (a token's `scope` / `scp`, an API key's `scopes`).
    #[must_use]
    pub fn scopes(&self) -> &BTreeSet<String> {
        &self.inner.scopes
    }

    /// The granted roles (a token's `roles`, an API key's `roles`).
    #[must_use]
    pub fn roles(&self) -> &BTreeSet<String> {
        &self.inner.roles
    }

    /// Whether `scope` was granted.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.contains(scope)
    }

    /// Whether `role` was granted.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.contains(role)
    }

    /// How the principal proved who it is.
    #[must_use]
    pub fn credential(&self) -> &Credential {
        &self.inner.credential
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::unauthenticated("this route needs credentials"))
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use http::header::WWW_AUTHENTICATE;

    use super::*;

    #[tokio::test]
    async fn a_missing_principal_is_a_401_with_a_bearer_challenge() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let rejection = Principal::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(rejection.kind(), crate::ErrorKind::Unauthenticated);
        let response = rejection.into_response();
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    /// axum hands a handler `Result<T, T::Rejection>`: the rejection is
    /// room619's `Error`, so a handler may take the principal as optional.
    #[test]
    fn handlers_take_the_principal_or_the_error() {
        async fn maybe(principal: Result<Principal, Error>) -> String {
            principal.map_or_else(|_| "anonymous".to_owned(), |p| p.subject().to_owned())
        }
        let _route: axum::routing::MethodRouter = axum::routing::get(maybe);
    }
}
