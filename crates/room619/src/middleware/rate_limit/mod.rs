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
//! proxies) of a running node; counters of unchanged rules carry over. A
//! rule whose limit or period changed keeps its counters too, but read under
//! the new rule: a client held back a day by `1 per day` waits at most one
//! interval of its replacement. The backend is chosen at start.
//!
//! **Backends.** `local` keeps counters in the process. `redis` (feature
//! `redis`) runs the same GCRA atomically in a Redis script with Redis's
//! clock, so every node with the same `redis_prefix` enforces one combined
//! limit. When Redis cannot decide (unreachable, a broken connection being
//! made again, no answer within 1 s) the request is counted by this node's
//! own counter for the rule and key instead: each node then enforces the
//! limit on its own (with N nodes, at most N times the limit passes in all,
//! never everything), and a warning is logged at most once every 10 s. A
//! limiter outage neither becomes a service outage nor lifts the limits.
//!
//! **Refused credentials.** With `[rate_limit.refused_credentials]`, each
//! request whose refused credentials could be a guess counts against its
//! client IP (an IPv6 client by its `/64`), on every route, public ones
//! too (served anonymously, they may still tell a good guess by the
//! answer): an API key no key matches, a token no key's signature
//! verifies, one that does not even decode. A token a key signed that
//! expired or names another audience, one of a key id not loaded yet, or
//! another scheme's credentials are refused without counting: legitimate
//! clients send those. Once a client IP has used up its allowance, its
//! requests that carry credentials (an `Authorization` or `x-api-key`
//! header) are answered `429` / `RESOURCE_EXHAUSTED` with `Retry-After`
//! before their credentials are checked, valid ones too, on every route,
//! until the allowance comes back: guessing API keys or tokens from one
//! address is held to the limit, and the answers during the wait say
//! nothing about the guesses. Requests without credentials still pass, and
//! in-process calls are never counted. These counters are each node's own
//! (also with the `redis` backend); a warning names a held-back address
//! at most once every 10 s.
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
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;

pub use config::{
    ForwardedHeader, RateLimitBackend, RateLimitConfig, RateLimitKey, RateLimitRule,
    RefusedCredentialsLimit,
};
pub(crate) use layer::too_many;
pub use layer::{RateLimit, RateLimitLayer};

use self::{
    client_ip::client_ip,
    counter::{By, Counter},
    gcra::LocalStore,
    table::Table,
};
use crate::{Result, resilience::retry::throttle::Throttle, rpc::client::PeerAddr};

/// The tracing target of rate-limit refusals.
pub const RATE_LIMIT_TARGET: &str = "room619::rate_limit";

/// How often the limiter warns at most that its shared store cannot decide
/// (during an outage it cannot, on every request).
const BACKEND_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The rule id refused credentials are counted and reported under (rule
/// ids of routes start with a method, so it names no route's rule).
pub(crate) const REFUSED_CREDENTIALS: &str = "refused credentials";

type Observer = Arc<dyn Fn(&str) + Send + Sync>;

/// A shared counter store (Redis): decisions there are asynchronous.
trait RemoteStore: Send + Sync {
    /// Connects now.
    fn connect(&self) -> BoxFuture<'_, Result<()>>;
    /// The decision for `counter`; `Err` when the store fails.
    fn check<'a>(
        &'a self,
        counter: &'a str,
        gcra: gcra::Gcra,
    ) -> BoxFuture<'a, Result<Result<(), Duration>>>;
}

/// The rules and counters of a node; shared by its [`RateLimitLayer`]s.
pub struct RateLimiter {
    /// Read on every request, replaced on updates.
    table: ArcSwap<Table>,
    /// The counters of the `local` backend, and of the `redis` one while
    /// Redis cannot decide.
    local: LocalStore,
    remote: Option<Box<dyn RemoteStore>>,
    /// Spaces out the warnings that the remote store cannot decide.
    unreachable: Throttle,
    /// Until when (the local store's clock) some client IP may be held back
    /// for its refused credentials; 0 when none ever was. Before it, each
    /// request with credentials looks its address up; after, none does.
    held_until: AtomicU64,
    /// Spaces out the warnings that a client is held back.
    held: Throttle,
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
            unreachable: Throttle::new(BACKEND_WARNING_EVERY),
            held_until: AtomicU64::new(0),
            held: Throttle::new(BACKEND_WARNING_EVERY),
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
    /// through the remote store: `Err` holds how long to wait. When the
    /// store cannot decide, this node's own counter does. (Without a remote
    /// store, the layer asks the local store itself, without a future.)
    async fn check_remote(&self, rule: &table::Rule, counter: String) -> Result<(), Duration> {
        if let Some(remote) = &self.remote {
            match remote.check(&counter, rule.gcra).await {
                Ok(decision) => return decision,
                Err(err) => self.remote_failed(&err),
            }
        }
        self.local.check_key(&counter, rule.gcra)
    }

