//! [`NatsDiscovery`]: the scale-out registry in a NATS JetStream key-value
//! bucket. NATS clusters by its own means; room619 runs no registry server.
//!
//! Each registered instance is the key `<service>.<instance-id>` holding its
//! JSON [`Instance`] record, with this node's TTL in the metadata key
//! `room619.ttl_ms` (taken out again when read). A heartbeat re-puts the
//! keys of this process every `ttl / 3`; every node watches the whole bucket
//! and forgets an instance whose key was not refreshed within the TTL its
//! record states, so one whose process died without deregistering
//! disappears within its TTL, and nodes configured with different TTLs keep
//! each other's instances. The bucket's `max_age` is the TTL of the node
//! that created it, so the stored record expires as well; a node with a
//! longer TTL beats within that `max_age` (and warns). A record first seen
//! in a replay (a node starting, a watch made again) counts from its put,
//! so one the bucket keeps past its own TTL is skipped, not brought back.
//!
//! Records are read leniently (see [`Instance`]), so nodes of different
//! room619 versions share the bucket through a rolling upgrade; a malformed
//! record is logged and skipped, and the watcher goes on. An instance whose
//! key NATS cannot store (a service name such as `users v2`) is refused at
//! [`register`](super::Discovery::register) with `InvalidArgument`. While the
//! server cannot be reached, JetStream does not take this process's
//! heartbeat (the bucket's stream unavailable during a server restart, or
//! full), or the bucket cannot be watched (the watch is made again with a
//! backoff of up to 5 s), the last known instances are kept (nothing
//! expires: no other node's heartbeat could arrive either),
//! [`status`](super::Discovery::status) reports `Degraded`, and everything
//! is refreshed when heartbeats go through again; a server that came back
//! without its store gets the bucket created again by the next heartbeat.
//! An instance registered while the server is away is put by the heartbeat
//! once it is back, and one deregistered then is deleted once it is back.
//! A bucket this node creates is kept on `discovery.nats.replicas` servers
//! of the cluster (1 by default; 3 to outlive a server).

mod bucket;
mod heartbeat;
mod key;
mod watcher;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Duration,
};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv};
use futures_util::future::BoxFuture;
use semver::VersionReq;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Discovery, DiscoveryStatus, Instance, NatsDiscoveryConfig, Watch,
    catalog::{Catalog, Source},
    fixed,
    status::StatusCell,
};
use crate::{
    Error, Result,
    config::{DiscoveryConfig, InstanceConfig},
};

/// The NATS JetStream key-value registry; cheap to clone.
///
/// ```no_run
/// use room619::discovery::{Discovery as _, Instance, NatsDiscovery, NatsDiscoveryConfig};
///
/// # async fn demo() -> room619::Result<()> {
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let registry = NatsDiscovery::connect(&NatsDiscoveryConfig::default(), &[], "node-a", shutdown).await?;
/// registry.register(Instance::new("users", "1.4.0".parse().unwrap(), "10.0.0.5:8080")).await?;
/// let users = registry.resolve("users", &"^1".parse().unwrap());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    ttl: Duration,
    client: async_nats::Client,
    js: jetstream::Context,
    bucket: String,
    /// The servers that keep the bucket when this node creates it.
    replicas: usize,
    /// The bucket; replaced when it had to be created again.
    kv: ArcSwap<kv::Store>,
    catalog: Catalog,
    /// The instances this process registered, by id.
    registered: Mutex<HashMap<String, Instance>>,
    /// The instances this process deregistered whose key could not be
    /// deleted (NATS away), by id: the heartbeat deletes them once it can.
    undeleted: Mutex<HashMap<String, Instance>>,
    /// When each known instance's key was last seen put, by id.
    seen: Mutex<HashMap<String, Seen>>,
    status: StatusCell,
    /// Asks the watcher to start over (after a reconnect).
    rewatch: Notify,
    /// Why the bucket is not watched now, if it is not: no other node's
    /// heartbeat can be heard then, so nothing expires.
    unwatched: Mutex<Option<String>>,
    /// What the last heartbeat found wrong, if anything.
    beat_problem: Mutex<Option<String>>,
    /// The highest bucket revision the watch delivered (see
    /// `heartbeat::hearing`).
    heard: AtomicU64,
}

/// The metadata key, in the records this registry puts, that says in
/// milliseconds the TTL of the node putting them (it refreshes them every
/// third of that, or more often): every node expires an instance by the TTL
/// its record states, not its own, so nodes with different
/// `discovery.nats.ttl` settings do not drop each other's instances between
/// heartbeats. It is taken out of the instance as it is read.
pub(super) const TTL_METADATA: &str = "room619.ttl_ms";

