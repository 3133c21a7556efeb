use std::{sync::atomic::Ordering, time::Duration};

use room619::rpc::client::RpcChannel;
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

use crate::support::{self, EchoFixture};

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

/// Runs all four call kinds through `channel`.
async fn all_four_kinds(channel: RpcChannel) {
    let mut client = EchoClient::new(channel);

    let unary = client.echo(request("one")).await.unwrap().into_inner();
    assert_eq!(unary.message, "one");

    let mut server_stream = client
        .echo_stream(EchoRequest {
            repeat: 4,
            ..request("many")
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    while let Some(message) = server_stream.message().await.unwrap() {
        assert_eq!(message.message, "many");
        received += 1;
    }
    assert_eq!(received, 4);

    let words = ["client", "streaming", "works"].map(request);
    let collected = client
        .echo_collect(tokio_stream::iter(words))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collected.message, "client streaming works");

    // Bidirectional ping-pong: each answer arrives before the next request is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = client
        .echo_chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for word in ["ping", "pong", "done"] {
        tx.send(request(word)).await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(answer.message, word.to_uppercase());
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
}

#[tokio::test]
async fn all_four_call_kinds_work_in_process() {
    let node = support::start(support::config("")).await;
    let channel = node.handle().channel("echo", "^1").unwrap();
    assert!(channel.is_colocated());
    all_four_kinds(channel).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn all_four_call_kinds_work_over_the_network() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    assert!(!channel.is_colocated());
    all_four_kinds(channel).await;
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A server stream of 64 KiB messages read slowly must not be produced far
/// ahead of the reader: flow control (network) or pull-based polling
/// (in-process) holds the producer back.
async fn slow_reader_bounds_the_producer(channel: RpcChannel, fixture: &EchoFixture, slack: u64) {
    let mut client = EchoClient::new(channel).max_decoding_message_size(1 << 20);
    let mut stream = client
        .echo_stream(EchoRequest {
            repeat: u32::MAX,
            payload: vec![7; 64 * 1024],
            ..request("flood")
        })
        .await
        .unwrap()
        .into_inner();
    let mut read = 0_u64;
    for _ in 0..20 {
        stream.message().await.unwrap().unwrap();
        read += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let produced = fixture.produced.load(Ordering::SeqCst);
    assert!(
        produced <= read + slack,
        "produced {produced} messages while the reader took {read}"
    );
}

#[tokio::test]
async fn a_slow_reader_holds_back_a_colocated_stream() {
    let fixture = EchoFixture::default();
    let node = support::start_with(support::config(""), fixture.builder().build().unwrap()).await;
    let channel = node.handle().channel("echo", "^1").unwrap();
    slow_reader_bounds_the_producer(channel, &fixture, 4).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_reader_holds_back_a_remote_stream() {
    let fixture = EchoFixture::default();
    let server =
        support::start_named("server", &[], Some(fixture.builder().build().unwrap())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    // HTTP/2 windows hold a few MiB (client stream 2 MiB + connection window),
    // so some dozens of 64 KiB messages may be in flight, never thousands.
    slow_reader_bounds_the_producer(channel, &fixture, 160).await;
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_endless_stream_ends_cleanly_when_the_node_shuts_down() {
    let node = support::start(support::config("")).await;
    let mut client = support::echo_client(node.local_addr()).await;
    let mut stream = client
        .echo_stream(EchoRequest {
            repeat: u32::MAX,
            ..request("forever")
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let handle = node.handle();
    let stopping = tokio::spawn(node.shutdown());
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        let mut after = 0_u64;
        while stream.message().await.unwrap().is_some() {
            after += 1;
        }
        after
    })
    .await
    .expect("the stream did not end at shutdown");
    assert!(drained < u64::MAX);
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("the node did not stop")
        .unwrap()
        .unwrap();
    assert_eq!(handle.phase(), room619::node::Phase::Stopped);
}

/// A node serving echo, and a caller configured with `extra` that knows it
/// as its one instance.
async fn server_and_caller(extra: &str) -> (room619::RunningNode, room619::RunningNode) {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let mut config = support::config(extra);
    config.node.name = "caller".to_owned();
    config.discovery.instances = vec![room619::config::InstanceConfig {
        name: "echo".to_owned(),
        version: "1.0.0".to_owned(),
        address: server.local_addr().to_string(),
    }];
    let caller = support::start_all(config, None).await;
    (server, caller)
}

/// Every Echo method listed as idempotent and hedged: a ping-pong bidi call's
/// request stream has no end while it waits for answers, so the retry and
/// hedge layers send it at once (once) instead of waiting to buffer it; the
/// four kinds work as without the policy.
#[tokio::test]
async fn streams_listed_as_idempotent_and_hedged_are_sent_at_once() {
    let (server, caller) = server_and_caller(
        r#"
[resilience.services.echo.retry]
max_attempts = 3
idempotent = ["/shop.echo.v1.Echo/*"]
[resilience.services.echo.hedge]
methods = ["/shop.echo.v1.Echo/*"]
"#,
    )
    .await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    assert!(!channel.is_colocated());
    tokio::time::timeout(Duration::from_secs(10), all_four_kinds(channel))
        .await
        .expect("no call waited for its request stream to end");
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A remote server stream holds its slot of the client's bulkhead for as
/// long as it is open, not only until its headers: with one slot, a second
/// call is refused while the first stream runs and admitted once it ended.
#[tokio::test]
async fn an_open_remote_stream_holds_its_bulkhead_slot() {
    let (server, caller) = server_and_caller(
        "[resilience.services.echo.bulkhead]\nmax_concurrent = 1\nmax_queued = 0\n",
    )
    .await;
    let mut client = EchoClient::new(caller.handle().channel("echo", "^1").unwrap());

    let mut stream = client
        .echo_stream(EchoRequest {
            repeat: 3,
            ..request("held")
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let refused = client.echo(request("second")).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("bulkhead"), "{refused:?}");

    while stream.message().await.unwrap().is_some() {}
    let admitted = client.echo(request("third")).await.unwrap().into_inner();
    assert_eq!(admitted.message, "third", "the ended stream left its slot");
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