    /// Warns that the remote store could not decide, at most once every
    /// [`BACKEND_WARNING_EVERY`] (an outage fails every request).
    fn remote_failed(&self, err: &crate::Error) {
        if let Some(suppressed) = self.unreachable.admit(tokio::time::Instant::now()) {
            tracing::warn!(
                target: RATE_LIMIT_TARGET,
                error = %err,
                suppressed_since_last_warning = suppressed,
                "rate limit backend cannot decide; limiting on this node's own counters meanwhile"
            );
        }
    }

    /// How long `request`'s client must wait before credentials it sends
    /// are checked again, when its refused credentials have used up
    /// `[rate_limit.refused_credentials]`; `None` when they may be checked
    /// now, and when it `carries` none (asked only while some client is
    /// held back). Reported as a refusal of the [`REFUSED_CREDENTIALS`]
    /// rule.
    pub(crate) fn credentials_held<B>(
        &self,
        request: &http::Request<B>,
        carries: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let until = self.held_until.load(Ordering::Relaxed);
        if until == 0 || self.local.now() >= until || !carries() {
            return None;
        }
        let table = self.table.load();
        let counter = refusals_of(request, &table)?;
        let wait = self.local.peek(&counter, table.refused?).err()?;
        self.limited(REFUSED_CREDENTIALS, &counter);
        Some(wait)
    }

    /// Counts `request`'s refused credentials against its client.
    pub(crate) fn credentials_refused<B>(&self, request: &http::Request<B>) {
        let table = self.table.load();
        let (Some(gcra), Some(counter)) = (table.refused, refusals_of(request, &table)) else {
            return;
        };
        let tat = match self.local.record(&counter, gcra) {
            Ok(tat) => tat,
            // Over its allowance and checked all the same: the rule got
            // stricter at a reload, after the client was last seen held.
            Err(wait) => {
                let until = self
                    .local
                    .now()
                    .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                self.held_until.fetch_max(until, Ordering::Relaxed);
                return;
            }
        };
        // The client's next refusal would wait until `tat - tolerance`: it
        // is held back until then, if that is still to come.
        let until = tat.saturating_sub(gcra.tolerance);
        if until <= self.local.now() {
            return;
        }
        self.held_until.fetch_max(until, Ordering::Relaxed);
        if let Some(suppressed) = self.held.admit(tokio::time::Instant::now()) {
            tracing::warn!(
                target: RATE_LIMIT_TARGET,
                client = %counter,
                suppressed_since_last_warning = suppressed,
                "client held back: too many refused credentials"
            );
        }
    }

    /// Whether decisions need the async backend.
    fn is_remote(&self) -> bool {
        self.remote.is_some()
    }
}

