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

/// A TCP relay to the machine's Redis whose connections the test can cut,
/// as a Redis restart or a failover does.
struct Relay {
    addr: std::net::SocketAddr,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&links);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await
                    else {
                        return;
                    };
                    let _ended = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                kept.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            links,
            accept,
        }
    }

    /// Closes every connection made so far; new ones are relayed again.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// redis-rs's multiplexed connection does not reconnect: once Redis had
/// dropped it, every later request was let through (fail open) for good.
/// The limiter now connects again, and the limit holds again.
#[tokio::test]
async fn the_limit_holds_again_after_redis_dropped_the_connection() {
    let relay = Relay::start().await;
    let prefix = format!("room619-test:{}:{}:", std::process::id(), fastrand::u64(..));
    let extra = format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\nredis_prefix = \"{prefix}\"\n\
         [[rate_limit.rules]]\nroute = \"/echo\"\nlimit = 2\nperiod = \"1h\"\n",
        relay.addr
    );
    let node = support::start(support::config(&extra)).await;
    let client = support::http1();
    let status = || async {
        client
            .post(format!("http://{}/echo", node.local_addr()))
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(status().await);
    }
    assert_eq!(before, [200, 200, 429]);

    relay.cut();
    let mut after = Vec::new();
    for _ in 0..4 {
        after.push(status().await);
        if after.last() == Some(&429) {
            break;
        }
    }
    // The request that finds the connection broken is let through (and
    // logged); the next one is decided on a new connection.
    assert_eq!(
        after.last(),
        Some(&429),
        "the limit never held again: {after:?}"
    );
    assert!(after.len() <= 2, "{after:?}");
    node.shutdown().await.unwrap();
}
