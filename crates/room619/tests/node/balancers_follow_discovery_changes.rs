//! A client's balancer follows the discovery watch: an instance registered
//! later starts taking calls, one that stops serving or is deregistered
//! stops getting them (and its breaker's series leaves `/metrics`); nothing
//! needs a new channel.

use std::{collections::BTreeSet, time::Duration};

use room619::{
    RunningNode,
    discovery::{Instance, InstanceHealth},
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

use crate::support;

/// Hang guard for a change to reach the balancer.
const GUARD: Duration = Duration::from_secs(20);

fn echo_at(node: &RunningNode, id: &str) -> Instance {
    Instance::new(
        "echo",
        "1.0.0".parse().unwrap(),
        node.local_addr().to_string(),
    )
    .with_id(id)
}

/// The nodes that answer 60 calls.
async fn answering(channel: &room619::rpc::client::RpcChannel) -> BTreeSet<String> {
    let calls = (0..60).map(|_| {
        let mut client = EchoClient::new(channel.clone());
        async move {
            let request = EchoRequest {
                message: "hi".into(),
                ..EchoRequest::default()
            };
            client.echo(request).await.unwrap().into_inner().node
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect()
}

async fn until(channel: &room619::rpc::client::RpcChannel, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|&n| n.to_owned()).collect();
    let reached = tokio::time::timeout(GUARD, async {
        loop {
            if answering(channel).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the balancer never settled on {expected:?}"
    );
}

#[tokio::test]
async fn instances_join_and_leave_the_balancer_through_the_watch() {
    let one = support::start_named("one", &[], Some(support::echo_service())).await;
    let two = support::start_named("two", &[], Some(support::echo_service())).await;
    let caller = support::start_named("caller", &[], None).await;
    let discovery = caller.handle().discovery().clone();
    discovery.register(echo_at(&one, "one")).await.unwrap();
    let channel = caller.handle().channel("echo", "^1").unwrap();
    assert_eq!(
        answering(&channel).await,
        BTreeSet::from(["one".to_owned()])
    );

    // Registered after the channel was made: it joins.
    discovery.register(echo_at(&two, "two")).await.unwrap();
    until(&channel, &["one", "two"]).await;

    // Not serving: it leaves, and calls keep succeeding on the other.
    let sick = echo_at(&one, "one").with_health(InstanceHealth::NotServing);
    discovery.register(sick).await.unwrap();
    until(&channel, &["two"]).await;
    assert_eq!(
        answering(&channel).await,
        BTreeSet::from(["two".to_owned()])
    );

    // Serving again: it is back; deregistered: gone again.
    discovery.register(echo_at(&one, "one")).await.unwrap();
    until(&channel, &["one", "two"]).await;
    let breaker_of = |node: &RunningNode| {
        format!(
            "room619_circuit_breaker_state{{breaker=\"echo@{}\",protocol=\"grpc\"}} 0",
            node.local_addr()
        )
    };
    let text = support::metrics_text(caller.local_addr()).await;
    assert!(text.contains(&breaker_of(&two)), "two's breaker is shown");
    discovery.deregister(&echo_at(&two, "two")).await.unwrap();
    until(&channel, &["one"]).await;
    // The instance's breaker went with it, and so did its series.
    let gone = tokio::time::timeout(GUARD, async {
        loop {
            let text = support::metrics_text(caller.local_addr()).await;
            if !text.contains(&format!("echo@{}", two.local_addr())) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the breaker series of a deregistered instance stayed");
    assert!(gone.contains(&breaker_of(&one)), "one's breaker is shown");

    caller.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// An instance registered again under its id at another address (a pod of
/// a stateful set restarted with a new IP) is called at the new address:
/// the balancer does not keep the old one.
#[tokio::test]
async fn an_instance_back_under_its_id_at_a_new_address_is_called_there() {
    let one = support::start_named("one", &[], Some(support::echo_service())).await;
    let two = support::start_named("two", &[], Some(support::echo_service())).await;
    let caller = support::start_named("caller", &[], None).await;
    let discovery = caller.handle().discovery().clone();
    discovery.register(echo_at(&one, "echo-0")).await.unwrap();
    let channel = caller.handle().channel("echo", "^1").unwrap();
    until(&channel, &["one"]).await;

    discovery.register(echo_at(&two, "echo-0")).await.unwrap();
    until(&channel, &["two"]).await;

    caller.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}
