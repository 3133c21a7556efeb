//! NATS JetStream KV discovery: separate processes register, a killed one
//! expires within the TTL, a new one appears through the watch, clients
//! follow; malformed records are skipped; an instance NATS cannot key is
//! refused; NATS down at start is a clear error, NATS down at run time keeps
//! the last known instances.

use std::{
    collections::{BTreeSet, HashMap},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use room619::{
    ErrorKind,
    config::Config,
    discovery::{Change, Discovery, Instance, NatsDiscovery, NatsDiscoveryConfig, Watch},
    rpc::client::RpcChannel,
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio_util::sync::CancellationToken;

use crate::support::{self, nats::NatsServer};

/// Tells a re-executed copy of this test binary to run a node instead.
const CHILD_URL: &str = "DISCOVERY_TEST_NATS_URL";
const CHILD_NAME: &str = "DISCOVERY_TEST_NODE_NAME";
const THIS_TEST: &str = "discovery_tracks_instances_through_nats::three_processes_register_a_killed_one_expires_and_a_new_one_appears";
const TTL: Duration = Duration::from_secs(2);
/// Hang guard for anything that should happen within a few TTLs.
const GUARD: Duration = Duration::from_secs(30);

fn nats_config(url: &str, name: &str) -> Config {
    let mut config = support::config(&format!(
        "[discovery]\nbackend = \"nats\"\n[discovery.nats]\nurl = \"{url}\"\nttl = \"{}s\"\n",
        TTL.as_secs()
    ));
    config.node.name = name.to_owned();
    config
}

async fn registry(url: &str) -> NatsDiscovery {
    registry_with_ttl(url, TTL, CancellationToken::new()).await
}

async fn registry_with_ttl(url: &str, ttl: Duration, stop: CancellationToken) -> NatsDiscovery {
    let config = NatsDiscoveryConfig {
        url: url.to_owned(),
        ttl,
        ..NatsDiscoveryConfig::default()
    };
    NatsDiscovery::connect(&config, &[], "observer", stop)
        .await
        .unwrap()
}

/// The registry's key-value bucket, to write records behind its back.
async fn bucket(nats: &NatsServer) -> async_nats::jetstream::kv::Store {
    nats.jetstream()
        .await
        .get_key_value("room619_instances")
        .await
        .unwrap()
}

/// Child processes, killed when the test ends however it ends.
#[derive(Default)]
struct Children(HashMap<String, Child>);

impl Children {
    fn spawn(&mut self, url: &str, name: &str) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([THIS_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_URL, url)
            .env(CHILD_NAME, name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.0.insert(name.to_owned(), child);
    }

    /// SIGKILL: the process gets no chance to deregister.
    fn kill(&mut self, name: &str) {
        let mut child = self.0.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.values_mut() {
            // Best effort: the child may have exited already.
            if child.kill().is_ok() {
                child.wait().unwrap();
            }
        }
    }
}

/// The node names of the serving `echo ^1` instances.
fn nodes(discovery: &dyn Discovery) -> BTreeSet<String> {
    discovery
        .resolve("echo", &"^1".parse().unwrap())
        .iter()
        .map(|instance| instance.metadata()["node"].clone())
        .collect()
}

/// Waits (bounded) for a change of the watch matching `wanted`.
async fn next_change(watch: &mut Watch, wanted: impl Fn(&Change) -> bool) -> Change {
    tokio::time::timeout(GUARD, async {
        loop {
            let change = watch.next().await.unwrap();
            if wanted(&change) {
                return change;
            }
        }
    })
    .await
    .unwrap()
}

fn node_of(change: &Change) -> Option<&str> {
    match change {
        Change::Up(instance) | Change::Down(instance) => {
            instance.metadata().get("node").map(String::as_str)
        }
        _ => None,
    }
}

#[tokio::test]
async fn three_processes_register_a_killed_one_expires_and_a_new_one_appears() {
    if let (Ok(url), Ok(name)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NAME)) {
        // Re-executed as one of the registered processes: serve until killed
        // (and never for longer than a minute).
        let _node = support::start(nats_config(&url, &name)).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    let nats = NatsServer::start().await;
    let observer = registry(&nats.url()).await;
    let mut watch = observer.watch("echo");
    let mut children = Children::default();
    for name in ["proc-0", "proc-1", "proc-2"] {
        children.spawn(&nats.url(), name);
    }
    tokio::time::timeout(GUARD, async {
        while nodes(&observer).len() < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        nodes(&observer),
        BTreeSet::from(["proc-0".into(), "proc-1".into(), "proc-2".into()])
    );

    // Versioned resolution: a 2.x instance is never picked for `^1`.
    let v2 =
        Instance::new("echo", "2.0.0".parse().unwrap(), "127.0.0.1:1").with_metadata("node", "v2");
    observer.register(v2.clone()).await.unwrap();
    assert_eq!(nodes(&observer).len(), 3);
    let only_v2 = observer.resolve("echo", &"^2".parse().unwrap());
    assert_eq!(only_v2, std::slice::from_ref(&v2));

    // A node resolving through NATS reaches the processes over the network.
    let caller = support::start_named_with_config(nats_config(&nats.url(), "caller")).await;
    let mut client = caller
        .handle()
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let reply = client.echo(hello()).await.unwrap().into_inner();
    assert!(reply.node.starts_with("proc-"), "{reply:?}");

    // SIGKILL one: it never deregisters, yet disappears within the TTL.
    children.kill("proc-1");
    let killed = Instant::now();
    next_change(&mut watch, |change| {
        matches!(change, Change::Down(_)) && node_of(change) == Some("proc-1")
    })
    .await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= TTL + Duration::from_secs(1),
        "the killed instance disappeared after {gone_after:?}, TTL {TTL:?}"
    );
    assert_eq!(
        nodes(&observer),
        BTreeSet::from(["proc-0".into(), "proc-2".into()])
    );

    // The caller forgot it too (its balancer follows its own watch).
    let caller_discovery = Arc::clone(caller.handle().discovery());
    tokio::time::timeout(GUARD, async {
        while nodes(caller_discovery.as_ref()).contains("proc-1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new process appears through the watch, and the caller's balancer
    // picks it up.
    children.spawn(&nats.url(), "proc-3");
    next_change(&mut watch, |change| {
        matches!(change, Change::Up(_)) && node_of(change) == Some("proc-3")
    })
    .await;
    tokio::time::timeout(GUARD, async {
        loop {
            match client.echo(hello()).await {
                Ok(reply) if reply.get_ref().node == "proc-3" => break,
                Ok(reply) => assert_ne!(reply.get_ref().node, "proc-1"),
                Err(status) => panic!("a call failed: {status:?}"),
            }
        }
    })
    .await
    .unwrap();

    observer.deregister(&v2).await.unwrap();
    caller.shutdown().await.unwrap();
}

fn hello() -> EchoRequest {
    EchoRequest {
        message: "hello".into(),
        ..EchoRequest::default()
    }
}

#[tokio::test]
async fn malformed_records_are_skipped_and_the_watch_goes_on() {
    let nats = NatsServer::start().await;
    let observer = registry(&nats.url()).await;
    let mut watch = observer.watch("echo");
    let kv = bucket(&nats).await;
    kv.put("echo.garbage", "{not json".into()).await.unwrap();
    let elsewhere = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:1");
    kv.put(
        "echo.other-key",
        serde_json::to_vec(&elsewhere).unwrap().into(),
    )
    .await
    .unwrap();

    let publisher = registry(&nats.url()).await;
    let valid = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:2")
        .with_metadata("node", "valid");
    publisher.register(valid.clone()).await.unwrap();
    let change = next_change(&mut watch, |change| matches!(change, Change::Up(_))).await;
    assert_eq!(change, Change::Up(valid.clone()));
    assert_eq!(
        observer.resolve("echo", &"*".parse().unwrap()),
        std::slice::from_ref(&valid)
    );

    // A registry started after the garbage was stored loads around it too.
    let late = registry(&nats.url()).await;
    tokio::time::timeout(GUARD, async {
        while late.resolve("echo", &"*".parse().unwrap()).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(late.resolve("echo", &"*".parse().unwrap()), [valid]);
}

/// A service name NATS cannot take as a key (`users v2`) is refused at
/// registration with `INVALID_ARGUMENT`, not kept for a heartbeat whose every
/// put would fail: that counted as JetStream refusing heartbeats, and no
/// instance expired on the node again.
#[tokio::test]
async fn an_instance_nats_cannot_key_is_refused_and_expiry_goes_on() {
    let nats = NatsServer::start().await;
    let discovery = registry(&nats.url()).await;
    let unkeyable = Instance::new("users v2", "1.0.0".parse().unwrap(), "127.0.0.1:7");
    let err = discovery.register(unkeyable.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("`users v2`"), "{err}");
    assert!(discovery.instances().is_empty());
    discovery.deregister(&unkeyable).await.unwrap();

    // A record no heartbeat refreshes still expires within its TTL.
    let kv = bucket(&nats).await;
    let stale = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:8")
        .with_metadata("node", "stale");
    kv.put(
        format!("echo.{}", stale.id()),
        serde_json::to_vec(&stale).unwrap().into(),
    )
    .await
    .unwrap();
    tokio::time::timeout(GUARD, async {
        while nodes(&discovery) != BTreeSet::from(["stale".to_owned()]) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let seen = Instant::now();
    tokio::time::timeout(GUARD, async {
        while !nodes(&discovery).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        seen.elapsed() <= TTL * 3,
        "expired after {:?}",
        seen.elapsed()
    );
    assert_eq!(discovery.status(), room619::discovery::DiscoveryStatus::Ok);
}

/// A registry starting up loads what the bucket holds before it is handed
/// out: a record no heartbeat refreshes (its node just went quiet, or beats
/// every `ttl / 3`) is there at once, not at its next put.
#[tokio::test]
async fn a_starting_registry_has_every_stored_instance_at_once() {
    let nats = NatsServer::start().await;
    let first = registry(&nats.url()).await;
    let kv = bucket(&nats).await;
    let stored = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:3")
        .with_metadata("node", "quiet");
    kv.put(
        format!("echo.{}", stored.id()),
        serde_json::to_vec(&stored).unwrap().into(),
    )
    .await
    .unwrap();
    let gone = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:4");
    let gone_key = format!("echo.{}", gone.id());
    kv.put(&gone_key, serde_json::to_vec(&gone).unwrap().into())
        .await
        .unwrap();
    kv.delete(&gone_key).await.unwrap();

    let started = Instant::now();
    let late = registry(&nats.url()).await;
    assert_eq!(
        late.resolve("echo", &"*".parse().unwrap()),
        [stored],
        "loaded in {:?}",
        started.elapsed()
    );
    drop(first);
}

/// Connected, but JetStream takes no heartbeat (here the bucket's stream is
/// sealed, as when it is full or its server restarts): no heartbeat of any
/// node gets through, so nothing expires, and the registry says so.
#[tokio::test]
async fn heartbeats_jetstream_refuses_expire_nobody() {
    let nats = NatsServer::start().await;
    let a = registry(&nats.url()).await;
    let b = registry(&nats.url()).await;
    // `c` registers nothing: it must ask the server, not its cached view,
    // whether the bucket takes heartbeats.
    let c = registry(&nats.url()).await;
    let on_a =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:5").with_metadata("node", "a");
    let on_b =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:6").with_metadata("node", "b");
    a.register(on_a.clone()).await.unwrap();
    b.register(on_b.clone()).await.unwrap();
    let both = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    tokio::time::timeout(GUARD, async {
        while nodes(&a) != both || nodes(&b) != both || nodes(&c) != both {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    let js = nats.jetstream().await;
    let mut stream = js.get_stream("KV_room619_instances").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.sealed = true;
    js.update_stream(config).await.unwrap();
    // Never missing, not even for a moment (an expired instance would come
    // back with the next replay of the sealed records).
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        assert_eq!(nodes(&a), both, "a forgot an instance");
        assert_eq!(nodes(&b), both, "b forgot an instance");
        assert_eq!(nodes(&c), both, "c (no instances of its own) forgot one");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match b.status() {
        room619::discovery::DiscoveryStatus::Degraded(reason) => {
            assert!(reason.contains("last known"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn nats_unreachable_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = nats_config(&format!("nats://127.0.0.1:{port}"), "lonely");
    let err = support::start_fails(config, [support::echo_service()]).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("discovery.nats.url"), "{err}");
    assert!(err.message().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn nats_down_at_run_time_keeps_the_last_known_instances() {
    let mut nats = NatsServer::start().await;
    let server = support::start(nats_config(&nats.url(), "server")).await;
    let caller = support::start_named_with_config(nats_config(&nats.url(), "caller")).await;
    let discovery = Arc::clone(caller.handle().discovery());
    tokio::time::timeout(GUARD, async {
        while nodes(discovery.as_ref()).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let ready_url = format!("http://{}/health/ready", caller.local_addr());
    let report = || async {
        let response = support::http1().get(&ready_url).send().await.unwrap();
        response.json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(report().await["discovery"]["status"], "ok");

    nats.kill();
    tokio::time::timeout(GUARD, async {
        while report().await["discovery"]["status"] != "degraded" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let degraded = report().await;
    assert_eq!(degraded["status"], "ready", "{degraded}");
    assert!(
        degraded["discovery"]["reason"]
            .as_str()
            .unwrap()
            .contains("last known"),
        "{degraded}"
    );
    // Well past the TTL, the last known instance is still there and called.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(nodes(discovery.as_ref()), BTreeSet::from(["server".into()]));
    let mut client = caller
        .handle()
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    assert_eq!(client.echo(hello()).await.unwrap().get_ref().node, "server");

    nats.restart().await;
    tokio::time::timeout(GUARD, async {
        while report().await["discovery"]["status"] != "ok" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    // Heartbeats flow again: the instance outlives another TTL.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(nodes(discovery.as_ref()), BTreeSet::from(["server".into()]));

    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// With NATS gone, a node's shutdown does not wait out JetStream's timeout
/// for its deregistration (5 s an instance, one after another, before the
/// drain even began): it waits at most 2 s for all of them.
#[tokio::test]
async fn shutdown_with_nats_down_does_not_wait_for_the_deregistration() {
    let mut nats = NatsServer::start().await;
    let mut config = nats_config(&nats.url(), "server");
    config.node.drain_timeout = Duration::from_secs(1);
    let server = support::start(config).await;
    nats.kill();
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3_500),
        "shutdown took {took:?}"
    );
}

#[tokio::test]
async fn a_server_back_without_its_store_is_filled_again_by_the_heartbeats() {
    let mut nats = NatsServer::start().await;
    let server = support::start(nats_config(&nats.url(), "server")).await;
    nats.kill();
    nats.wipe_store();
    nats.restart().await;
    // Nobody else connects: only the node's heartbeat can create the bucket again.
    let js = nats.jetstream().await;
    tokio::time::timeout(GUARD, async {
        while js.get_key_value("room619_instances").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let observer = registry(&nats.url()).await;
    tokio::time::timeout(GUARD, async {
        while nodes(&observer).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(nodes(&observer), BTreeSet::from(["server".into()]));
    let discovery = Arc::clone(server.handle().discovery());
    tokio::time::timeout(GUARD, async {
        while discovery.status() != room619::discovery::DiscoveryStatus::Ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// Nodes with different TTLs: each instance expires by the TTL its record
/// states (that of the node refreshing it), so a node with a short TTL keeps
/// the instance of one that beats more slowly, and still drops it once that
/// node stops.
#[tokio::test]
async fn nodes_with_different_ttls_keep_each_others_instances() {
    let nats = NatsServer::start().await;
    let stop_slow = CancellationToken::new();
    let slow = registry_with_ttl(&nats.url(), Duration::from_secs(4), stop_slow.clone()).await;
    let quick = registry_with_ttl(
        &nats.url(),
        Duration::from_millis(600),
        CancellationToken::new(),
    )
    .await;
    let on_slow = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:7")
        .with_metadata("node", "slow");
    slow.register(on_slow.clone()).await.unwrap();
    let only_slow = BTreeSet::from(["slow".to_owned()]);
    tokio::time::timeout(GUARD, async {
        while nodes(&quick) != only_slow {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // `slow` puts its record every 1.33 s: `quick` (TTL 1 s) must not drop
    // it in between.
    let until = Instant::now() + Duration::from_millis(3_500);
    while Instant::now() < until {
        assert_eq!(
            nodes(&quick),
            only_slow,
            "the quick node dropped the instance"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = bucket(&nats)
        .await
        .get(format!("echo.{}", on_slow.id()))
        .await;
    let record: serde_json::Value = serde_json::from_slice(&record.unwrap().unwrap()).unwrap();
    assert_eq!(
        record["metadata"]["room619.ttl_ms"], "4000",
        "the record states its TTL"
    );
    assert_eq!(
        quick.resolve("echo", &"*".parse().unwrap()),
        [on_slow],
        "the instance as registered, without the record's TTL"
    );

    // `slow` stops beating (its process hangs): gone after its 4 s TTL.
    stop_slow.cancel();
    let stopped = Instant::now();
    tokio::time::timeout(GUARD, async {
        while !nodes(&quick).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the instance of a node that stopped beating never expired");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "expired by the quick node's TTL, not the record's: {:?}",
        stopped.elapsed()
    );
    drop(slow);
}

/// Makes the registry's bucket as room619 does, but keeping records for
/// `max_age` and taking `max_consumers` at most (-1: any number); the name
/// of its stream.
async fn make_bucket(
    js: &async_nats::jetstream::Context,
    max_age: Duration,
    max_consumers: i32,
) -> &'static str {
    let bucket = "room619_instances";
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        max_consumers,
        ..async_nats::jetstream::stream::Config::default()
    })
    .await
    .unwrap();
    "KV_room619_instances"
}

/// Connected and heartbeats going through, but the bucket cannot be
/// watched (here its watch consumers are deleted and the stream takes no
/// new one): no other node's heartbeat can be heard, so nothing expires and
/// the registry says why; once it can watch again it follows the bucket.
#[tokio::test]
async fn a_bucket_that_cannot_be_watched_expires_nobody() {
    use async_nats::jetstream::consumer::pull;

    let nats = NatsServer::start().await;
    // The bucket as room619 makes it, but taking two consumers at most.
    let js = nats.jetstream().await;
    let bucket = make_bucket(&js, TTL, 2).await;
    let a = registry(&nats.url()).await;
    let b = registry(&nats.url()).await;
    let on_b =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:6").with_metadata("node", "b");
    b.register(on_b).await.unwrap();
    let only_b = BTreeSet::from(["b".to_owned()]);
    tokio::time::timeout(GUARD, async {
        while nodes(&a) != only_b {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // The watches' consumers go; two others take the stream's only places.
    let stream = js.get_stream(bucket).await.unwrap();
    let watches: Vec<String> = stream.consumer_names().map(Result::unwrap).collect().await;
    assert_eq!(watches.len(), 2, "{watches:?}");
    for name in &watches {
        stream.delete_consumer(name).await.unwrap();
    }
    for filler in ["filler-1", "filler-2"] {
        stream
            .create_consumer(pull::Config {
                durable_name: Some(filler.to_owned()),
                ..pull::Config::default()
            })
            .await
            .unwrap();
    }

    let degraded = tokio::time::timeout(GUARD, async {
        loop {
            if let room619::discovery::DiscoveryStatus::Degraded(reason) = a.status() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the registry did not notice it no longer watches");
    assert!(degraded.contains("watch"), "{degraded}");
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        assert_eq!(nodes(&a), only_b, "a forgot b's instance while deaf");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for filler in ["filler-1", "filler-2"] {
        stream.delete_consumer(filler).await.unwrap();
    }
    let on_b2 =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:7").with_metadata("node", "b2");
    b.register(on_b2).await.unwrap();
    let both = BTreeSet::from(["b".to_owned(), "b2".to_owned()]);
    tokio::time::timeout(GUARD, async {
        while nodes(&a) != both || a.status() != room619::discovery::DiscoveryStatus::Ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a follows the bucket again");
}

/// A watch that starts over (here after a server restart) replays the last
/// record of every key the bucket keeps, and the bucket may keep one longer
/// than the TTL its node states: an instance that expired here does not
/// come back with it, and a node starting then never sees it.
#[tokio::test]
async fn an_expired_instance_does_not_come_back_with_a_replay() {
    let mut nats = NatsServer::start().await;
    // The bucket keeps records 30 s; `b` states a 1 s TTL; `a` beats on
    // (a replayed record's age is taken by the server's clock, from the
    // bucket's last put).
    make_bucket(&nats.jetstream().await, Duration::from_secs(30), -1).await;
    let a = registry(&nats.url()).await;
    let on_a =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:5").with_metadata("node", "a");
    a.register(on_a).await.unwrap();
    let stop_b = CancellationToken::new();
    let b = registry_with_ttl(&nats.url(), Duration::from_secs(1), stop_b.clone()).await;
    let on_b =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:6").with_metadata("node", "b");
    let key = format!("echo.{}", on_b.id());
    b.register(on_b).await.unwrap();
    tokio::time::timeout(GUARD, async {
        while !nodes(&a).contains("b") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // `b` stops beating without deregistering: its record stays stored.
    stop_b.cancel();
    tokio::time::timeout(GUARD, async {
        while nodes(&a).contains("b") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b's instance expires at a");
    // `a` beats again (every 667 ms): by the bucket's last put, b's record
    // is then older than its TTL.
    tokio::time::sleep(Duration::from_secs(1)).await;

    nats.kill();
    tokio::time::timeout(GUARD, async {
        while a.status() == room619::discovery::DiscoveryStatus::Ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a notices the server is gone");
    nats.restart().await;
    let stored = bucket(&nats).await.get(&key).await.unwrap();
    assert!(stored.is_some(), "the bucket still keeps b's record");
    let c = registry(&nats.url()).await;
    assert!(nodes(&c).contains("a"), "c loaded a's record");
    assert!(
        !nodes(&c).contains("b"),
        "c, starting now, loaded b's record"
    );
    // `a` is back (its watch made again, the bucket replayed), and stays
    // without b.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until || a.status() != room619::discovery::DiscoveryStatus::Ok {
        assert!(!nodes(&a).contains("b"), "a's new watch brought b back");
        assert!(!nodes(&c).contains("b"), "c's watch brought b back");
        assert!(Instant::now() < until + GUARD, "a did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node starting after an instance stopped beating counts that
/// instance's TTL from its last put, as the nodes watching all along do:
/// it does not keep the instance for up to a TTL more.
#[tokio::test]
async fn a_starting_registry_expires_a_stopped_instance_a_ttl_after_its_last_put() {
    let nats = NatsServer::start().await;
    // `b` first: the bucket keeps records for the TTL of the node that made it.
    let stop_b = CancellationToken::new();
    let b = registry_with_ttl(&nats.url(), Duration::from_secs(3), stop_b.clone()).await;
    // `a` beats every 200 ms: a record's age is read against the bucket's
    // last put (the server's clock), as in any registry with live nodes.
    let a = registry_with_ttl(
        &nats.url(),
        Duration::from_millis(600),
        CancellationToken::new(),
    )
    .await;
    let on_a =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:5").with_metadata("node", "a");
    a.register(on_a).await.unwrap();
    let on_b =
        Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:6").with_metadata("node", "b");
    b.register(on_b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `b` stops beating without deregistering; its last put is now 2 to
    // 3 s old (it beat every second).
    stop_b.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // `c` looks every 200 ms; `b`'s record states its own TTL of 3 s.
    let c = registry_with_ttl(
        &nats.url(),
        Duration::from_millis(600),
        CancellationToken::new(),
    )
    .await;
    let started = Instant::now();
    assert!(
        nodes(&c).contains("b"),
        "c loaded b's record, still within its TTL: {:?}",
        nodes(&c)
    );
    tokio::time::timeout(GUARD, async {
        while nodes(&c).contains("b") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b's instance expires at c");
    // Counted from c's start it would take 3 s and more.
    assert!(
        started.elapsed() < Duration::from_millis(1_600),
        "b expired {:?} after c started",
        started.elapsed()
    );
}

/// A deregistration that fails because NATS is away is not forgotten: the
/// heartbeat deletes the record once the server is back, so other nodes
/// stop routing to the instance at once instead of after its TTL.
#[tokio::test]
async fn a_deregistration_made_while_nats_is_away_is_done_once_it_is_back() {
    let mut nats = NatsServer::start().await;
    // A TTL far beyond the test: only a deletion can take the record away.
    let long = Duration::from_secs(120);
    let discovery = registry_with_ttl(&nats.url(), long, CancellationToken::new()).await;
    let instance = Instance::new("echo", "1.0.0".parse().unwrap(), "127.0.0.1:9")
        .with_metadata("node", "leaving");
    discovery.register(instance.clone()).await.unwrap();
    let key = format!("echo.{}", instance.id());
    assert!(bucket(&nats).await.get(&key).await.unwrap().is_some());

    nats.kill();
    let err = discovery.deregister(&instance).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(discovery.instances().is_empty());
    nats.restart().await;

    let kv = bucket(&nats).await;
    tokio::time::timeout(GUARD, async {
        while kv.get(&key).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the record was not deleted once NATS was back");
    // And it stays deleted: no heartbeat puts it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(kv.get(&key).await.unwrap().is_none());
    let observer = registry(&nats.url()).await;
    assert!(nodes(&observer).is_empty(), "{:?}", nodes(&observer));
}

/// The bucket a node creates is kept on `discovery.nats.replicas` servers;
/// more than a lone server can give fails the start, naming the key.
#[tokio::test]
async fn the_bucket_is_made_with_the_configured_replicas() {
    let nats = NatsServer::start().await;
    let three = NatsDiscoveryConfig {
        url: nats.url(),
        replicas: 3,
        ..NatsDiscoveryConfig::default()
    };
    let err = NatsDiscovery::connect(&three, &[], "observer", CancellationToken::new())
        .await
        .expect_err("a lone server keeps no bucket on three");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("`discovery.nats.replicas`"), "{err}");

    let _registry = registry(&nats.url()).await;
    let stream = nats
        .jetstream()
        .await
        .get_stream("KV_room619_instances")
        .await
        .unwrap();
    assert_eq!(stream.cached_info().config.num_replicas, 1);
}
