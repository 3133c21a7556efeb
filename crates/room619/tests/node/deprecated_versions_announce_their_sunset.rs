//! A deprecated service version answers with `Deprecation` and `Sunset`
//! headers (HTTP) and metadata (gRPC); its successor does not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use room619::ServiceBuilder;
use shop_proto::echo::v1::EchoRequest;

use crate::support;

/// Wed, 21 Mar 2029 (a fixed date, so the header is known).
fn sunset() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_868_745_600)
}

#[tokio::test]
async fn deprecated_versions_carry_deprecation_and_sunset() {
    let echo = support::echo_builder()
        .deprecated(Some(sunset()))
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), echo).await;
    let handle = node.handle();
    let v1 = ServiceBuilder::new("users", "1.4.0")
        .unwrap()
        .route("/v1/users", get(|| async { "v1" }))
        .deprecated(Some(sunset()))
        .build()
        .unwrap();
    let v2 = ServiceBuilder::new("users", "2.0.0")
        .unwrap()
        .route("/v2/users", get(|| async { "v2" }))
        .build()
        .unwrap();
    handle.add_service(v1).await.unwrap();
    handle.add_service(v2).await.unwrap();
    let base = format!("http://{}", node.local_addr());
    let http = support::http1();

    let old = http.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(old.headers()["deprecation"], "true");
    assert_eq!(old.headers()["sunset"], "Wed, 21 Mar 2029 00:00:00 GMT");
    let new = http.get(format!("{base}/v2/users")).send().await.unwrap();
    assert!(new.headers().get("deprecation").is_none());
    assert!(new.headers().get("sunset").is_none());

    let mut client = support::echo_client(node.local_addr()).await;
    let reply = client
        .echo(EchoRequest {
            message: "hi".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.metadata().get("deprecation").unwrap(), "true");
    assert_eq!(
        reply.metadata().get("sunset").unwrap(),
        "Wed, 21 Mar 2029 00:00:00 GMT"
    );
    node.shutdown().await.unwrap();
}
