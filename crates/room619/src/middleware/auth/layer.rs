//! [`AuthLayer`]: authenticates, authorizes, and puts the [`Principal`] in
//! the request extensions.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use axum::response::Response;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{
    HeaderValue, Request,
    header::{RETRY_AFTER, WWW_AUTHENTICATE},
};
use tower::{Layer, Service};

use super::{
    Authenticator, Principal,
    authenticator::Refused,
    requirement::{Decision, Requirement},
    table::AccessTable,
};
use crate::{
    Error,
    middleware::{
        rate_limit::{RateLimiter, too_many},
        reject::Protocol,
        request_path,
    },
};

/// The tracing target of auth decisions (reasons are logged at debug).
pub const AUTH_TARGET: &str = "room619::auth";

/// Authenticates every request and applies the access rules of the hosted
/// services: missing or invalid credentials answer `401` /
/// `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`, insufficient ones `403`
/// / `PERMISSION_DENIED`, and a token that cannot be checked because the
/// JWKS is not loaded yet `503` / `UNAVAILABLE` with `Retry-After: 1`.
///
/// Rules are looked up by the request's full path: inside a nested router,
/// where axum strips the prefix from the URI, by the
/// [`OriginalUri`](axum::extract::OriginalUri) axum keeps.
///
/// Refused credentials that could be guesses (an unknown API key, a token
/// no key's signature verifies, one that does not decode), on every route,
/// count against their client IP when `[rate_limit.refused_credentials]`
/// is set; a client that used up its allowance is answered `429` /
/// `RESOURCE_EXHAUSTED` with `Retry-After` for every request with
/// credentials, unchecked, until it comes back (see
/// [`rate_limit`](crate::middleware::rate_limit)).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    table: AccessTable,
    limiter: Arc<RateLimiter>,
}

impl AuthLayer {
    pub(crate) fn new(
        authenticator: Arc<Authenticator>,
        table: AccessTable,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self {
            authenticator,
            table,
            limiter,
        }
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

/// Answered at once, or the inner service's answer.
type Local<F, E> = Either<Ready<Result<Response, E>>, F>;

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    /// Answered at once, or the inner service's answer; boxed only for a
    /// token that waits for a JWKS fetch its unknown key id asked for.
    type Future =
        Either<Local<S::Future, S::Error>, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let limiter = &self.layer.limiter;
        if let Some(wait) =
            limiter.credentials_held(&request, || carries_credentials(request.headers()))
        {
            let held = too_many(&request, "too many refused credentials", wait);
            return Either::Left(Either::Left(ready(Ok(held))));
        }
        let requirement = self
            .layer
            .table
            .lookup(request.method(), request_path(&request));
        let principal = match self.layer.authenticator.authenticate(request.headers()) {
            Ok(principal) => principal,
            // Served as an anonymous caller; a guess counts all the same (a
            // public route may answer a principal differently).
            Err(reason) if requirement.is_public() => {
                count(&request, &reason, limiter);
                None
            }
            Err(reason) => {
                let Some(fetched) = self.layer.authenticator.refetch_for(&reason) else {
                    let refused = refuse(&request, &reason, limiter);
                    return Either::Left(Either::Left(ready(Ok(refused))));
                };
                let requirement = requirement.clone();
                return Either::Right(self.after_refetch(fetched, requirement, request));
            }
        };
        if let Some(refused) = forbid(requirement, principal.as_ref(), &request) {
            return Either::Left(Either::Left(ready(Ok(refused))));
        }
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        Either::Left(Either::Right(self.inner.call(request)))
    }
}

impl<S> Auth<S> {
    /// Checks `request` again once `fetched` (a JWKS fetch its token's
    /// unknown key id asked for) is done, then calls the inner service.
    fn after_refetch<B>(
        &mut self,
        fetched: BoxFuture<'static, ()>,
        requirement: Requirement,
        mut request: Request<B>,
    ) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        // The service polled ready goes with the request; its clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = Arc::clone(&self.layer.authenticator);
        let limiter = Arc::clone(&self.layer.limiter);
        Box::pin(async move {
            fetched.await;
            let principal = match authenticator.authenticate(request.headers()) {
                Ok(principal) => principal,
                Err(reason) => return Ok(refuse(&request, &reason, &limiter)),
            };
            if let Some(refused) = forbid(&requirement, principal.as_ref(), &request) {
                return Ok(refused);
            }
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            inner.call(request).await
        })
    }
}

/// Counts `reason` against `request`'s client, when it could be a guess.
fn count<B>(request: &Request<B>, reason: &Refused, limiter: &RateLimiter) {
    if reason.is_guess() {
        limiter.credentials_refused(request);
    }
}

/// Whether `headers` carry credentials (that would be checked).
fn carries_credentials(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::AUTHORIZATION)
        || headers.contains_key(crate::middleware::sensitive::API_KEY_HEADER)
}

/// The answer to credentials that were refused: `503` / `UNAVAILABLE` when
/// the keys that could check them are not loaded yet (an OAuth client
/// would throw a valid token away on `invalid_token`), else `401` /
/// `UNAUTHENTICATED` with an `invalid_token` challenge, counted against the
/// client by `limiter` when it could be a guess.
fn refuse<B>(request: &Request<B>, reason: &Refused, limiter: &RateLimiter) -> Response {
    tracing::debug!(target: AUTH_TARGET, path = request_path(request), %reason, "credentials refused");
    let protocol = Protocol::of(request);
    if reason.keys_pending() {
        let error = Error::unavailable("the signing keys (JWKS) are not loaded yet; retry shortly");
        let mut response = match protocol {
            // Not logged as a failed request: the JWKS loader reports why
            // the keys are missing, once, not once a request.
            Protocol::Http => axum::response::IntoResponse::into_response(error.to_problem()),
            Protocol::Grpc => protocol.reject(error, &[]),
        };
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    count(request, reason, limiter);
    protocol.reject(
        Error::unauthenticated("invalid credentials"),
        &[(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )],
    )
}

/// The refusal when `principal` (`None`: no credentials) does not meet
/// `requirement`; `None` when it does.
fn forbid<B>(
    requirement: &Requirement,
    principal: Option<&Principal>,
    request: &Request<B>,
) -> Option<Response> {
    match requirement.check(principal) {
        Decision::Allow => None,
        Decision::Unauthenticated => {
            tracing::debug!(target: AUTH_TARGET, path = request_path(request), "no credentials");
            Some(Protocol::of(request).reject(
                Error::unauthenticated("this call needs credentials"),
                &[(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            ))
        }
        Decision::Forbidden => {
            tracing::debug!(target: AUTH_TARGET, path = request_path(request), "insufficient rights");
            Some(Protocol::of(request).reject(
                Error::permission_denied("the credentials do not allow this call"),
                &[(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                )],
            ))
        }
    }
}
