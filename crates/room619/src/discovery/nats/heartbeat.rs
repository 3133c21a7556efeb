//! Re-puts this process's instances every `ttl / 3`, forgets instances not
//! refreshed within `ttl`, and tracks whether the server is reachable.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::connection::State;
use futures_util::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{NatsDiscovery, Seen};
use crate::{Error, ErrorKind, discovery::Instance};

/// The shortest tick of the heartbeat loop.
const MIN_TICK: Duration = Duration::from_millis(50);
/// How long the watch may take to deliver the bucket's last revision: a
/// tenth of the TTL, from 500 ms to 5 s.
fn grace(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

pub(super) async fn run(discovery: NatsDiscovery, shutdown: CancellationToken) {
    let ttl = discovery.inner.ttl;
    let tick = (ttl / 20).max(MIN_TICK);
    // The bucket's `max_age` is the TTL of the node that created it: the
    // server removes records older than that, so beat within it too.
    let kept_for = match discovery.kv().status().await {
        Ok(status) if !status.max_age().is_zero() => status.max_age(),
        _ => ttl,
    };
    if kept_for < ttl {
        tracing::warn!(
            ?ttl,
            bucket_max_age = ?kept_for,
            "the discovery bucket keeps records for less than this node's TTL \
             (another node with a shorter `discovery.nats.ttl` created it): heartbeats follow the bucket"
        );
    }
    let beat = ttl.min(kept_for) / 3;
    let mut last_beat = Instant::now();
    let mut was_down = false;
    // Whether the last heartbeat reached JetStream: while it does not
    // (connected, but the bucket's stream is unavailable, sealed or full),
    // no other node's heartbeat reaches us either, so nothing expires.
    let mut writable = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        if discovery.inner.client.connection_state() != State::Connected {
            // Keep what we know: nothing expires while we cannot hear.
            let problem = format!("NATS at {} is unreachable", discovery.inner.url);
            discovery.report_beat(Some(problem));
            was_down = true;
            continue;
        }
        if was_down {
            was_down = false;
            let now = Instant::now();
            discovery.seen().values_mut().for_each(|seen| seen.at = now);
            discovery.inner.rewatch.notify_one();
            last_beat = now - beat;
        }
        if !discovery.undeleted().is_empty() {
            delete_again(&discovery).await;
        }
        if last_beat.elapsed() >= beat {
            last_beat = Instant::now();
            let wrote = beat_once(&discovery).await;
            if wrote && !writable {
                // Every node's heartbeat failed as ours did: give each a
                // whole TTL to come back before it can expire.
                let now = Instant::now();
                discovery.seen().values_mut().for_each(|seen| seen.at = now);
                discovery.inner.rewatch.notify_one();
            }
            writable = wrote;
        }
        // Nothing expires while no heartbeat can be heard (ours still go
        // out, so other nodes keep this one's instances).
        let deaf = discovery.unwatched().is_some();
        if writable && !deaf {
            expire(&discovery).await;
        }
    }
}

/// Re-puts every instance this process registered; when that fails, opens
/// (or creates) the bucket again and tries once more. A process with none
/// asks for the bucket's state instead. Whether JetStream took it.
async fn beat_once(discovery: &NatsDiscovery) -> bool {
    let mut mine: Vec<_> = discovery.registered().values().cloned().collect();
    if mine.is_empty() {
        // Asked of the server (the store's `status` is what it cached when
        // opened): a sealed bucket takes no other node's heartbeat either.
        let problem = match discovery.kv().stream.get_info().await {
            Ok(info) if info.config.sealed => "sealed".to_owned(),
            Ok(_) => {
                discovery.report_beat(None);
                return true;
            }
            Err(err) => err.to_string(),
        };
        discovery.report_beat(Some(format!(
            "the discovery bucket is unavailable ({problem})"
        )));
        return false;
    }
    let mut failed = put_all(discovery, &mut mine).await;
    if failed.is_some() {
        match discovery.reopen().await {
            Ok(()) => failed = put_all(discovery, &mut mine).await,
            Err(problem) => tracing::debug!(%problem, "cannot reopen the discovery bucket"),
        }
    }
    // An instance deregistered while its heartbeat was under way may have
    // been put again after its deletion: delete it once more.
    let gone: Vec<&Instance> = {
        let registered = discovery.registered();
        mine.iter()
            .filter(|instance| !registered.contains_key(instance.id()))
            .collect()
    };
    for instance in gone {
        // A failure is kept for `delete_again`.
        if let Err(err) = discovery.delete(instance).await {
            tracing::debug!(?instance, error = %err, "cannot delete a deregistered instance again");
        }
    }
    let wrote = failed.is_none();
    discovery.report_beat(failed.map(|err| err.message().to_owned()));
    wrote
}

