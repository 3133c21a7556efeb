//! Follows the whole bucket and applies every put and delete to the
//! catalog; starts over after an error or a reconnect.

use std::{
    collections::hash_map,
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv::{Entry, Operation, Watch};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{NatsDiscovery, Seen, TTL_METADATA, key};
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
async fn watch(discovery: &NatsDiscovery) -> Result<(Watch, Replay), String> {
    let kv = discovery.kv();
    let state = kv
        .stream
        .get_info()
        .await
        .map_err(|err| format!("cannot read the bucket: {err}"))?
        .state;
    // What the watch delivers from here on is all it heard.
    discovery.inner.heard.store(0, Ordering::Relaxed);
    let watch = kv
        .watch_with_history(ALL_KEYS)
        .await
        .map_err(|err| format!("cannot watch the bucket: {err}"))?;
    let replay = Replay {
        until: state.last_sequence,
        at: SystemTime::from(state.last_timestamp),
        stored: state.messages,
    };
    Ok((watch, replay))
}

/// What the bucket held as a watch began: its records up to `until` come
/// first, as a replay of what is stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replay {
    /// The bucket's last revision then.
    until: u64,
    /// When the server stored that revision, by the server's clock: a
    /// replayed record's age is taken from it (never from this machine's
    /// clock, which may be apart from the server's).
    at: SystemTime,
    /// How many records the bucket held.
    stored: u64,
}

impl Replay {
    /// How long before the replay's last record `entry` was stored, when it
    /// comes with the replay.
    fn age_of(&self, entry: &Entry) -> Option<Duration> {
        (entry.revision <= self.until).then(|| {
            self.at
                .duration_since(SystemTime::from(entry.created))
                .unwrap_or_default()
        })
    }
}

/// Starts watching and applies the records already stored, so the catalog
/// is complete when the backend is handed out.
pub(super) async fn load(discovery: &NatsDiscovery) -> Result<(Watch, Replay), String> {
    let (mut watch, replay) = watch(discovery).await?;
    // One message a key (history 1): as many entries as stored messages.
    let mut stored = replay.stored;
    // A key may expire in between, so a silence ends the wait as well.
    while stored > 0
        && let Ok(Some(entry)) = tokio::time::timeout(LOAD_SILENCE, watch.next()).await
    {
        let entry = entry.map_err(|err| format!("cannot read the bucket: {err}"))?;
        apply(discovery, &entry, &replay);
        stored -= 1;
    }
    Ok((watch, replay))
}

/// Follows `initial`, then new watches after each failure, until `shutdown`.
/// While no watch runs, the heartbeat expires nobody (see
/// [`watched_again`]).
pub(super) async fn run(
    discovery: NatsDiscovery,
    initial: (Watch, Replay),
    shutdown: CancellationToken,
) {
    let mut initial = Some(initial);
    let mut retry = RETRY;
    loop {
        let watch = match initial.take() {
            Some(watch) => Ok(watch),
            None => watch(&discovery).await,
        };
        let stopped = match watch {
            Ok((mut watch, replay)) => {
                watched_again(&discovery);
                retry = RETRY;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = discovery.inner.rewatch.notified() => {
                            // Asked for (a reconnect, the bucket made
                            // again): at once, and not reported.
                            tracing::debug!("restarting the discovery watch");
                            *discovery.unwatched() = Some("the watch is starting over".to_owned());
                            break None;
                        }
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => apply(&discovery, &entry, &replay),
                            Some(Err(err)) => {
                                tracing::warn!(error = %err, "the discovery watch failed; watching again");
                                break Some(format!("the watch failed: {err}"));
                            }
                            None => break Some("the watch ended".to_owned()),
                        },
                    }
                }
            }
            Err(problem) => {
                tracing::warn!(%problem, ?retry, "cannot watch the discovery bucket; trying again");
                retry = (retry * 2).min(MAX_RETRY);
                Some(problem)
            }
        };
        if let Some(problem) = stopped {
            *discovery.unwatched() = Some(problem);
            discovery.refresh_status();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }
}

/// A watch runs (again): heartbeats can be heard. Nothing expires before
/// it has delivered the bucket's last revision (see `heartbeat::hearing`),
/// so instances put while nobody watched arrive with the replay first.
fn watched_again(discovery: &NatsDiscovery) {
    if discovery.unwatched().take().is_some() {
        discovery.refresh_status();
    }
}

/// Applies one bucket entry; a malformed record is logged and skipped.
pub(super) fn apply(discovery: &NatsDiscovery, entry: &Entry, replay: &Replay) {
    discovery
        .inner
        .heard
        .fetch_max(entry.revision, Ordering::Relaxed);
    let catalog = &discovery.inner.catalog;
    match entry.operation {
        Operation::Put => {
            let mut instance = match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) if key::of(&instance) == entry.key => instance,
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
                        let age = replay.age_of(entry).unwrap_or_default();
                        *seen.get_mut() = Seen::aged(entry.revision, ttl, age);
                    }
                }
                hash_map::Entry::Vacant(unknown) => {
                    // A replay (a node starting, a watch started over)
                    // brings the last record of every key the bucket keeps,
                    // and the bucket may keep one longer than the TTL its
                    // node states: one older than that is an instance whose
                    // heartbeats stopped (one that expired here already).
                    // A younger one counts from its put, as it would
                    // have had this node watched all along.
                    let age = replay.age_of(entry).unwrap_or_default();
                    if age > ttl {
                        tracing::debug!(key = %entry.key, ?age, ?ttl, "skipping a replayed record older than its TTL");
                        return;
                    }
                    unknown.insert(Seen::aged(entry.revision, ttl, age));
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
