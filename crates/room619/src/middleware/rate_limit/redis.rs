//! The Redis backend: the GCRA in one atomic script, on Redis's clock.

use std::time::Duration;

use redis::{Client, Script, aio::MultiplexedConnection};
use tokio::sync::OnceCell;

use futures_util::future::BoxFuture;

use super::{RemoteStore, gcra::Gcra};
use crate::{Error, Result};

/// KEYS[1]: the counter; ARGV: interval and tolerance in microseconds.
/// Returns `{1, 0}` when allowed, `{0, wait_us}` when not.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - tolerance - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

pub(crate) struct RedisStore {
    client: Client,
    connection: OnceCell<MultiplexedConnection>,
    script: Script,
    prefix: String,
}

impl RedisStore {
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self> {
        let client = Client::open(url)
            .map_err(|err| Error::config(format!("rate_limit.redis_url: {err}")))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            script: Script::new(GCRA_SCRIPT),
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) async fn connection(&self) -> Result<MultiplexedConnection> {
        self.connection
            .get_or_try_init(|| async {
                self.client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|err| {
                        Error::unavailable(format!("cannot reach Redis: {err}")).with_source(err)
                    })
            })
            .await
            .cloned()
    }

    /// The decision for `counter`; `Err` when Redis fails.
    async fn decide(&self, counter: &str, gcra: Gcra) -> Result<Result<(), Duration>> {
        let mut connection = self.connection().await?;
        let (allowed, wait_us): (i64, i64) = self
            .script
            .key(format!("{}{counter}", self.prefix))
            .arg((gcra.interval / 1000).max(1))
            .arg(gcra.tolerance / 1000)
            .invoke_async(&mut connection)
            .await
            .map_err(|err| {
                Error::unavailable(format!("Redis rate limit script: {err}")).with_source(err)
            })?;
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or_default(),
            )))
        }
    }
}

impl RemoteStore for RedisStore {
    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.connection().await.map(drop) })
    }

    fn check(&self, counter: String, gcra: Gcra) -> BoxFuture<'_, Result<Result<(), Duration>>> {
        Box::pin(async move { self.decide(&counter, gcra).await })
    }
}
