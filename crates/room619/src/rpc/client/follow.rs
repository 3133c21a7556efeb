//! Keeps a balancer's instances in step with a discovery watch: instances
//! that appear (serving, with a matching version) are added, those that go
//! away or stop serving are dropped.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use semver::VersionReq;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::balance::Balanced;
use crate::{
    discovery::{Change, Instance, Watch},
    error::BoxError,
};

/// Spawns the task that applies `watch` to `balanced` until `shutdown`, or
/// until no client uses the balancer any more (it holds it weakly: a client
/// handed out before a reload of the resilience policies keeps following
/// discovery for as long as it is used). `known` holds the ids already in
/// the balancer with their addresses; `make` builds the service of a new
/// instance (`None` when its address is unusable). An instance back under
/// the same id at another address (a restarted pod of a stateful set) has
/// its service made again.
pub(super) fn follow<S, Req, F>(
    balanced: Balanced<S, Req>,
    mut watch: Watch,
    requirement: VersionReq,
    known: HashMap<String, String>,
    make: F,
    shutdown: CancellationToken,
) where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
    F: Fn(&Instance) -> Option<S> + Send + 'static,
{
    let eligible =
        move |instance: &Instance| instance.is_serving() && requirement.matches(instance.version());
    let weak = balanced.downgrade();
    drop(balanced);
    tokio::spawn(async move {
        let mut known = known;
        loop {
            let change = tokio::select! {
                () = shutdown.cancelled() => return,
                change = watch.next() => change,
            };
            let Some(change) = change else { return };
            let Some(balanced) = weak.upgrade() else {
                tracing::debug!("no client uses the balancer any more; no longer following");
                return;
            };
            match change {
                Change::Reset(all) => {
                    let wanted: HashMap<String, Instance> = all
                        .into_iter()
                        .filter(|instance| eligible(instance))
                        .map(|instance| (instance.id().to_owned(), instance))
                        .collect();
                    for id in known.keys().filter(|id| !wanted.contains_key(*id)) {
                        balanced.remove(id);
                    }
                    known.retain(|id, _| wanted.contains_key(id));
                    for instance in wanted.values() {
                        add(&balanced, &mut known, &make, instance);
                    }
                }
                Change::Up(instance) if eligible(&instance) => {
                    add(&balanced, &mut known, &make, &instance);
                }
                Change::Up(instance) | Change::Down(instance) => {
                    if known.remove(instance.id()).is_some() {
                        tracing::debug!(?instance, "instance dropped from the balancer");
                        balanced.remove(instance.id());
                    }
                }
            }
        }
    });
}

/// Adds `instance` to `balanced` (and to `known`), or replaces it if its
/// address changed; drops it if its new address is unusable.
fn add<S, Req, F>(
    balanced: &Balanced<S, Req>,
    known: &mut HashMap<String, String>,
    make: &F,
    instance: &Instance,
) where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
    F: Fn(&Instance) -> Option<S>,
{
    let id = instance.id();
    // Unless the balancer dropped it meanwhile (its readiness failed): then
    // it is made again.
    if known.get(id).map(String::as_str) == Some(instance.address()) && balanced.contains(id) {
        return;
    }
    if let Some(service) = make(instance) {
        tracing::debug!(?instance, "instance added to the balancer");
        balanced.insert(id.to_owned(), service);
        known.insert(id.to_owned(), instance.address().to_owned());
    } else if known.remove(id).is_some() {
        balanced.remove(id);
    }
}
