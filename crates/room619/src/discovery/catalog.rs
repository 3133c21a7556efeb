//! [`Catalog`]: the instances a backend knows, kept in memory, so resolving
//! is a map lookup and watching is a broadcast subscription.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::{Stream, stream};
use semver::{Comparator, Op, Version, VersionReq};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Change, Instance};

/// How many changes a slow watcher may fall behind before it gets a
/// [`Change::Reset`] instead.
const WATCH_BUFFER: usize = 1024;

/// The stream of changes to one service's instances that
/// [`Discovery::watch`](super::Discovery::watch) returns; it starts with a
/// [`Change::Reset`] holding the current set.
pub type Watch = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// The versions of the serving instances of `name` among `instances` that
/// `requirement` leaves out only for their pre-release tag, newest first,
/// each once. As in Cargo, a pre-release (`2.0.0-rc.1`) matches only a
/// requirement with a comparator naming a pre-release of the same
/// `major.minor.patch` (`>=2.0.0-rc.1`): never `^2`, `>=1` or `*`. This
/// names them when resolving found nothing, which would otherwise look
/// like an unknown service.
pub(crate) fn prereleases_left_out(
    instances: &[Instance],
    name: &str,
    requirement: &VersionReq,
) -> Vec<Version> {
    let mut left_out: Vec<Version> = instances
        .iter()
        .filter(|i| i.name() == name && i.is_serving())
        .map(Instance::version)
        .filter(|version| matches_but_for_pre_release(requirement, version))
        .cloned()
        .collect();
    left_out.sort_unstable();
    left_out.dedup();
    left_out.reverse();
    left_out
}

/// Whether `requirement` refuses `version` only because it is a
/// pre-release. Semver lets a pre-release match when every comparator
/// accepts it and one of them names a pre-release of its `major.minor.patch`:
/// `=version` added to the comparators is such a one, and accepts it.
fn matches_but_for_pre_release(requirement: &VersionReq, version: &Version) -> bool {
    if version.pre.is_empty() || requirement.matches(version) {
        return false;
    }
    let mut widened = requirement.clone();
    widened.comparators.push(Comparator {
        op: Op::Exact,
        major: version.major,
        minor: Some(version.minor),
        patch: Some(version.patch),
        pre: version.pre.clone(),
    });
    widened.matches(version)
}

/// Where a catalog entry came from; a refresh of one source replaces only
/// its own entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Registered through [`Discovery::register`](super::Discovery::register)
    /// or learnt from the shared registry.
    Registered,
    /// Listed in `discovery.instances`.
    Listed,
    /// Resolved from DNS.
    #[cfg(feature = "dns")]
    Dns,
}

/// The in-memory set of known instances; cheap to clone, clones share it.
#[derive(Clone)]
pub(crate) struct Catalog {
    inner: Arc<Inner>,
}

/// The instances by id, with where each came from.
type Entries = HashMap<String, (Source, Instance)>;

struct Inner {
    entries: RwLock<Entries>,
    changes: broadcast::Sender<Change>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(HashMap::new()),
                changes: broadcast::Sender::new(WATCH_BUFFER),
            }),
        }
    }
}

impl Catalog {
    /// Adds or updates an instance; watchers see `Up` when anything changed.
    pub(crate) fn upsert(&self, source: Source, instance: Instance) {
        self.upsert_in(&mut self.write(), source, instance);
    }

    /// Removes the instance with `id`; watchers see `Down` when it was known.
    pub(crate) fn remove(&self, id: &str) -> Option<Instance> {
        self.remove_in(&mut self.write(), id)
    }

    /// Makes `instances` the whole set of entries from `source`: new ones are
    /// added, changed ones updated, missing ones removed, all at once.
    pub(crate) fn replace(&self, source: Source, instances: Vec<Instance>) {
        let mut entries = self.write();
        let gone: Vec<String> = entries
            .iter()
            .filter(|(id, (from, _))| {
                *from == source && !instances.iter().any(|new| new.id() == id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_in(&mut entries, &id);
        }
        for instance in instances {
            self.upsert_in(&mut entries, source, instance);
        }
    }

    /// [`upsert`](Self::upsert) with the entries locked. Changes are sent
    /// under the lock, so watchers see them in the order they were made: a
    /// `Down` sent after the lock was let go could follow the `Up` of the
    /// same instance added again meanwhile, and leave it out of every
    /// balancer while the catalog holds it.
    fn upsert_in(&self, entries: &mut Entries, source: Source, instance: Instance) {
        let changed = entries
            .get(instance.id())
            .is_none_or(|(_, old)| *old != instance);
        if changed {
            entries.insert(instance.id().to_owned(), (source, instance.clone()));
            self.send(Change::Up(instance));
        }
    }

    /// [`remove`](Self::remove) with the entries locked.
    fn remove_in(&self, entries: &mut Entries, id: &str) -> Option<Instance> {
        let removed = entries.remove(id).map(|(_, instance)| instance);
        if let Some(instance) = &removed {
            self.send(Change::Down(instance.clone()));
        }
        removed
    }

    /// Serving instances of `name` whose version matches `requirement`,
    /// newest version first.
    pub(crate) fn resolve(&self, name: &str, requirement: &VersionReq) -> Vec<Instance> {
        let mut found: Vec<Instance> = self
            .read()
            .values()
            .map(|(_, instance)| instance)
            .filter(|i| i.name() == name && i.is_serving() && requirement.matches(i.version()))
            .cloned()
            .collect();
        found.sort_by(|a, b| b.version().cmp(a.version()).then(a.id().cmp(b.id())));
        found
    }

    /// Every known instance of every service, whatever its version and
    /// health: by name, newest version first, then by id.
    pub(crate) fn all(&self) -> Vec<Instance> {
        let mut all: Vec<Instance> = self
            .read()
            .values()
            .map(|(_, instance)| instance.clone())
            .collect();
        all.sort_by(|a, b| {
            (a.name().cmp(b.name()))
                .then(b.version().cmp(a.version()))
                .then(a.id().cmp(b.id()))
        });
        all
    }

    /// Every instance of `name`, whatever its version and health.
    pub(crate) fn named(&self, name: &str) -> Vec<Instance> {
        self.read()
            .values()
            .map(|(_, instance)| instance)
            .filter(|i| i.name() == name)
            .cloned()
            .collect()
    }

    /// Changes to the instances of `name`, starting with the current set.
    pub(crate) fn watch(&self, name: &str) -> Watch {
        // Subscribe before the snapshot, so nothing falls in between.
        let receiver = self.inner.changes.subscribe();
        let first = Change::Reset(self.named(name));
        let state = (Some(first), receiver, self.clone(), name.to_owned());
        Box::pin(stream::unfold(
            state,
            |(mut first, mut receiver, catalog, name)| async move {
                if let Some(first) = first.take() {
                    return Some((first, (None, receiver, catalog, name)));
                }
                loop {
                    let change = match receiver.recv().await {
                        Ok(change) => change,
                        Err(RecvError::Lagged(_)) => Change::Reset(catalog.named(&name)),
                        Err(RecvError::Closed) => return None,
                    };
                    let relevant = match &change {
                        Change::Up(i) | Change::Down(i) => i.name() == name,
                        Change::Reset(_) => true,
                    };
                    if relevant {
                        return Some((change, (None, receiver, catalog, name)));
                    }
                }
            },
        ))
    }

    fn send(&self, change: Change) {
        // No receiver is fine: nobody watches yet.
        if self.inner.changes.send(change).is_err() {
            tracing::trace!("a discovery change had no watcher");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
