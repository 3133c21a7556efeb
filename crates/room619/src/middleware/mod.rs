//! Server middleware shared by gRPC and HTTP: request ids, sensitive
//! headers, authentication and authorization, rate limiting.
//!
//! # The chain
//!
//! Every request a node serves passes, outermost first (on the HTTP side,
//! CORS and compression ([`http`], opt-in) go around it all):
//!
//! 1. the `x-request-id` of the request (kept when sane, generated
//!    otherwise), in the extensions, the response and the request's span, as
//!    [`RequestIdLayer`] does;
//! 2. credentials marked so they never print, as [`SensitiveHeadersLayer`]
//!    does;
//! 3. tracing and metrics (the observability layers; on a node, one layer
//!    does 1 to 3, each its own layer would be one more call and future per
//!    request);
//! 4. load shedding / concurrency limits, when configured;
//! 5. the deadline (`grpc-timeout`, `x-request-timeout`) and body limits
//!    ([`rpc`](crate::rpc));
//! 6. [`auth::AuthLayer`]: who is calling, and may they call this
//!    (`[auth]`);
//! 7. [`rate_limit::RateLimitLayer`]: the limits of `[rate_limit]`;
//! 8. the handler, which validates its input (`validation`, feature
//!    `validate`); a gRPC message that does not decode answers
//!    `INVALID_ARGUMENT` (see [`rpc::grpc`](crate::rpc::grpc)).
//!
//! Auth runs before rate limiting so limits can count by principal (refused
//! credentials are counted by client IP in the auth layer, when
//! `[rate_limit.refused_credentials]` asks for it); both run
//! on the gRPC and the HTTP side with the same rules and answer in the
//! caller's protocol. Every part is a plain tower [`Layer`](tower::Layer), so
//! it can also be put on a bare tonic or axum stack, and users add their own
//! layers around their routers as usual.

pub mod auth;
pub mod http;
pub mod rate_limit;
mod reject;
pub mod request_id;
pub mod sensitive;
#[cfg(feature = "validate")]
pub mod validation;

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;

pub use request_id::{RequestId, RequestIdLayer};

/// Auth (when configured), then rate limiting.
pub(crate) type GuardLayers = tower::layer::util::Stack<
    RateLimitLayer,
    tower::layer::util::Stack<
        tower::util::Either<AuthLayer, tower::layer::util::Identity>,
        tower::layer::util::Identity,
    >,
>;
pub use sensitive::SensitiveHeadersLayer;

use self::{
    auth::{AccessPolicy, AccessTable, AuthLayer, Authenticator, JwksConfig, ServedPaths},
    rate_limit::{RateLimitLayer, RateLimiter},
};
use crate::{Error, Result, config::Config};

/// The middleware of one node, built from its configuration and the access
/// policies of its services.
#[derive(Clone)]
pub(crate) struct NodeMiddleware {
    auth: Option<(Arc<Authenticator>, AccessTable, Option<JwksConfig>)>,
    limiter: Arc<RateLimiter>,
    http: http::HttpConfig,
}

/// Refuses access rules on a node that cannot authenticate anyone.
fn no_requirements(policies: &[(&str, &AccessPolicy)]) -> Result<()> {
    match policies.iter().find(|(_, policy)| policy.needs_auth()) {
        Some((owner, _)) => Err(Error::config(format!(
            "service `{owner}` declares access requirements but `[auth]` configures no keys"
        ))),
        None => Ok(()),
    }
}

