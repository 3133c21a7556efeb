//! [`DnsDiscovery`]: instances from DNS, for Kubernetes headless services.
//!
//! Every `interval`, the configured names are resolved, all at once: A and
//! AAAA records give one instance per address at the configured port; SRV
//! records give their targets (resolved all at once, a target without an
//! address left out) at their ports. Changes show on the watch. A name that
//! does not exist or has no records (NXDOMAIN, an empty answer: a headless
//! service scaled to zero) has no instances, and the backend reports it
//! degraded; a lookup that fails (timeout, server failure) keeps that name's
//! last known instances and reports the backend degraded until a lookup
//! succeeds again.
//!
//! A and AAAA are asked apart: a name has no addresses only when both
//! answers say so, and either lookup failing fails the name (an empty AAAA
//! answer on an IPv4-only cluster does not hide a failed A lookup). So does
//! an SRV target whose lookup fails: the name keeps its last known
//! instances rather than losing that target's.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::future::{self, BoxFuture};
use hickory_resolver::{
    Name, Resolver, TokioResolver,
    config::{NameServerConfigGroup, ResolverConfig},
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
#[derive(Debug, PartialEq, Eq)]
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

/// A name's addresses from its A and AAAA lookups: none only when both say
/// the name has no such records; a failed lookup fails the name even when
/// the other found addresses (they may be only some of the name's).
fn both(
    ipv4: std::result::Result<Vec<IpAddr>, Lookup>,
    ipv6: std::result::Result<Vec<IpAddr>, Lookup>,
) -> std::result::Result<Vec<IpAddr>, Lookup> {
    match (ipv4, ipv6) {
        (Err(Lookup::Failed(problem)), _) => Err(Lookup::Failed(format!("A lookup: {problem}"))),
        (_, Err(Lookup::Failed(problem))) => Err(Lookup::Failed(format!("AAAA lookup: {problem}"))),
        (Err(Lookup::NoRecords(problem)), Err(Lookup::NoRecords(_))) => {
            Err(Lookup::NoRecords(problem))
        }
        (Ok(mut found), Ok(more)) => {
            found.extend(more);
            Ok(found)
        }
        (Ok(found), Err(Lookup::NoRecords(_))) | (Err(Lookup::NoRecords(_)), Ok(found)) => {
            Ok(found)
        }
    }
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
        let mut builder = match config.nameserver {
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
        // Every round asks the server: answers are not cached between rounds.
        // The system's other options (ndots, timeout, attempts) stay.
        builder.options_mut().cache_size = 0;
        let discovery = Self {
            inner: Arc::new(Inner {
                resolver: builder.build(),
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

    /// One round: every name looked up (all at once: an unreachable server
    /// costs one timeout, not one per name), the catalog updated.
    async fn refresh(&self) {
        let lookups = future::join_all(
            self.inner
                .services
                .iter()
                .map(|service| self.lookup(service)),
        )
        .await;
        let mut failures = Vec::new();
        for (index, (service, lookup)) in self.inner.services.iter().zip(lookups).enumerate() {
            match lookup {
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
            let targets = future::join_all(records.iter().map(|record| async move {
                (record, self.addresses(record.target().clone()).await)
            }))
            .await;
            for (record, found) in targets {
                match found {
                    Ok(ips) => {
                        addresses
                            .extend(ips.into_iter().map(|ip| SocketAddr::new(ip, record.port())));
                    }
                    // A target without an address (its pod is going) is
                    // left out; the others still serve.
                    Err(Lookup::NoRecords(_)) => {
                        tracing::debug!(target = %record.target(), "SRV target has no address; skipped");
                    }
                    // A target whose lookup failed may still serve: the
                    // name keeps its last known instances.
                    Err(Lookup::Failed(problem)) => {
                        return Err(Lookup::Failed(format!(
                            "SRV target {}: {problem}",
                            record.target()
                        )));
                    }
                }
            }
        } else if let Ok(ip) = service.host.parse::<IpAddr>() {
            // An address for a name: nothing to ask.
            addresses.push(SocketAddr::new(ip, service.port));
        } else {
            let host = Name::from_utf8(&service.host)
                .map_err(|err| Lookup::Failed(format!("not a DNS name: {err}")))?;
            let ips = self.addresses(host).await?;
            addresses.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, service.port)));
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

    /// The addresses of `name`: its A and AAAA records, asked apart and at
    /// once. Asked together, hickory reports the error of whichever lookup
    /// ended first when both fail, so an empty AAAA answer could hide a
    /// failed A lookup; [`both`] tells them apart.
    async fn addresses(&self, name: Name) -> std::result::Result<Vec<IpAddr>, Lookup> {
        let resolver = &self.inner.resolver;
        let (ipv4, ipv6) = future::join(
            resolver.ipv4_lookup(name.clone()),
            resolver.ipv6_lookup(name),
        )
        .await;
        both(
            ipv4.map(|found| found.iter().map(|a| IpAddr::V4(a.0)).collect::<Vec<_>>())
                .map_err(Lookup::from),
            ipv6.map(|found| {
                found
                    .iter()
                    .map(|aaaa| IpAddr::V6(aaaa.0))
                    .collect::<Vec<_>>()
            })
            .map_err(Lookup::from),
        )
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn no_records() -> std::result::Result<Vec<IpAddr>, Lookup> {
        Err(Lookup::NoRecords("no records".to_owned()))
    }

    fn failed() -> std::result::Result<Vec<IpAddr>, Lookup> {
        Err(Lookup::Failed(
            "the DNS server answered Server Failure".to_owned(),
        ))
    }

    #[test]
    fn a_failed_a_lookup_is_not_hidden_by_an_empty_aaaa_answer() {
        assert_eq!(
            both(failed(), no_records()),
            Err(Lookup::Failed(
                "A lookup: the DNS server answered Server Failure".to_owned()
            ))
        );
        assert_eq!(
            both(no_records(), failed()),
            Err(Lookup::Failed(
                "AAAA lookup: the DNS server answered Server Failure".to_owned()
            ))
        );
    }

    #[test]
    fn a_failed_lookup_fails_the_name_even_when_the_other_found_addresses() {
        assert!(matches!(
            both(failed(), Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])),
            Err(Lookup::Failed(_))
        ));
        assert!(matches!(
            both(Ok(vec![v4(5)]), failed()),
            Err(Lookup::Failed(_))
        ));
    }

    #[test]
    fn a_name_has_no_addresses_only_when_both_lookups_say_so() {
        assert_eq!(
            both(no_records(), no_records()),
            Err(Lookup::NoRecords("no records".to_owned()))
        );
        assert_eq!(both(Ok(vec![v4(5)]), no_records()), Ok(vec![v4(5)]));
        assert_eq!(
            both(no_records(), Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])),
            Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
        );
        assert_eq!(
            both(
                Ok(vec![v4(5), v4(6)]),
                Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
            ),
            Ok(vec![v4(5), v4(6), IpAddr::V6(Ipv6Addr::LOCALHOST)])
        );
    }
}