/// When an instance's key was last put, as far as this process knows.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    /// The bucket revision of that put (0: registered here, not yet seen
    /// in the bucket). A watch started again replays the last record of
    /// every key: one with the same revision is no new heartbeat.
    revision: u64,
    /// Not refreshed for this long, the instance expires: the TTL its
    /// record states, else this node's.
    ttl: Duration,
}

impl Seen {
    fn now(revision: u64, ttl: Duration) -> Self {
        Self::aged(revision, ttl, Duration::ZERO)
    }

    /// A put made `age` ago: it expires a TTL after the put, not after it
    /// was first seen here.
    fn aged(revision: u64, ttl: Duration, age: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_sub(age).unwrap_or(now),
            revision,
            ttl,
        }
    }
}

impl NatsDiscovery {
    /// Connects to `config.url`, opens (or creates) the bucket and starts the
    /// watcher and the heartbeat, which run until `shutdown` is cancelled.
    ///
    /// # Errors
    ///
    /// `Unavailable` naming the URL and the `discovery.nats.url` key when the
    /// server cannot be reached or has no JetStream within
    /// `config.connect_timeout`.
    pub async fn connect(
        config: &NatsDiscoveryConfig,
        listed: &[InstanceConfig],
        node: &str,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let unreachable = |problem: String| {
            Error::unavailable(format!(
                "cannot reach the discovery registry at {} (`discovery.nats.url`): {problem}",
                config.url
            ))
        };
        let opened = tokio::time::timeout(config.connect_timeout, open(config, node)).await;
        let (client, js, kv) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(problem)) => return Err(unreachable(problem)),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?} (`discovery.nats.connect_timeout`)",
                    config.connect_timeout
                )));
            }
        };
        let discovery = Self {
            inner: Arc::new(Inner {
                url: config.url.clone(),
                ttl: config.ttl,
                client,
                js,
                bucket: config.bucket.clone(),
                replicas: config.replicas,
                kv: ArcSwap::from_pointee(kv),
                catalog: Catalog::default(),
                registered: Mutex::new(HashMap::new()),
                undeleted: Mutex::new(HashMap::new()),
                seen: Mutex::new(HashMap::new()),
                status: StatusCell::default(),
                rewatch: Notify::new(),
                unwatched: Mutex::new(None),
                beat_problem: Mutex::new(None),
                heard: AtomicU64::new(0),
            }),
        };
        discovery
            .inner
            .catalog
            .replace(Source::Listed, fixed::instances(listed));
        let initial =
            match tokio::time::timeout(config.connect_timeout, watcher::load(&discovery)).await {
                Ok(Ok(watch)) => watch,
                Ok(Err(problem)) => return Err(unreachable(problem)),
                Err(_) => {
                    return Err(unreachable(format!(
                        "the bucket did not load within {:?} (`discovery.nats.connect_timeout`)",
                        config.connect_timeout
                    )));
                }
            };
        tokio::spawn(watcher::run(discovery.clone(), initial, shutdown.clone()));
        tokio::spawn(heartbeat::run(discovery.clone(), shutdown));
        Ok(discovery)
    }

    fn set_status(&self, status: DiscoveryStatus) {
        self.inner.status.set(status, |status| match status {
            DiscoveryStatus::Ok => {
                tracing::info!(url = %self.inner.url, "discovery registry reachable again");
            }
            DiscoveryStatus::Degraded(reason) => {
                tracing::warn!(url = %self.inner.url, %reason, "discovery degraded");
            }
        });
    }

    fn kv(&self) -> Arc<kv::Store> {
        self.inner.kv.load_full()
    }

    /// Opens the bucket again, creating it when it is gone (a server that
    /// came back without its store), and watches it anew.
    async fn reopen(&self) -> std::result::Result<(), String> {
        let kv = bucket::ensure(
            &self.inner.js,
            &self.inner.bucket,
            self.inner.ttl,
            self.inner.replicas,
        )
        .await?;
        self.inner.kv.store(Arc::new(kv));
        // The new watch counts the revisions it hears afresh.
        self.inner.rewatch.notify_one();
        Ok(())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the last heartbeat found wrong (`None`: nothing), for the
    /// status.
    fn report_beat(&self, problem: Option<String>) {
        *self
            .inner
            .beat_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = problem;
        self.refresh_status();
    }

    /// The bucket is not watched now, for `problem`: nothing expires, and
    /// the watch starts over.
    fn unwatch(&self, problem: String) {
        *self.unwatched() = Some(problem);
        self.refresh_status();
        self.inner.rewatch.notify_one();
    }

    /// `Ok` unless the last heartbeat failed or the bucket is not watched.
    fn refresh_status(&self) {
        let beat = self
            .inner
            .beat_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let problem = beat.or_else(|| self.unwatched().clone());
        self.set_status(match problem {
            None => DiscoveryStatus::Ok,
            Some(problem) => DiscoveryStatus::Degraded(format!(
                "{problem}; answering from the {} last known instances",
                self.seen().len()
            )),
        });
    }

    fn unwatched(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner
            .unwatched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.inner
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn undeleted(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.inner
            .undeleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes the key of `instance`. When JetStream does not confirm it,
    /// the heartbeat tries again until it does (unless the instance is
    /// registered again meanwhile).
    async fn delete(&self, instance: &Instance) -> Result<()> {
        match self.kv().delete(key::of(instance)).await {
            Ok(()) => Ok(()),
            Err(err) => {
                self.undeleted()
                    .insert(instance.id().to_owned(), instance.clone());
                Err(Error::unavailable(format!(
                    "cannot deregister {instance:?} at {}: {err}; \
                     the deletion is tried again with the heartbeat",
                    self.inner.url
                ))
                .with_source(err))
            }
        }
    }

    /// Puts the record of `instance`. `Unavailable` when JetStream did not
    /// take it; another kind when the record itself cannot be stored (its
    /// key refused: `InvalidArgument`), which no retry mends.
    async fn put(&self, instance: &Instance) -> Result<()> {
        let record = serde_json::to_vec(instance)
            .map_err(|err| Error::internal(format!("cannot encode {instance:?}: {err}")))?;
        self.kv()
            .put(key::of(instance), record.into())
            .await
            .map_err(|err| {
                let problem = format!("cannot register {instance:?} at {}: {err}", self.inner.url);
                let refused = if err.kind() == kv::PutErrorKind::InvalidKey {
                    Error::invalid_argument(problem)
                } else {
                    Error::unavailable(problem)
                };
                refused.with_source(err)
            })?;
        Ok(())
    }
}

/// Connects and opens the bucket, creating it when missing.
async fn open(
    config: &NatsDiscoveryConfig,
    node: &str,
) -> std::result::Result<(async_nats::Client, jetstream::Context, kv::Store), String> {
    let client = crate::bus::nats_options(&format!("{node} discovery"), config.connect_timeout)
        .connect(config.url.as_str())
        .await
        .map_err(|err| err.to_string())?;
    let js = jetstream::new(client.clone());
    let kv = bucket::ensure(&js, &config.bucket, config.ttl, config.replicas).await?;
    Ok((client, js, kv))
}

impl Discovery for NatsDiscovery {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // Checked before the instance is kept for the heartbeat: a key
            // NATS refuses is refused at every beat.
            key::check(&instance)?;
            let ttl = self.inner.ttl;
            let record = instance
                .clone()
                .with_metadata(TTL_METADATA, ttl.as_millis().to_string());
            // Kept for the heartbeat before the first put: a put that fails
            // (NATS away) is tried again with the next heartbeat, so the
            // instance appears once the server is back.
            self.undeleted().remove(instance.id());
            self.registered()
                .insert(instance.id().to_owned(), record.clone());
            self.seen()
                .insert(instance.id().to_owned(), Seen::now(0, ttl));
            self.inner.catalog.upsert(Source::Registered, instance);
            self.put(&record).await
        })
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.registered().remove(instance.id());
            self.seen().remove(instance.id());
            self.inner.catalog.remove(instance.id());
            if key::check(instance).is_err() {
                // Refused at registration: never stored.
                return Ok(());
            }
            self.delete(instance).await
        })
    }

    fn resolve(&self, name: &str, requirement: &VersionReq) -> Vec<Instance> {
        self.inner.catalog.resolve(name, requirement)
    }

    fn watch(&self, name: &str) -> Watch {
        self.inner.catalog.watch(name)
    }

    fn instances(&self) -> Vec<Instance> {
        self.inner.catalog.all()
    }

    fn status(&self) -> DiscoveryStatus {
        self.inner.status.get()
    }

    fn reload(&self, config: &DiscoveryConfig) {
        self.inner
            .catalog
            .replace(Source::Listed, fixed::instances(&config.instances));
    }
}

impl fmt::Debug for NatsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsDiscovery")
            .field("url", &self.inner.url)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}
