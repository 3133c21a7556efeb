//! Two nodes with the Redis backend and the same key prefix enforce one
//! combined limit (Redis on 127.0.0.1:6379, as on every test machine).

use crate::support;

#[tokio::test]
async fn two_nodes_sharing_redis_enforce_one_combined_limit() {
    let prefix = format!("room619-test:{}:{}:", std::process::id(), fastrand::u64(..));
    let extra = format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{prefix}\"\n\
         [[rate_limit.rules]]\nroute = \"/echo\"\nlimit = 6\nperiod = \"1h\"\nburst = 1\n"
    );
    let a = support::start(support::config(&extra)).await;
    let b = support::start(support::config(&extra)).await;
    let client = support::http1();
    let mut passed = 0;
    for i in 0..18 {
        let addr = if i % 2 == 0 {
            a.local_addr()
        } else {
            b.local_addr()
        };
        let response = client
            .post(format!("http://{addr}/echo"))
            .body("x")
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => passed += 1,
            429 => assert!(response.headers().contains_key("retry-after")),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(passed, 7, "6 per hour + a burst of 1, across both nodes");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_whose_redis_is_unreachable_fails_to_start() {
    let extra = "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n\
                 [[rate_limit.rules]]\nroute = \"/echo\"\nlimit = 1\n";
    let err = support::start_fails(support::config(extra), [support::echo_service()]).await;
    assert!(err.message().contains("Redis"), "{err}");
}
