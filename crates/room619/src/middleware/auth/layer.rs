//! [`AuthLayer`]: authenticates, authorizes, and puts the [`Principal`] in
//! the request extensions.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use axum::response::Response;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Request, header::WWW_AUTHENTICATE};
use tower::{Layer, Service};

use super::{
    Authenticator,
    requirement::{AccessTable, Decision},
};
use crate::{Error, middleware::reject::Protocol};

/// The tracing target of auth decisions (reasons are logged at debug).
pub const AUTH_TARGET: &str = "room619::auth";

/// Authenticates every request and applies the access rules of the hosted
/// services: missing or invalid credentials answer `401` /
/// `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`, insufficient ones `403`
/// / `PERMISSION_DENIED`.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    table: AccessTable,
}

impl AuthLayer {
    pub(crate) fn new(authenticator: Arc<Authenticator>, table: AccessTable) -> Self {
        Self {
            authenticator,
            table,
        }
    }
}

impl std::fmt::Debug for AccessTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTable")
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let requirement = self
            .layer
            .table
            .lookup(request.method(), request.uri().path());
        let presented = match self.layer.authenticator.authenticate(request.headers()) {
            Ok(principal) => Ok(principal),
            Err(_) if requirement.is_public() => Ok(None),
            Err(reason) => Err(reason),
        };
        // The protocol of the answer is only looked up to refuse.
        let protocol = || Protocol::of(&request);
        let principal = match presented {
            Ok(principal) => principal,
            Err(reason) => {
                tracing::debug!(target: AUTH_TARGET, path = request.uri().path(), %reason, "credentials refused");
                let error = if reason.keys_pending() {
                    Error::unauthenticated(
                        "the signing keys (JWKS) are not loaded yet; retry shortly",
                    )
                } else {
                    Error::unauthenticated("invalid credentials")
                };
                return Either::Left(ready(Ok(protocol().reject(
                    error,
                    &[(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    )],
                ))));
            }
        };
        match requirement.check(principal.as_ref()) {
            Decision::Allow => {}
            Decision::Unauthenticated => {
                tracing::debug!(target: AUTH_TARGET, path = request.uri().path(), "no credentials");
                return Either::Left(ready(Ok(protocol().reject(
                    Error::unauthenticated("this call needs credentials"),
                    &[(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                ))));
            }
            Decision::Forbidden => {
                tracing::debug!(target: AUTH_TARGET, path = request.uri().path(), "insufficient rights");
                return Either::Left(ready(Ok(protocol().reject(
                    Error::permission_denied("the credentials do not allow this call"),
                    &[(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                    )],
                ))));
            }
        }
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        Either::Right(self.inner.call(request))
    }
}