impl NodeMiddleware {
    /// The middleware of `config` for services with `policies`, serving
    /// `served` (every pattern the access table must know).
    pub(crate) fn new<'a>(
        config: &Config,
        policies: impl IntoIterator<Item = (&'a str, &'a AccessPolicy)>,
        served: &ServedPaths,
    ) -> Result<Self> {
        let policies: Vec<_> = policies.into_iter().collect();
        let auth = if config.auth.enabled() {
            let authenticator = Arc::new(Authenticator::new(&config.auth)?);
            let table = AccessTable::new(policies, served)?;
            Some((authenticator, table, config.auth.jwks.clone()))
        } else {
            no_requirements(&policies)?;
            None
        };
        Ok(Self {
            auth,
            limiter: Arc::new(RateLimiter::new(&config.rate_limit)?),
            http: config.http.clone(),
        })
    }

    /// The same keys and rate limiter (state included) for another set of
    /// services, when services are added to or removed from a running node.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new): an access rule that does not parse, or one that
    /// needs auth on a node without `[auth]`.
    pub(crate) fn rebuilt<'a>(
        &self,
        policies: impl IntoIterator<Item = (&'a str, &'a AccessPolicy)>,
        served: &ServedPaths,
    ) -> Result<Self> {
        let policies: Vec<_> = policies.into_iter().collect();
        let auth = if let Some((authenticator, _, jwks)) = &self.auth {
            let table = AccessTable::new(policies, served)?;
            Some((Arc::clone(authenticator), table, jwks.clone()))
        } else {
            no_requirements(&policies)?;
            None
        };
        Ok(Self {
            auth,
            limiter: Arc::clone(&self.limiter),
            http: self.http.clone(),
        })
    }

    /// Auth and rate limiting (in that order), to stack with a route's
    /// other layers.
    pub(crate) fn guard_layers(&self) -> tower::ServiceBuilder<GuardLayers> {
        let auth = self.auth.as_ref().map(|(authenticator, table, _)| {
            AuthLayer::new(
                Arc::clone(authenticator),
                table.clone(),
                Arc::clone(&self.limiter),
            )
        });
        tower::ServiceBuilder::new()
            .option_layer(auth)
            .layer(RateLimitLayer::new(Arc::clone(&self.limiter)))
    }

    /// The HTTP-only layers around a whole router: compression, then CORS
    /// (outermost), when `[http]` turns them on.
    pub(crate) fn http_layers(&self, router: Router) -> Router {
        self.http.apply(router)
    }

    /// Whether [`http_layers`](Self::http_layers) adds nothing.
    pub(crate) fn http_is_plain(&self) -> bool {
        self.http.is_plain()
    }

    /// The node's rate limiter, for run-time updates.
    pub(crate) fn rate_limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.limiter)
    }

    /// Loads the JWKS and connects the rate-limit backend, then keeps the
    /// JWKS fresh until `stop`. A JWKS file that cannot be read fails the
    /// start; a JWKS URL that does not answer yet is retried in the
    /// background (see [`auth::jwks::start`]).
    pub(crate) async fn start(&self, stop: &CancellationToken) -> Result<()> {
        if let Some((authenticator, _, Some(jwks))) = &self.auth {
            auth::jwks::start(authenticator, jwks, stop).await?;
        }
        self.limiter.connect().await
    }
}

/// The path `request` was sent to, as access and rate-limit rules name it:
/// inside a nested router axum strips the prefix from the URI and keeps the
/// original in [`OriginalUri`](axum::extract::OriginalUri) (set by the
/// outermost router, before any layer of a route runs).
pub(crate) fn request_path<B>(request: &::http::Request<B>) -> &str {
    request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.0.path())
}

/// Of the rules of one path (method-specific ones and catch-alls, `None`),
/// the one for `method`: its own, else for `HEAD` the `GET` one (axum
/// answers `HEAD` with the `GET` handler, so it must be guarded and counted
/// as one), else the catch-all.
pub(crate) fn for_method<'a, T>(
    rules: &'a [(Option<::http::Method>, T)],
    method: &::http::Method,
) -> Option<&'a T> {
    let only = |wanted: &::http::Method| {
        rules
            .iter()
            .find(|(m, _)| m.as_ref() == Some(wanted))
            .map(|(_, rule)| rule)
    };
    only(method)
        .or_else(|| {
            (method == ::http::Method::HEAD)
                .then(|| only(&::http::Method::GET))
                .flatten()
        })
        .or_else(|| {
            rules
                .iter()
                .find(|(m, _)| m.is_none())
                .map(|(_, rule)| rule)
        })
}
