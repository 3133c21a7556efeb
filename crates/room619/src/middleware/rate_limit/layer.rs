//! [`RateLimitLayer`]: applies a [`RateLimiter`] to every request.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::response::Response;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderValue, Request, header::RETRY_AFTER};
use tower::{Layer, Service};

use super::{
    RateLimitKey, RateLimiter,
    client_ip::{Proxies, client_ip},
    counter::{By, Counter},
    table::Rule,
};
use crate::{
    Error,
    middleware::{
        auth::{Credential, Principal},
        reject::Protocol,
    },
    rpc::client::PeerAddr,
};

/// Limits requests by the rules of a shared [`RateLimiter`]. Put it inside
/// the auth layer so limits by principal see who is calling.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    /// A layer applying `limiter`.
    #[must_use]
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

type Local<F, E> = Either<Ready<Result<Response, E>>, F>;

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        Either<Local<S::Future, S::Error>, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let table = self.limiter.table.load();
        let rule = if table.empty {
            None
        } else {
            table.lookup(request.method(), crate::middleware::request_path(&request))
        };
        let Some(rule) = rule else {
            return Either::Left(Either::Right(self.inner.call(request)));
        };
        let counter = counter_of(&request, rule, &table.proxies);
        if !self.limiter.is_remote() {
            let decision = self.limiter.local.check(&counter, rule.gcra);
            return Either::Left(match decision {
                Ok(()) => Either::Right(self.inner.call(request)),
                Err(wait) => Either::Left(ready(Ok(self.refuse(&request, rule, &counter, wait)))),
            });
        }
        let (rule, key) = (rule.clone(), counter.key());
        drop(table);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let this = self.clone();
        Either::Right(Box::pin(async move {
            match this.limiter.check_remote(&rule, key).await {
                Ok(()) => inner.call(request).await,
                Err(wait) => {
                    let table = this.limiter.table.load();
                    let counter = counter_of(&request, &rule, &table.proxies);
                    Ok(this.refuse(&request, &rule, &counter, wait))
                }
            }
        }))
    }
}

impl<S> RateLimit<S> {
    fn refuse<B>(
        &self,
        request: &Request<B>,
        rule: &Rule,
        counter: &Counter<'_>,
        wait: Duration,
    ) -> Response {
        self.limiter.limited(&rule.id, counter);
        too_many(request, "rate limit exceeded", wait)
    }
}

/// `429` / `RESOURCE_EXHAUSTED` with `Retry-After`: `what`, and to retry
/// after `wait` (in whole seconds, at least 1).
pub(crate) fn too_many<B>(request: &Request<B>, what: &str, wait: Duration) -> Response {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    Protocol::of(request).reject(
        Error::resource_exhausted(format!("{what}; retry in {seconds}s")),
        &[(RETRY_AFTER, HeaderValue::from(seconds))],
    )
}

/// What the request is counted as under `rule`.
fn counter_of<'a, B>(request: &'a Request<B>, rule: &'a Rule, proxies: &Proxies) -> Counter<'a> {
    let principal = request.extensions().get::<Principal>();
    let by = match (rule.key, principal) {
        (RateLimitKey::Principal, Some(principal)) => By::Subject(principal.subject()),
        (RateLimitKey::ApiKey, Some(principal))
            if matches!(principal.credential(), Credential::ApiKey { .. }) =>
        {
            By::ApiKey(principal.subject())
        }
        _ => match request.extensions().get::<PeerAddr>() {
            Some(PeerAddr(peer)) => By::Ip(client_ip(peer.ip(), request.headers(), proxies)),
            None => By::InProcess,
        },
    };
    Counter { rule: &rule.id, by }
}
