//! [`LiveConfig`]: the configuration as it is now, changed by hot reloads.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

use super::{Config, ConfigError};

/// The node's configuration as its watched file last said it validly.
/// Cheap to clone; clones share it.
///
/// The node applies what a reload may change itself, before it publishes
/// the new configuration here: the log filter, `discovery.instances`, the
/// rate-limit rules and the resilience policies. Sections read only at
/// start (`node`, `limits`, `auth`, `bus`...) are published as the file
/// says them, with a warning that they apply at the next restart: for
/// those, [`current`](Self::current) is the file, not what runs. The
/// application's own `[app.*]` sections are the application's to follow,
/// with [`subscribe`](Self::subscribe). A [`ServiceContext`]'s
/// `config()` is a snapshot of `current()`.
///
/// [`ServiceContext`]: crate::ServiceContext
///
/// ```
/// use room619::config::{Config, LiveConfig};
///
/// let live = LiveConfig::new(Config::default());
/// let changes = live.subscribe();
/// assert!(!changes.has_changed().unwrap());
/// assert_eq!(live.current().log.level, Config::default().log.level);
/// assert_eq!(live.reloads(), 0);
/// ```
#[derive(Clone)]
pub struct LiveConfig {
    inner: Arc<Inner>,
}

struct Inner {
    current: watch::Sender<Arc<Config>>,
    reloads: AtomicU64,
    reloads_failed: AtomicU64,
}

impl LiveConfig {
    /// Starts with `config`.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self::from_shared(Arc::new(config))
    }

    pub(crate) fn from_shared(config: Arc<Config>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: watch::Sender::new(config),
                reloads: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration now.
    #[must_use]
    pub fn current(&self) -> Arc<Config> {
        Arc::clone(&self.inner.current.borrow())
    }

    /// A receiver that sees every new configuration.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.current.subscribe()
    }

    /// Makes `config` the current configuration (it must be valid and
    /// applied already) and counts a successful reload.
    pub(crate) fn publish(&self, config: Config) {
        self.inner.current.send_replace(Arc::new(config));
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed reload and logs why; the current configuration stays.
    pub(crate) fn reject(&self, err: &ConfigError) {
        self.inner.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            key = err.key(),
            problem = err.problem(),
            "configuration reload rejected; keeping the running configuration: {err}"
        );
    }

    /// How many reloads were applied.
    #[must_use]
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// How many reloads were rejected (the metric of failed reloads).
    #[must_use]
    pub fn reloads_failed(&self) -> u64 {
        self.inner.reloads_failed.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConfig")
            .field("reloads", &self.reloads())
            .field("reloads_failed", &self.reloads_failed())
            .finish_non_exhaustive()
    }
}
