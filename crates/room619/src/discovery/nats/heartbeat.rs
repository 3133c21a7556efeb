//! Re-puts this process's instances every `ttl / 3`, forgets instances not
//! refreshed within `ttl`, and tracks whether the server is reachable.

use std::time::Duration;

use async_nats::connection::State;
use futures_util::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NatsDiscovery;
use crate::discovery::DiscoveryStatus;

/// The shortest tick of the heartbeat loop.
const MIN_TICK: Duration = Duration::from_millis(50);

pub(super) async fn run(discovery: NatsDiscovery, shutdown: CancellationToken) {
    let ttl = discovery.inner.ttl;
    let tick = (ttl / 20).max(MIN_TICK);
    let beat = ttl / 3;
    let mut last_beat = Instant::now();
    let mut was_down = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        if discovery.inner.client.connection_state() != State::Connected {
            // Keep what we know: nothing expires while we cannot hear.
            let known = discovery.seen().len();
            discovery.set_status(DiscoveryStatus::Degraded(format!(
                "NATS at {} is unreachable; answering from the {known} last known instances",
                discovery.inner.url
            )));
            was_down = true;
            continue;
        }
        if was_down {
            was_down = false;
            let now = Instant::now();
            discovery.seen().values_mut().for_each(|seen| *seen = now);
            discovery.inner.rewatch.notify_one();
            last_beat = now - beat;
        }
        if last_beat.elapsed() >= beat {
            last_beat = Instant::now();
            beat_once(&discovery).await;
        }
        expire(&discovery, ttl);
    }
}

/// Re-puts every instance this process registered; when that fails, opens
/// (or creates) the bucket again and tries once more.
async fn beat_once(discovery: &NatsDiscovery) {
    let mine: Vec<_> = discovery.registered().values().cloned().collect();
    let put_all = || join_all(mine.iter().map(|instance| discovery.put(instance)));
    let mut failed = put_all().await.into_iter().find_map(Result::err);
    if failed.is_some() {
        match discovery.reopen().await {
            Ok(()) => failed = put_all().await.into_iter().find_map(Result::err),
            Err(problem) => tracing::debug!(%problem, "cannot reopen the discovery bucket"),
        }
    }
    match failed {
        Some(err) => discovery.set_status(DiscoveryStatus::Degraded(err.message().to_owned())),
        None => discovery.set_status(DiscoveryStatus::Ok),
    }
}

/// Forgets the instances whose key was not refreshed within `ttl`.
fn expire(discovery: &NatsDiscovery, ttl: Duration) {
    let expired: Vec<String> = {
        let mut seen = discovery.seen();
        let expired: Vec<String> = seen
            .iter()
            .filter(|(_, at)| at.elapsed() > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            seen.remove(id);
        }
        expired
    };
    for id in expired {
        if let Some(instance) = discovery.inner.catalog.remove(&id) {
            tracing::info!(
                ?instance,
                ?ttl,
                "instance expired: no heartbeat within the TTL"
            );
        }
    }
}
