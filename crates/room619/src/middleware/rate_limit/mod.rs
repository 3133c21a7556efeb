//! Rate limiting: GCRA per route and method, counted by client IP,
//! principal or API key, in this process or shared through Redis.
//!
//! A rule allows `limit + burst` requests at once and then `limit` per
//! `period`. Requests over the limit answer `429 Too Many Requests` with
//! `Retry-After` (problem+json) or gRPC `RESOURCE_EXHAUSTED`.
//!
//! **Client IP.** The TCP peer, unless it is in `trusted_proxies`; only then
//! is the header those proxies write read (`forwarded_header`:
//! `X-Forwarded-For`, or `Forwarded`; never the other), and the right-most
//! hop that is not a trusted proxy is the client. A client cannot escape its
//! limit by inventing forwarding headers. IPv4-mapped IPv6 addresses count
//! as IPv4, and an IPv6 client is counted by its `/64` (one host's prefix).
//!
//! **Run-time changes.** [`RateLimiter::update`] swaps the rules (and trusted
//! proxies) of a running node; counters of unchanged rules carry over. The
//! backend is chosen at start.
//!
//! **Backends.** `local` keeps counters in the process. `redis` (feature
//! `redis`) runs the same GCRA atomically in a Redis script with Redis's
//! clock, so every node with the same `redis_prefix` enforces one combined
//! limit. If Redis cannot be reached the request is let through and a
//! warning is logged (a limiter outage does not become a service outage).
//!
//! **Observing.** Every refusal emits a debug event with target
//! [`RATE_LIMIT_TARGET`] and calls the observer set with
//! [`RateLimiter::on_limited`], if any.
//!
//! ```
//! use room619::{config::Config, middleware::rate_limit::{RateLimitConfig, RateLimiter}};
//!
//! let config = Config::from_toml_str(r#"
//!     [[rate_limit.rules]]
//!     route = "/v1/echo"
//!     limit = 10
//!     period = "1m"
//! "#).unwrap();
//! let limiter = RateLimiter::new(&config.rate_limit).unwrap();
//! limiter.on_limited(|rule| tracing::info!(rule, "limited"));
//! limiter.update(&RateLimitConfig::default()).unwrap(); // no more limits
//! ```

pub(crate) mod client_ip;
mod config;
mod counter;
mod gcra;
mod layer;
#[cfg(feature = "redis")]
mod redis;
mod table;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;

pub use config::{ForwardedHeader, RateLimitBackend, RateLimitConfig, RateLimitKey, RateLimitRule};
pub use layer::{RateLimit, RateLimitLayer};

use self::{counter::Counter, gcra::LocalStore, table::Table};
use crate::Result;

/// The tracing target of rate-limit refusals.
pub const RATE_LIMIT_TARGET: &str = "room619::rate_limit";

type Observer = Arc<dyn Fn(&str) + Send + Sync>;

/// A shared counter store (Redis): decisions there are asynchronous.
trait RemoteStore: Send + Sync {
    /// Connects now.
    fn connect(&self) -> BoxFuture<'_, Result<()>>;
    /// The decision for `counter`; `Err` when the store fails.
    fn check(
        &self,
        counter: String,
        gcra: gcra::Gcra,
    ) -> BoxFuture<'_, Result<Result<(), Duration>>>;
}

/// The rules and counters of a node; shared by its [`RateLimitLayer`]s.
pub struct RateLimiter {
    /// Read on every request, replaced on updates.
    table: ArcSwap<Table>,
    local: LocalStore,
    remote: Option<Box<dyn RemoteStore>>,
    observer: RwLock<Option<Observer>>,
}

impl RateLimiter {
    /// A limiter for `config`. With the `redis` backend it connects on first
    /// use, or at [`connect`](Self::connect).
    ///
    /// # Errors
    ///
    /// `Config` when the section is invalid.
    pub fn new(config: &RateLimitConfig) -> Result<Self> {
        Ok(Self {
            table: ArcSwap::from_pointee(Table::new(config)?),
            local: LocalStore::default(),
            remote: remote_store(config)?,
            observer: RwLock::new(None),
        })
    }

    /// Replaces the rules and trusted proxies; the backend stays.
    ///
    /// # Errors
    ///
    /// `Config` when the new section is invalid; the old rules stay.
    pub fn update(&self, config: &RateLimitConfig) -> Result<()> {
        self.table.store(Arc::new(Table::new(config)?));
        Ok(())
    }

    /// Calls `observer` with the rule's id (`METHOD route`) on every refusal,
    /// for example to count them in a metric.
    pub fn on_limited(&self, observer: impl Fn(&str) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = Some(Arc::new(observer));
        }
    }

    /// Connects to the backend now, to fail fast at start.
    ///
    /// # Errors
    ///
    /// `Unavailable` when Redis cannot be reached.
    pub async fn connect(&self) -> Result<()> {
        match &self.remote {
            Some(remote) => remote.connect().await,
            None => Ok(()),
        }
    }

    fn limited(&self, rule: &str, counter: &Counter<'_>) {
        tracing::debug!(target: RATE_LIMIT_TARGET, rule, key = %counter, "request rate limited");
        if let Some(observer) = self.observer.read().ok().and_then(|o| o.clone()) {
            observer(rule);
        }
    }

    /// Whether a request under `rule` counted as `counter` may pass now,
    /// through the remote store: `Err` holds how long to wait. (Without one,
    /// the layer asks the local store itself, without a future.)
    async fn check_remote(&self, rule: &table::Rule, counter: String) -> Result<(), Duration> {
        if let Some(remote) = &self.remote {
            return match remote.check(counter, rule.gcra).await {
                Ok(decision) => decision,
                Err(err) => {
                    tracing::warn!(target: RATE_LIMIT_TARGET, error = %err, "rate limit backend unreachable; letting the request through");
                    Ok(())
                }
            };
        }
        self.local.check_key(&counter, rule.gcra)
    }

    /// Whether decisions need the async backend.
    fn is_remote(&self) -> bool {
        self.remote.is_some()
    }
}

/// The shared store of `config`'s backend, if it has one.
fn remote_store(config: &RateLimitConfig) -> Result<Option<Box<dyn RemoteStore>>> {
    if config.backend != RateLimitBackend::Redis {
        return Ok(None);
    }
    #[cfg(feature = "redis")]
    {
        let store = redis::RedisStore::new(&config.redis_url, &config.redis_prefix)?;
        Ok(Some(Box::new(store)))
    }
    #[cfg(not(feature = "redis"))]
    Err(crate::Error::config(
        "rate_limit.backend: `redis` needs room619's `redis` feature",
    ))
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("remote", &self.is_remote())
            .finish_non_exhaustive()
    }
}
