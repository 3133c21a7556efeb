//! The Redis backend: the GCRA in one atomic script, on Redis's clock.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use redis::{Client, Script, aio::MultiplexedConnection};

use futures_util::future::BoxFuture;

use super::{RemoteStore, gcra::Gcra};
use crate::{Error, Result};

/// KEYS[1]: the counter; ARGV: interval and tolerance in microseconds.
/// Returns `{1, 0}` when allowed, `{0, wait_us}` when not. A TAT more than
/// `tolerance + interval` ahead (left by a stricter rule an update replaced)
/// is bounded to that and kept so, as [`Gcra::bound`] does in this process.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local bound = now + tolerance + interval
if tat > bound then
  tat = bound
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
if tat - now > tolerance then
  return {0, tat - tolerance - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// How long a connection, or a decision, may take before Redis counts as
/// unreachable (and the request is decided by the node's own counters).
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after a failed connection attempt the next one is made;
/// meanwhile requests are decided by the node's own counters at once.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// The counters in Redis, over one multiplexed connection. A connection
/// that breaks (Redis restarted, failed over, or dropped it) is let go, and
/// the next decision connects again: redis-rs's multiplexed connection does
/// not reconnect by itself.
pub(crate) struct RedisStore {
    client: Client,
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Held while connecting; when the last attempt failed.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    script: Script,
    prefix: String,
}

impl RedisStore {
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self> {
        let client = Client::open(url)
            .map_err(|err| Error::config(format!("rate_limit.redis_url: {err}")))?;
        Ok(Self {
            client,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(None),
            script: Script::new(GCRA_SCRIPT),
            prefix: prefix.to_owned(),
        })
    }

    /// The connection, made now if there is none (one attempt at a time,
    /// at most one a `RECONNECT_WAIT` after a failure). While another
    /// request connects, this one does not wait for it: it gets `Err`, and
    /// the node's own counters decide it.
    pub(crate) async fn connection(&self) -> Result<Arc<MultiplexedConnection>> {
        if let Some(connection) = self.connection.load_full() {
            return Ok(connection);
        }
        let Ok(mut failed_at) = self.connecting.try_lock() else {
            return Err(Error::unavailable("connecting to Redis"));
        };
        if let Some(connection) = self.connection.load_full() {
            return Ok(connection);
        }
        if let Some(at) = *failed_at
            && at.elapsed() < RECONNECT_WAIT
        {
            return Err(Error::unavailable(
                "Redis is unreachable; connecting again shortly",
            ));
        }
        let connected = tokio::time::timeout(
            REDIS_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *failed_at = None;
                let connection = Arc::new(connection);
                self.connection.store(Some(Arc::clone(&connection)));
                Ok(connection)
            }
            Ok(Err(err)) => {
                *failed_at = Some(Instant::now());
                Err(Error::unavailable(format!("cannot reach Redis: {err}")).with_source(err))
            }
            Err(_) => {
                *failed_at = Some(Instant::now());
                Err(Error::unavailable(format!(
                    "cannot reach Redis: no connection within {REDIS_TIMEOUT:?}"
                )))
            }
        }
    }

    /// The decision for `counter`; `Err` when Redis fails (a broken
    /// connection is let go, for the next decision to connect again).
    async fn decide(&self, counter: &str, gcra: Gcra) -> Result<Result<(), Duration>> {
        let shared = self.connection().await?;
        let mut connection = MultiplexedConnection::clone(&shared);
        let mut invocation = self.script.key(format!("{}{counter}", self.prefix));
        invocation
            .arg((gcra.interval / 1000).max(1))
            .arg(gcra.tolerance / 1000);
        let decided =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection)).await;
        let (allowed, wait_us): (i64, i64) = match decided {
            Ok(Ok(decision)) => decision,
            Ok(Err(err)) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
                {
                    self.forget(&shared);
                }
                return Err(
                    Error::unavailable(format!("Redis rate limit script: {err}")).with_source(err),
                );
            }
            Err(_) => {
                self.forget(&shared);
                return Err(Error::unavailable(format!(
                    "Redis rate limit script: no answer within {REDIS_TIMEOUT:?}"
                )));
            }
        };
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or_default(),
            )))
        }
    }

    /// Lets go of `broken`, unless another connection replaced it already.
    fn forget(&self, broken: &Arc<MultiplexedConnection>) {
        let _previous = self
            .connection
            .compare_and_swap(broken, None::<Arc<MultiplexedConnection>>);
    }
}

impl RemoteStore for RedisStore {
    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.connection().await.map(drop) })
    }

    fn check<'a>(
        &'a self,
        counter: &'a str,
        gcra: Gcra,
    ) -> BoxFuture<'a, Result<Result<(), Duration>>> {
        Box::pin(self.decide(counter, gcra))
    }
}
