//! The `[resilience]` section reloads live: clients made after an edit of the
//! watched file use the new policy (here a bulkhead shrunk to one call).

use std::time::Duration;

use futures_util::future::join;
use room619::{
    config::{ConfigLoader, Overrides},
    rpc::client::RpcChannel,
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tonic::Code;

use crate::support;

/// Hang guard for a reload to be noticed.
const GUARD: Duration = Duration::from_secs(20);

fn toml(echo: std::net::SocketAddr, max_concurrent: usize) -> String {
    format!(
        "[node]\nlisten = \"127.0.0.1:0\"\nname = \"caller\"\ndrain_timeout = \"5s\"\n\
         config_poll_interval = \"20ms\"\n\
         [[discovery.instances]]\nname = \"echo\"\nversion = \"1.0.0\"\naddress = \"{echo}\"\n\
         [resilience.services.echo.bulkhead]\nmax_concurrent = {max_concurrent}\nmax_queued = 0\n"
    )
}

/// A node calling out, configured from the file at `path` and watching it.
async fn watching(path: &std::path::Path) -> room619::RunningNode {
    let config = ConfigLoader::new().file(path).without_env().load().unwrap();
    room619::Node::builder()
        .config(config)
        .watch_config(path, Overrides::new())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// Replaces the file at `path` with `text` at once, and waits until the
/// node of `handle` has reloaded it.
async fn rewrite(path: &std::path::Path, text: &str, handle: &room619::node::NodeHandle) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
    let live = handle.live_config().clone();
    tokio::time::timeout(GUARD, async {
        while live.reloads() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reload was not noticed");
}

/// Two slow calls at once: their status codes (OK is `Code::Ok`).
async fn two_at_once(handle: &room619::node::NodeHandle) -> [Code; 2] {
    let call = || async {
        let mut client = handle
            .client::<EchoClient<RpcChannel>>("echo", "^1")
            .unwrap();
        let request = EchoRequest {
            message: "slow".into(),
            delay_ms: 300,
            ..EchoRequest::default()
        };
        client
            .echo(request)
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok)
    };
    let (a, b) = join(call(), call()).await;
    let mut codes = [a, b];
    codes.sort_by_key(|code| *code as i32);
    codes
}

#[tokio::test]
async fn a_new_bulkhead_size_applies_to_clients_made_after_the_reload() {
    let upstream = support::start(support::config("")).await;
    let dir = std::env::temp_dir().join(format!("room619-resilience-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("room619.toml");
    std::fs::write(&path, toml(upstream.local_addr(), 4)).unwrap();
    let caller = watching(&path).await;
    let handle = caller.handle();
    assert_eq!(two_at_once(&handle).await, [Code::Ok, Code::Ok]);

    rewrite(&path, &toml(upstream.local_addr(), 1), &handle).await;
    assert_eq!(
        two_at_once(&handle).await,
        [Code::Ok, Code::ResourceExhausted],
        "the shrunk bulkhead admits one call and rejects the other at once"
    );

    caller.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A client made before a reload of `[resilience]` keeps its policy and
/// keeps following discovery: an instance that appears after the reload
/// takes its calls, one that leaves no longer gets them.
#[tokio::test]
async fn a_client_made_before_the_reload_still_follows_discovery() {
    let one = support::start_named("one", &[], Some(support::echo_service())).await;
    let two = support::start_named("two", &[], Some(support::echo_service())).await;
    let dir = std::env::temp_dir().join(format!("room619-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("room619.toml");
    let toml = |max_concurrent: usize| {
        format!(
            "[node]\nlisten = \"127.0.0.1:0\"\nname = \"caller\"\ndrain_timeout = \"5s\"\n\
             config_poll_interval = \"20ms\"\n\
             [resilience.services.echo.bulkhead]\nmax_concurrent = {max_concurrent}\n"
        )
    };
    std::fs::write(&path, toml(8)).unwrap();
    let caller = watching(&path).await;
    let handle = caller.handle();
    let at = |node: &room619::RunningNode, id: &str| {
        room619::discovery::Instance::new(
            "echo",
            "1.0.0".parse().unwrap(),
            node.local_addr().to_string(),
        )
        .with_id(id)
    };
    let discovery = handle.discovery().clone();
    discovery.register(at(&one, "one")).await.unwrap();
    let mut client = handle
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let answer = |client: &mut EchoClient<RpcChannel>| {
        let mut client = client.clone();
        async move {
            client
                .echo(EchoRequest {
                    message: "hi".into(),
                    ..EchoRequest::default()
                })
                .await
                .unwrap()
                .into_inner()
                .node
        }
    };
    assert_eq!(answer(&mut client).await, "one");

    rewrite(&path, &toml(4), &handle).await;

    discovery.register(at(&two, "two")).await.unwrap();
    discovery.deregister(&at(&one, "one")).await.unwrap();
    tokio::time::timeout(GUARD, async {
        while answer(&mut client).await != "two" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client made before the reload never reached the new instance");
    for _ in 0..20 {
        assert_eq!(answer(&mut client).await, "two");
    }

    caller.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reload that changes another service's policy leaves this service's
/// protection as it was: clients made after it share the bulkhead (and the
/// breakers and budget) of the clients made before, so an edit elsewhere
/// neither closes an open breaker nor doubles the calls let through.
#[tokio::test]
async fn an_edit_of_another_services_policy_keeps_this_ones_state() {
    let upstream = support::start(support::config("")).await;
    let dir = std::env::temp_dir().join(format!("room619-keep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("room619.toml");
    let toml = |other_attempts: u32| {
        format!(
            "{}[resilience.services.other.retry]\nmax_attempts = {other_attempts}\n",
            toml(upstream.local_addr(), 1)
        )
    };
    std::fs::write(&path, toml(2)).unwrap();
    let caller = watching(&path).await;
    let handle = caller.handle();
    let slow = |handle: room619::node::NodeHandle| async move {
        let mut client = handle
            .client::<EchoClient<RpcChannel>>("echo", "^1")
            .unwrap();
        let request = EchoRequest {
            message: "slow".into(),
            delay_ms: 1_500,
            ..EchoRequest::default()
        };
        client
            .echo(request)
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok)
    };
    let before = tokio::spawn(slow(handle.clone()));
    // The call made before the reload holds the bulkhead's one slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rewrite(&path, &toml(3), &handle).await;
    assert_eq!(
        slow(handle.clone()).await,
        Code::ResourceExhausted,
        "a client made after the reload got a bulkhead of its own"
    );
    assert_eq!(before.await.unwrap(), Code::Ok);

    caller.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