/// Deletes the keys of the instances whose deregistration JetStream did
/// not confirm (NATS was away), all at once: other nodes drop them then,
/// not a TTL later. Those deleted are forgotten; the others stay for the
/// next tick. One registered again meanwhile is left alone (`register`
/// takes it out of the list; a deletion under way when it did is mended
/// by the next heartbeat's put).
async fn delete_again(discovery: &NatsDiscovery) {
    let pending: Vec<Instance> = {
        let registered = discovery.registered();
        discovery
            .undeleted()
            .values()
            .filter(|instance| !registered.contains_key(instance.id()))
            .cloned()
            .collect()
    };
    let kv = discovery.kv();
    let deletions = join_all(
        pending
            .iter()
            .map(|instance| kv.delete(super::key::of(instance))),
    )
    .await;
    let mut undeleted = discovery.undeleted();
    for (instance, deletion) in pending.iter().zip(deletions) {
        match deletion {
            Ok(()) => {
                if undeleted.get(instance.id()) == Some(instance) {
                    undeleted.remove(instance.id());
                }
                tracing::info!(?instance, "deregistered once NATS was back");
            }
            Err(err) => {
                tracing::debug!(?instance, error = %err, "cannot delete a deregistered instance yet");
            }
        }
    }
}

/// Puts the records of `mine`, all at once; the first failure that says
/// JetStream did not take one, if any. A record that cannot be stored at
/// all (a key NATS refuses; `register` checks keys, so none should be) says
/// nothing of JetStream: it is logged, taken out of `mine` and out of the
/// heartbeat, and its instance expires here as it never reached the bucket.
async fn put_all(discovery: &NatsDiscovery, mine: &mut Vec<Instance>) -> Option<Error> {
    let puts = join_all(mine.iter().map(|instance| discovery.put(instance))).await;
    let mut failed = None;
    let mut unstorable = Vec::new();
    for (instance, put) in mine.iter().zip(puts) {
        match put {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::Unavailable => {
                failed.get_or_insert(err);
            }
            Err(err) => {
                tracing::warn!(?instance, error = %err, "an instance record NATS cannot store; left out of the heartbeat");
                unstorable.push(instance.clone());
            }
        }
    }
    if !unstorable.is_empty() {
        let mut registered = discovery.registered();
        for instance in &unstorable {
            // Unless registered again meanwhile, as another record.
            if registered.get(instance.id()) == Some(instance) {
                registered.remove(instance.id());
            }
        }
        drop(registered);
        mine.retain(|instance| !unstorable.contains(instance));
    }
    failed
}

/// Whether the watch delivers what the bucket holds: the bucket's last
/// revision is heard within [`grace`]. A watch whose consumer is gone
/// (deleted, or lost by the server) goes silent, and async-nats notices
/// only at its idle heartbeat, seconds later: long enough for every
/// instance to expire here though all are alive. So before any instance
/// expires, the bucket is asked; when the watch lags behind it, the bucket
/// counts as not watched (nothing expires) and the watch starts over.
/// (An instance whose heartbeats stopped put nothing since: its expiry
/// finds the watch level with the bucket.)
async fn hearing(discovery: &NatsDiscovery) -> bool {
    let Ok(info) = discovery.kv().stream.get_info().await else {
        // Cannot tell: the heartbeat finds out what is wrong.
        return false;
    };
    let last = info.state.last_sequence;
    if discovery.inner.heard.load(Ordering::Relaxed) > last {
        // The bucket was made again (by another node, its server back
        // without its store) under this watch: watch the new one.
        discovery.unwatch("the bucket was made again; watching it anew".to_owned());
        return false;
    }
    let deadline = Instant::now() + grace(discovery.inner.ttl);
    while info.state.messages > 0 && discovery.inner.heard.load(Ordering::Relaxed) < last {
        if Instant::now() >= deadline {
            tracing::warn!(
                last,
                heard = discovery.inner.heard.load(Ordering::Relaxed),
                "the discovery watch stopped delivering the bucket's changes; watching again"
            );
            discovery.unwatch("the watch stopped delivering the bucket's changes".to_owned());
            return false;
        }
        tokio::time::sleep(MIN_TICK / 5).await;
    }
    true
}

/// Forgets the instances whose key was not refreshed within their TTL, once
/// the watch is known to hear the bucket.
async fn expire(discovery: &NatsDiscovery) {
    let due = |seen: &Seen| seen.at.elapsed() > seen.ttl;
    if !discovery.seen().values().any(due) || !hearing(discovery).await {
        return;
    }
    let expired: Vec<(String, Duration)> = {
        let mut seen = discovery.seen();
        let expired: Vec<_> = seen
            .iter()
            .filter(|(_, seen)| due(seen))
            .map(|(id, seen)| (id.clone(), seen.ttl))
            .collect();
        for (id, _) in &expired {
            seen.remove(id);
        }
        expired
    };
    for (id, ttl) in expired {
        if let Some(instance) = discovery.inner.catalog.remove(&id) {
            tracing::info!(
                ?instance,
                ?ttl,
                "instance expired: no heartbeat within the TTL"
            );
        }
    }
}
