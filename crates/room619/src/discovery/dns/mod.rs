//! [`DnsDiscovery`]: instances from DNS, for Kubernetes headless services.
//!
//! Every `interval`, each configured name is resolved: A and AAAA records
//! give one instance per address at the configured port; SRV records give
//! their targets (resolved in turn, a target without an address left out)
//! at their ports. Changes show on the watch. A name that does not exist or
//! has no records (NXDOMAIN, an empty answer: a headless service scaled to
//! zero) has no instances, and the backend reports it degraded; a lookup
//! that fails (timeout, server failure) keeps that name's last known
//! instances and reports the backend degraded until a lookup succeeds
//! again.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::future::BoxFuture;
use hickory_resolver::{
    Resolver, TokioResolver,
    config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::{ProtoErrorKind, op::ResponseCode},
};
use semver::VersionReq;
use tokio_util::sync::CancellationToken;

use super::{
    Discovery, DiscoveryStatus, DnsDiscoveryConfig, DnsServiceConfig, Instance, Watch,
    catalog::{Catalog, Source},
    fixed,
    status::StatusCell,
};
use crate::{
    Error, Result,
    config::{DiscoveryConfig, InstanceConfig},
};

/// The DNS registry; cheap to clone.
///
/// ```no_run
/// use room619::discovery::{Discovery as _, DnsDiscovery, DnsDiscoveryConfig, DnsServiceConfig};
///
/// # async fn demo() -> room619::Result<()> {
/// let config = DnsDiscoveryConfig {
///     services: vec![DnsServiceConfig {
///         name: "users".into(),
///         version: "1.4.0".into(),
///         host: "users.default.svc.cluster.local".into(),
///         port: 8080,
///         srv: false,
///     }],
///     ..DnsDiscoveryConfig::default()
/// };
/// let dns = DnsDiscovery::start(&config, &[], tokio_util::sync::CancellationToken::new()).await?;
/// let users = dns.resolve("users", &"^1".parse().unwrap());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DnsDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: TokioResolver,
    services: Vec<DnsServiceConfig>,
    catalog: Catalog,
    /// The last instances found per service entry.
    found: RwLock<HashMap<usize, Vec<Instance>>>,
    status: StatusCell,
}

/// Why a lookup found no addresses.
enum Lookup {
    /// The name does not exist, or has no address records: no instances.
    NoRecords(String),
    /// The lookup itself failed (timeout, refused, server failure): the
    /// last known instances stay.
    Failed(String),
}

impl From<hickory_resolver::ResolveError> for Lookup {
    fn from(err: hickory_resolver::ResolveError) -> Self {
        match answer_without_records(&err) {
            Some(ResponseCode::NXDomain | ResponseCode::NoError) => {
                Self::NoRecords(format!("no records: {err}"))
            }
            Some(code) => Self::Failed(format!("the DNS server answered {code}")),
            None => Self::Failed(err.to_string()),
        }
    }
}

/// The code of an answer without records. hickory reports a server's
/// failure (`SERVFAIL`, `REFUSED`, ...) as "no records found" too, with that
/// code: only `NXDOMAIN` and an empty `NOERROR` say the name has no such
/// records; the others are failed lookups, after which the last known
/// instances stay.
fn answer_without_records(err: &hickory_resolver::ResolveError) -> Option<ResponseCode> {
    match err.proto()?.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => Some(*response_code),
        _ => None,
    }
}

/// Whether `err` says the name has no such records.
fn has_no_records(err: &hickory_resolver::ResolveError) -> bool {
    matches!(
        answer_without_records(err),
        Some(ResponseCode::NXDomain | ResponseCode::NoError)
    )
}