/// What `request`'s refused credentials count as: its client IP; `None`
/// for an in-process call.
fn refusals_of<'a, B>(request: &http::Request<B>, table: &Table) -> Option<Counter<'a>> {
    let PeerAddr(peer) = request.extensions().get::<PeerAddr>()?;
    let ip = client_ip(peer.ip(), request.headers(), &table.proxies);
    Some(Counter {
        rule: REFUSED_CREDENTIALS,
        by: By::Ip(ip),
    })
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

#[cfg(test)]
#[cfg(feature = "redis")]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;
    use tokio::time::Instant;

    use super::{BACKEND_WARNING_EVERY, RateLimiter, table::Rule};
    use crate::config::Config;

    const COUNTER: &str = "* /v1/echo|ip:192.0.2.7";

    /// A limiter on the `redis` backend at `url` with one rule, 3 an hour on
    /// `/v1/echo`; and that rule.
    fn limiter(url: &str) -> (RateLimiter, Rule) {
        let config = Config::from_toml_str(&format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{url}\"\n\
             [[rate_limit.rules]]\nroute = \"/v1/echo\"\nlimit = 3\nperiod = \"1h\"\n"
        ))
        .unwrap();
        let limiter = RateLimiter::new(&config.rate_limit).unwrap();
        let rule = limiter
            .table
            .load()
            .lookup(&http::Method::POST, "/v1/echo")
            .unwrap()
            .clone();
        (limiter, rule)
    }

    /// How many of 9 requests at once, then of 9 one after the other (a
    /// second client), pass.
    async fn passed(limiter: &RateLimiter, rule: &Rule) -> (usize, usize) {
        let at_once = join_all((0..9).map(|_| limiter.check_remote(rule, COUNTER.to_owned())))
            .await
            .iter()
            .filter(|decision| decision.is_ok())
            .count();
        let mut in_turn = 0;
        for _ in 0..9 {
            let counter = COUNTER.replace("192.0.2.7", "192.0.2.8");
            if limiter.check_remote(rule, counter).await.is_ok() {
                in_turn += 1;
            }
        }
        (at_once, in_turn)
    }

    /// Redis unreachable used to let every request through (and log each);
    /// now the node's own counters decide, and one warning a 10 s is logged.
    #[tokio::test(start_paused = true)]
    async fn with_redis_unreachable_the_node_still_holds_its_own_limit() {
        let (limiter, rule) = limiter("redis://127.0.0.1:1");
        assert_eq!(passed(&limiter, &rule).await, (3, 3));
        assert_eq!(
            limiter.unreachable.admit(Instant::now()),
            None,
            "one warning so far"
        );
        tokio::time::advance(BACKEND_WARNING_EVERY).await;
        assert_eq!(
            limiter.unreachable.admit(Instant::now()),
            Some(18),
            "the 17 failures after the first, and the probe above, were held back"
        );
    }

    /// A Redis that accepts connections and never answers: each request
    /// waits at most the 1 s timeout, then the node's own counters decide.
    #[tokio::test]
    async fn with_redis_silent_the_node_still_holds_its_own_limit() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let (limiter, rule) = limiter(&format!("redis://{addr}"));
        let started = Instant::now();
        assert_eq!(passed(&limiter, &rule).await, (3, 3));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        accepting.abort();
    }
}

#[cfg(test)]
mod refused_credentials {
    use std::net::SocketAddr;

    use super::RateLimiter;
    use crate::{config::Config, rpc::client::PeerAddr};

    fn limiter(limit: u32) -> RateLimiter {
        RateLimiter::new(&section(limit)).unwrap()
    }

    fn section(limit: u32) -> super::RateLimitConfig {
        Config::from_toml_str(&format!(
            "[rate_limit.refused_credentials]\nlimit = {limit}\nperiod = \"1h\"\n"
        ))
        .unwrap()
        .rate_limit
    }

    fn request() -> http::Request<()> {
        let mut request = http::Request::new(());
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        request.extensions_mut().insert(PeerAddr(peer));
        request
    }

    #[test]
    fn a_client_is_held_once_its_refusals_use_up_the_allowance() {
        let limiter = limiter(2);
        let request = request();
        assert_eq!(limiter.credentials_held(&request, || true), None);
        limiter.credentials_refused(&request);
        assert_eq!(limiter.credentials_held(&request, || true), None);
        limiter.credentials_refused(&request);
        assert!(limiter.credentials_held(&request, || true).is_some());
        assert_eq!(
            limiter.credentials_held(&request, || false),
            None,
            "a request without credentials passes"
        );
        let mut in_process = http::Request::new(());
        in_process
            .extensions_mut()
            .insert(crate::rpc::client::Colocated);
        assert_eq!(limiter.credentials_held(&in_process, || true), None);
    }

    /// A rule made stricter at a reload: the client's next refusal finds it
    /// over the new allowance, and holds it (it used to leave it unheld,
    /// and uncounted, until its time under the old rule passed).
    #[test]
    fn a_stricter_rule_holds_a_client_already_over_it() {
        let limiter = limiter(10);
        let request = request();
        for _ in 0..3 {
            limiter.credentials_refused(&request);
        }
        assert_eq!(limiter.credentials_held(&request, || true), None);
        limiter.update(&section(1)).unwrap();
        limiter.credentials_refused(&request);
        assert!(limiter.credentials_held(&request, || true).is_some());
    }
}
