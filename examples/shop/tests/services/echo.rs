//! The echo service's limits: what it cannot answer it refuses as it
//! arrives.

use std::time::Duration;

use futures_util::StreamExt as _;
use room619::config::ConfigLoader;
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tonic::Code;

/// A client stream whose messages could never be answered (the joined
/// answer would pass the 4 MiB message limit) is refused while it is still
/// open, before the server has kept more than that.
#[tokio::test]
async fn a_client_stream_too_large_to_answer_is_refused_as_it_arrives() {
    let config = ConfigLoader::new()
        .toml_str("[node]\nlisten = \"127.0.0.1:0\"\nname = \"echo-test\"\n")
        .without_env()
        .load()
        .unwrap();
    let node = room619::Node::builder()
        .config(config)
        .service(shop::echo::service().unwrap())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let big = EchoRequest {
        message: "x".repeat(3 * 1024 * 1024),
        ..EchoRequest::default()
    };
    // Two big messages, then the stream stays open.
    let words = tokio_stream::iter([big.clone(), big]).chain(futures_util::stream::pending());
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        EchoClient::new(channel).echo_collect(words),
    )
    .await
    .expect("the server waited for the end of the stream")
    .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("bytes of messages per call"),
        "{refused:?}"
    );
    node.shutdown().await.unwrap();
}