impl DnsDiscovery {
    /// Resolves every configured name once, then again every
    /// `config.interval` until `shutdown`.
    ///
    /// # Errors
    ///
    /// `Config` when no nameserver is configured and the system's resolver
    /// configuration cannot be read.
    pub async fn start(
        config: &DnsDiscoveryConfig,
        listed: &[InstanceConfig],
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let mut options = ResolverOpts::default();
        // Every round asks the server: answers are not cached between rounds.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let builder = match config.nameserver {
            Some(server) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|err| {
                Error::config(format!(
                    "cannot read the system's DNS configuration (set `discovery.dns.nameserver`): {err}"
                ))
            })?,
        };
        let discovery = Self {
            inner: Arc::new(Inner {
                resolver: builder.with_options(options).build(),
                services: config.services.clone(),
                catalog: Catalog::default(),
                found: RwLock::new(HashMap::new()),
                status: StatusCell::default(),
            }),
        };
        discovery
            .inner
            .catalog
            .replace(Source::Listed, fixed::instances(listed));
        discovery.refresh().await;
        let interval = config.interval;
        let background = discovery.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => background.refresh().await,
                }
            }
        });
        Ok(discovery)
    }

    /// One round: every name looked up, the catalog updated.
    async fn refresh(&self) {
        let mut failures = Vec::new();
        for (index, service) in self.inner.services.iter().enumerate() {
            match self.lookup(service).await {
                Ok(instances) => {
                    self.found().insert(index, instances);
                }
                // The name is gone or has no address (a headless service
                // scaled to zero, every pod unready): it has no instance
                // now; its old addresses may already be other pods'.
                Err(Lookup::NoRecords(problem)) => {
                    tracing::warn!(host = %service.host, %problem, "DNS name has no records; no instances");
                    self.found().insert(index, Vec::new());
                    failures.push(format!("{}: {problem}", service.host));
                }
                Err(Lookup::Failed(problem)) => {
                    tracing::warn!(host = %service.host, %problem, "DNS lookup failed; keeping the last known instances");
                    failures.push(format!("{}: {problem}", service.host));
                }
            }
        }
        let all: Vec<Instance> = self.found().values().flatten().cloned().collect();
        self.inner.catalog.replace(Source::Dns, all);
        let status = if failures.is_empty() {
            DiscoveryStatus::Ok
        } else {
            DiscoveryStatus::Degraded(failures.join("; "))
        };
        self.inner.status.set(status, |_| {});
    }

    /// The instances `service`'s name resolves to now.
    async fn lookup(
        &self,
        service: &DnsServiceConfig,
    ) -> std::result::Result<Vec<Instance>, Lookup> {
        let version = semver::Version::parse(&service.version)
            .map_err(|err| Lookup::Failed(err.to_string()))?;
        let mut addresses: Vec<SocketAddr> = Vec::new();
        if service.srv {
            let records = self
                .inner
                .resolver
                .srv_lookup(service.host.as_str())
                .await
                .map_err(Lookup::from)?;
            for record in records.iter() {
                match self.inner.resolver.lookup_ip(record.target().clone()).await {
                    Ok(ips) => {
                        addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, record.port())));
                    }
                    // A target without an address (its pod is going) is
                    // left out; the others still serve.
                    Err(err) if has_no_records(&err) => {
                        tracing::debug!(target = %record.target(), "SRV target has no address; skipped");
                    }
                    Err(err) => {
                        return Err(Lookup::Failed(format!(
                            "SRV target {}: {err}",
                            record.target()
                        )));
                    }
                }
            }
        } else {
            let ips = self
                .inner
                .resolver
                .lookup_ip(service.host.as_str())
                .await
                .map_err(Lookup::from)?;
            addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, service.port)));
        }
        addresses.sort_unstable();
        addresses.dedup();
        Ok(addresses
            .into_iter()
            .map(|address| {
                let id = format!("dns-{}-{}-{address}", service.name, service.version);
                Instance::new(service.name.clone(), version.clone(), address.to_string())
                    .with_id(id)
                    .with_metadata("dns", service.host.clone())
            })
            .collect())
    }

    fn found(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<usize, Vec<Instance>>> {
        self.inner
            .found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Discovery for DnsDiscovery {
    fn backend(&self) -> &'static str {
        "dns"
    }

    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<()>> {
        self.inner.catalog.upsert(Source::Registered, instance);
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<()>> {
        self.inner.catalog.remove(instance.id());
        Box::pin(async { Ok(()) })
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

impl fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("services", &self.inner.services)
            .finish_non_exhaustive()
    }
}
