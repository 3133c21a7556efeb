//! [`LocalDiscovery`]: the in-process registry (backends `local` and
//! `static`).

use std::fmt;

use futures_util::future::BoxFuture;
use semver::VersionReq;

use super::{
    Discovery, Instance, Watch,
    catalog::{Catalog, Source},
    fixed,
};
use crate::{
    Result,
    config::{DiscoveryConfig, InstanceConfig},
};

/// A registry that lives in this process: what is registered here plus the
/// instances listed in configuration. The default for a single node.
///
/// ```
/// use room619::discovery::{Discovery as _, LocalDiscovery};
///
/// let discovery = LocalDiscovery::new(&[]);
/// assert!(discovery.resolve("users", &"^1".parse().unwrap()).is_empty());
/// ```
#[derive(Clone)]
pub struct LocalDiscovery {
    catalog: Catalog,
    /// `false` for the `static` backend: registrations are ignored.
    accepts_registrations: bool,
}

impl LocalDiscovery {
    /// An in-process registry knowing the `listed` instances.
    #[must_use]
    pub fn new(listed: &[InstanceConfig]) -> Self {
        let discovery = Self {
            catalog: Catalog::default(),
            accepts_registrations: true,
        };
        discovery
            .catalog
            .replace(Source::Listed, fixed::instances(listed));
        discovery
    }

    /// The `static` backend: only the `listed` instances; registrations are
    /// accepted and ignored.
    #[must_use]
    pub fn listed_only(listed: &[InstanceConfig]) -> Self {
        Self {
            accepts_registrations: false,
            ..Self::new(listed)
        }
    }
}

impl Discovery for LocalDiscovery {
    fn backend(&self) -> &'static str {
        if self.accepts_registrations {
            "local"
        } else {
            "static"
        }
    }

    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<()>> {
        if self.accepts_registrations {
            self.catalog.upsert(Source::Registered, instance);
        } else {
            tracing::debug!(?instance, "static discovery: registration ignored");
        }
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<()>> {
        if self.accepts_registrations {
            self.catalog.remove(instance.id());
        }
        Box::pin(async { Ok(()) })
    }

    fn resolve(&self, name: &str, requirement: &VersionReq) -> Vec<Instance> {
        self.catalog.resolve(name, requirement)
    }

    fn watch(&self, name: &str) -> Watch {
        self.catalog.watch(name)
    }

    fn instances(&self) -> Vec<Instance> {
        self.catalog.all()
    }

    fn reload(&self, config: &DiscoveryConfig) {
        self.catalog
            .replace(Source::Listed, fixed::instances(&config.instances));
    }
}

impl fmt::Debug for LocalDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDiscovery")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
