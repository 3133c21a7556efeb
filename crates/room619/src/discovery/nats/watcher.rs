//! Follows the whole bucket and applies every put and delete to the
//! catalog; starts over after an error or a reconnect.

use std::{
    collections::hash_map,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv::{Entry, Operation, Watch};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{NatsDiscovery, Seen, TTL_METADATA};
use crate::discovery::{Instance, catalog::Source};

/// The first pause before watching again after the watch failed; it
/// doubles with each failure in a row, up to [`MAX_RETRY`].
const RETRY: Duration = Duration::from_millis(250);
/// The longest pause between attempts to watch.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// During the initial load, a silence this long means nothing is left.
const LOAD_SILENCE: Duration = Duration::from_secs(1);
/// Every key of the bucket.
const ALL_KEYS: &str = ">";

/// A watch of every key that first delivers the last record of each (what
/// is stored now, deletions included), then every change. async-nats's
/// `watch_all` delivers changes only: a node starting, or watching again
/// after a reconnect, would miss what was registered before (until its
/// next heartbeat) and what was deleted meanwhile.
async fn watch(discovery: &NatsDiscovery) -> Result<Watch, async_nats::jetstream::kv::WatchError> {
    discovery.kv().watch_with_history(ALL_KEYS).await
}

/// Starts watching and applies the records already stored, so the catalog
/// is complete when the backend is handed out.
pub(super) async fn load(discovery: &NatsDiscovery) -> Result<Watch, String> {
    let kv = discovery.kv();
    let read_error = |err: &dyn std::fmt::Display| format!("cannot read the bucket: {err}");
    // One message a key (history 1): as many entries as stored messages.
    let mut stored = kv
        .stream
        .clone()
        .info()
        .await
        .map_err(|err| read_error(&err))?
        .state
        .messages;
    let mut watch = watch(discovery).await.map_err(|err| read_error(&err))?;
    // A key may expire in between, so a silence ends the wait as well.
    while stored > 0
        && let Ok(Some(entry)) = tokio::time::timeout(LOAD_SILENCE, watch.next()).await
    {
        let entry = entry.map_err(|err| read_error(&err))?;
        apply(discovery, &entry);
        stored -= 1;
    }
    Ok(watch)
}

/// Follows `initial`, then new watches after each failure, until `shutdown`.
/// While no watch runs, the heartbeat expires nobody (see
/// [`watched_again`]).
pub(super) async fn run(discovery: NatsDiscovery, initial: Watch, shutdown: CancellationToken) {
    let mut initial = Some(initial);
    let mut retry = RETRY;
    loop {
        let watch = match initial.take() {
            Some(watch) => Ok(watch),
            None => watch(&discovery).await,
        };
        let stopped = match watch {
            Ok(mut watch) => {
                watched_again(&discovery);
                retry = RETRY;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = discovery.inner.rewatch.notified() => {
                            tracing::debug!("restarting the discovery watch");
                            break "the watch is starting over".to_owned();
                        }
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => apply(&discovery, &entry),
                            Some(Err(err)) => {
                                tracing::warn!(error = %err, "the discovery watch failed; watching again");
                                break format!("the watch failed: {err}");
                            }
                            None => break "the watch ended".to_owned(),
                        },
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, ?retry, "cannot watch the discovery bucket; trying again");
                let problem = format!("cannot watch the bucket: {err}");
                retry = (retry * 2).min(MAX_RETRY);
                problem
            }
        };
        *discovery.unwatched() = Some(stopped);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// A watch runs (again): heartbeats can be heard. Every known instance
/// gets a whole TTL from now, as after a reconnect: those put while
/// nobody watched arrive with the replay, and none expires before it.
fn watched_again(discovery: &NatsDiscovery) {
    if discovery.unwatched().take().is_some() {
        let now = tokio::time::Instant::now();
        discovery.seen().values_mut().for_each(|seen| seen.at = now);
    }
}

/// How long ago the server stored `entry` (by this machine's clock; zero
/// for one stored "later", the clocks apart).
fn age(entry: &Entry) -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::from(entry.created))
        .unwrap_or_default()
}

/// Applies one bucket entry; a malformed record is logged and skipped.
pub(super) fn apply(discovery: &NatsDiscovery, entry: &Entry) {
    discovery
        .inner
        .heard
        .fetch_max(entry.revision, std::sync::atomic::Ordering::Relaxed);
    let catalog = &discovery.inner.catalog;
    match entry.operation {
        Operation::Put => {
            let mut instance = match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) if NatsDiscovery::key(&instance) == entry.key => instance,
                Ok(instance) => {
                    tracing::warn!(key = %entry.key, ?instance, "skipping an instance record stored under another key");
                    return;
                }
                Err(err) => {
                    tracing::warn!(key = %entry.key, error = %err, "skipping a malformed instance record");
                    return;
                }
            };
            let ttl = instance
                .take_metadata(TTL_METADATA)
                .and_then(|millis| millis.parse().ok())
                .map_or(discovery.inner.ttl, Duration::from_millis);
            match discovery.seen().entry(instance.id().to_owned()) {
                // A replayed record (the watch started again) is no new
                // heartbeat: it keeps the time it was first seen. (A lower
                // revision is a new put too: the stream was made again, its
                // sequence started over.)
                hash_map::Entry::Occupied(mut seen) => {
                    if entry.revision != seen.get().revision {
                        *seen.get_mut() = Seen::now(entry.revision, ttl);
                    }
                }
                hash_map::Entry::Vacant(unknown) => {
                    // Known from here on as of its put, not of now: a
                    // replay (a node starting, a watch started over) brings
                    // the last record of every key the bucket keeps, and
                    // the bucket may keep one longer than the TTL its node
                    // states. One older than that is an instance whose
                    // heartbeats stopped (one that expired here already).
                    let age = age(entry);
                    if age > ttl {
                        tracing::debug!(key = %entry.key, ?age, ?ttl, "skipping a record older than its TTL");
                        return;
                    }
                    let mut seen = Seen::now(entry.revision, ttl);
                    seen.at = seen.at.checked_sub(age).unwrap_or(seen.at);
                    unknown.insert(seen);
                }
            }
            catalog.upsert(Source::Registered, instance);
        }
        Operation::Delete | Operation::Purge => {
            let id = entry.key.rsplit('.').next().unwrap_or_default();
            discovery.seen().remove(id);
            catalog.remove(id);
        }
    }
}
