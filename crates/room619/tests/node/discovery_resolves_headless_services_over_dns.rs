//! The DNS backend against a real authoritative server (hickory-server on
//! 127.0.0.1): a headless-service name resolves to its A and AAAA records,
//! an SRV name to its targets and ports.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use hickory_proto::{
    op::{Header, LowerQuery, ResponseCode},
    rr::{
        LowerName, Name, RData, Record, RecordType,
        rdata::{A, AAAA, SOA, SRV},
    },
};
use hickory_server::{
    ServerFuture,
    authority::{Catalog, MessageResponseBuilder, ZoneType},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    store::in_memory::InMemoryAuthority,
};
use room619::discovery::{Discovery as _, DnsDiscovery, DnsDiscoveryConfig, DnsServiceConfig};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// An authoritative server for `cluster.local.` on a free UDP port.
async fn dns_server() -> SocketAddr {
    dns_server_with_zone().await.0
}

/// [`dns_server`], and its zone, to change records while it serves.
async fn dns_server_with_zone() -> (SocketAddr, Arc<InMemoryAuthority>) {
    let (address, zone, _) = failing_dns_server().await;
    (address, zone)
}

/// Answers from its catalog; while `failing`, `SERVFAIL` to every query (an
/// upstream the cluster's DNS lost); while `ipv4_failing`, an empty answer
/// to AAAA queries and, a moment later, `SERVFAIL` to A queries (an
/// IPv4-only cluster whose upstream fails: the empty answer comes first).
struct Flaky {
    catalog: Catalog,
    failing: Arc<AtomicBool>,
    ipv4_failing: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl RequestHandler for Flaky {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let query_type = request.queries().first().map(LowerQuery::query_type);
        if self.ipv4_failing.load(Ordering::SeqCst) {
            match query_type {
                Some(RecordType::AAAA) => {
                    let response = MessageResponseBuilder::from_message_request(request)
                        .build_no_records(Header::response_from_request(request.header()));
                    return response_handle.send_response(response).await.unwrap();
                }
                Some(RecordType::A) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let response = MessageResponseBuilder::from_message_request(request)
                        .error_msg(request.header(), ResponseCode::ServFail);
                    return response_handle.send_response(response).await.unwrap();
                }
                _ => {}
            }
        }
        if !self.failing.load(Ordering::SeqCst) {
            return self.catalog.handle_request(request, response_handle).await;
        }
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(request.header(), ResponseCode::ServFail);
        response_handle.send_response(response).await.unwrap()
    }
}

/// [`dns_server_with_zone`], and the switch that makes it fail.
async fn failing_dns_server() -> (SocketAddr, Arc<InMemoryAuthority>, Arc<AtomicBool>) {
    let (address, zone, failing, _) = ipv4_failing_dns_server().await;
    (address, zone, failing)
}

/// [`failing_dns_server`], and the switch that makes its A lookups fail.
async fn ipv4_failing_dns_server() -> (
    SocketAddr,
    Arc<InMemoryAuthority>,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
) {
    let origin = name("cluster.local.");
    let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    let soa = SOA::new(
        name("ns.cluster.local."),
        name("admin.cluster.local."),
        1,
        60,
        60,
        60,
        60,
    );
    let mut records = vec![Record::from_rdata(origin.clone(), 60, RData::SOA(soa))];
    let users = name("users.default.svc.cluster.local.");
    for last in [5, 6, 7] {
        let ip = Ipv4Addr::new(10, 0, 0, last);
        records.push(Record::from_rdata(users.clone(), 5, RData::A(A::from(ip))));
    }
    records.push(Record::from_rdata(
        users,
        5,
        RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)),
    ));
    let srv = name("_grpc._tcp.orders.default.svc.cluster.local.");
    for (pod, port) in [("orders-0", 9000), ("orders-1", 9001)] {
        let target = name(&format!("{pod}.orders.default.svc.cluster.local."));
        records.push(Record::from_rdata(
            srv.clone(),
            5,
            RData::SRV(SRV::new(0, 50, port, target.clone())),
        ));
        let ip = Ipv4Addr::new(10, 0, 1, if pod == "orders-0" { 1 } else { 2 });
        records.push(Record::from_rdata(target, 5, RData::A(A::from(ip))));
    }
    for record in records {
        zone.upsert_mut(record, 0);
    }
    let zone = Arc::new(zone);
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::clone(&zone) as _]);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let ipv4_failing = Arc::new(AtomicBool::new(false));
    let mut server = ServerFuture::new(Flaky {
        catalog,
        failing: Arc::clone(&failing),
        ipv4_failing: Arc::clone(&ipv4_failing),
    });
    server.register_socket(socket);
    tokio::spawn(async move { server.block_until_done().await });
    (address, zone, failing, ipv4_failing)
}

fn addresses(dns: &DnsDiscovery, service: &str, requirement: &str) -> BTreeSet<String> {
    dns.resolve(service, &requirement.parse().unwrap())
        .iter()
        .map(|instance| instance.address().to_owned())
        .collect()
}

/// `users` by its A/AAAA records at 8080, `orders` by SRV.
fn users_and_orders() -> Vec<DnsServiceConfig> {
    vec![
        DnsServiceConfig {
            name: "users".into(),
            version: "1.4.0".into(),
            host: "users.default.svc.cluster.local.".into(),
            port: 8080,
            srv: false,
        },
        DnsServiceConfig {
            name: "orders".into(),
            version: "2.0.0".into(),
            host: "_grpc._tcp.orders.default.svc.cluster.local.".into(),
            port: 0,
            srv: true,
        },
    ]
}

#[tokio::test]
async fn a_headless_service_name_resolves_to_its_a_records() {
    let server = dns_server().await;
    let config = DnsDiscoveryConfig {
        nameserver: Some(server),
        services: users_and_orders(),
        ..DnsDiscoveryConfig::default()
    };
    let dns = DnsDiscovery::start(&config, &[], CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        addresses(&dns, "users", "^1"),
        BTreeSet::from([
            "10.0.0.5:8080".to_owned(),
            "10.0.0.6:8080".to_owned(),
            "10.0.0.7:8080".to_owned(),
            "[::1]:8080".to_owned(),
        ])
    );
    assert!(addresses(&dns, "users", "^2").is_empty());
    assert_eq!(
        addresses(&dns, "orders", "^2"),
        BTreeSet::from(["10.0.1.1:9000".to_owned(), "10.0.1.2:9001".to_owned()])
    );
    assert_eq!(dns.status(), room619::discovery::DiscoveryStatus::Ok);
}

#[tokio::test]
async fn a_node_with_dns_discovery_reports_a_failing_name_as_degraded() {
    let server = dns_server().await;
    let mut config = crate::support::config(&format!(
        "[discovery]\nbackend = \"dns\"\n[discovery.dns]\nnameserver = \"{server}\"\n\
         [[discovery.dns.services]]\nname = \"ghost\"\nversion = \"1.0.0\"\n\
         host = \"ghost.default.svc.cluster.local.\"\n"
    ));
    config.node.name = "dns-node".into();
    let node = crate::support::start(config).await;
    let ready: serde_json::Value = crate::support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["discovery"]["backend"], "dns");
    assert_eq!(ready["discovery"]["status"], "degraded", "{ready}");
    node.shutdown().await.unwrap();
}

/// DNS discovery of `users` and `orders` at `server`, looking them up every
/// 100 ms, once it found all of them.
async fn polling(server: SocketAddr) -> DnsDiscovery {
    let config = DnsDiscoveryConfig {
        nameserver: Some(server),
        interval: std::time::Duration::from_millis(100),
        services: users_and_orders(),
    };
    let dns = DnsDiscovery::start(&config, &[], CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(addresses(&dns, "users", "^1").len(), 4);
    assert_eq!(addresses(&dns, "orders", "^2").len(), 2);
    dns
}

/// A headless service scaled to zero answers NXDOMAIN: its old addresses
/// go (another pod may get them), and an SRV target that lost its address
/// is left out while the others stay.
#[tokio::test]
async fn a_name_without_records_has_no_instances_and_a_dead_srv_target_is_skipped() {
    let (server, zone) = dns_server_with_zone().await;
    let dns = polling(server).await;

    let users = LowerName::from(name("users.default.svc.cluster.local."));
    let orders_1 = LowerName::from(name("orders-1.orders.default.svc.cluster.local."));
    zone.records_mut()
        .await
        .retain(|key, _| key.name != users && key.name != orders_1);
    // The resolver caches nothing: a round (every 100 ms) sees the change.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !addresses(&dns, "users", "^1").is_empty()
            || addresses(&dns, "orders", "^2").len() != 1
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "users {:?}, orders {:?}",
            addresses(&dns, "users", "^1"),
            addresses(&dns, "orders", "^2")
        )
    });
    assert_eq!(
        addresses(&dns, "orders", "^2"),
        BTreeSet::from(["10.0.1.1:9000".to_owned()])
    );
    match dns.status() {
        room619::discovery::DiscoveryStatus::Degraded(reason) => {
            assert!(
                reason.contains("users.default.svc.cluster.local."),
                "{reason}"
            );
            assert!(reason.contains("no records"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A server that fails (`SERVFAIL`) is not a name without records: the last
/// known instances stay, and the status says the lookups fail.
#[tokio::test]
async fn a_failing_dns_server_keeps_the_last_known_instances() {
    let (server, _zone, failing) = failing_dns_server().await;
    let dns = polling(server).await;
    let reason = kept_while_failing(&dns, &failing, 500).await;
    assert!(reason.contains("answered Server Failure"), "{reason}");
}

/// Turns `failing` on, waits until `dns` says so and `settle_ms` more (a
/// few rounds of failures), checks the last known instances are kept; why
/// the status is degraded.
async fn kept_while_failing(dns: &DnsDiscovery, failing: &AtomicBool, settle_ms: u64) -> String {
    failing.store(true, Ordering::SeqCst);
    // The resolver caches nothing: each round asks the server.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while dns.status() == room619::discovery::DiscoveryStatus::Ok {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the failing lookups never showed in the status");
    tokio::time::sleep(std::time::Duration::from_millis(settle_ms)).await;
    assert_eq!(addresses(dns, "users", "^1").len(), 4, "users were dropped");
    assert_eq!(
        addresses(dns, "orders", "^2").len(),
        2,
        "orders were dropped"
    );
    match dns.status() {
        room619::discovery::DiscoveryStatus::Degraded(reason) => reason,
        other => panic!("{other:?}"),
    }
}

/// On an IPv4-only cluster whose server fails A lookups, the empty AAAA
/// answer is not "no records": the names (and the SRV targets) keep their
/// last known instances, and the status says the A lookups fail.
#[tokio::test]
async fn a_failed_a_lookup_beside_an_empty_aaaa_answer_keeps_the_last_known_instances() {
    let (server, _zone, _failing, ipv4_failing) = ipv4_failing_dns_server().await;
    let dns = polling(server).await;
    let reason = kept_while_failing(&dns, &ipv4_failing, 800).await;
    assert!(reason.contains("answered Server Failure"), "{reason}");
    assert!(!reason.contains("no records"), "{reason}");
}
