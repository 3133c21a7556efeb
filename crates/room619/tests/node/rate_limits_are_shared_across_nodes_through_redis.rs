//! Two nodes with the Redis backend and the same key prefix enforce one
//! combined limit (Redis on 127.0.0.1:6379, as on every test machine); a
//! node that loses Redis keeps its own limit; a rule loosened at run time
//! does not keep the wait of the old one.

use std::time::Duration;

use room619::RunningNode;

use crate::support::{
    self,
    fault_proxy::{Fault, FaultProxy},
};

/// A fresh key prefix, so runs and tests do not share counters.
fn prefix() -> String {
    format!("room619-test:{}:{}:", std::process::id(), fastrand::u64(..))
}

/// POSTs `/echo` on `node`.
async fn post(client: &reqwest::Client, node: &RunningNode) -> reqwest::Response {
    client
        .post(format!("http://{}/echo", node.local_addr()))
        .body("x")
        .send()
        .await
        .unwrap()
}

/// The seconds of a 429's `Retry-After`.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

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
    // The request that finds the connection broken is decided by the
    // node's own counter (new, so it passes); the next one is decided on a
    // new connection.
    assert_eq!(
        after.last(),
        Some(&429),
        "the limit never held again: {after:?}"
    );
    assert!(after.len() <= 2, "{after:?}");
    node.shutdown().await.unwrap();
}

/// Redis going away used to let every request through, each with a warning
/// (fail open: an attacker who can slow Redis lifts every limit). The node
/// now counts by its own counters meanwhile: of 3N requests at once, N pass,
/// whether Redis drops connections or swallows commands (each then waits at
/// most the 1 s timeout).
#[tokio::test]
async fn a_node_whose_redis_goes_away_still_holds_its_own_limit() {
    for fault in [Fault::Reset, Fault::BlackHole] {
        let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await;
        let extra = format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\nredis_prefix = \"{}\"\n\
             [[rate_limit.rules]]\nroute = \"/echo\"\nlimit = 3\nperiod = \"1h\"\n",
            proxy.addr(),
            prefix()
        );
        // Started through the proxy: connected to Redis, nothing counted yet.
        let node = support::start(support::config(&extra)).await;
        proxy.set(fault);
        let client = support::http1();
        let responses = futures_util::future::join_all((0..9).map(|_| post(&client, &node))).await;
        let mut passed = 0;
        for response in &responses {
            match response.status().as_u16() {
                200 => passed += 1,
                429 => assert!(retry_after(response) >= 1),
                other => panic!("{fault:?}: unexpected status {other}"),
            }
        }
        assert_eq!(passed, 3, "{fault:?}: the node's own limit");
        let later = post(&client, &node).await;
        assert_eq!(later.status(), 429, "{fault:?}: and it keeps holding");
        node.shutdown().await.unwrap();
    }
}

/// A counter's TAT a day ahead (`1 per day`) used to be kept as it was
/// after an update to `1000 per minute`: the client stayed refused for a
/// day. It is now read under the new rule (at most a minute ahead): the
/// client waits one interval, 60 ms.
#[tokio::test]
async fn a_rule_loosened_at_run_time_does_not_keep_the_wait_of_the_old_one() {
    let backend = format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{}\"\n",
        prefix()
    );
    let rule = |limit: u32, period: &str| {
        format!("[[rate_limit.rules]]\nroute = \"/echo\"\nlimit = {limit}\nperiod = \"{period}\"\n")
    };
    let node = support::start(support::config(&(backend.clone() + &rule(1, "1d")))).await;
    let client = support::http1();
    assert_eq!(post(&client, &node).await.status(), 200);
    let refused = post(&client, &node).await;
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) > 86_000, "{}", retry_after(&refused));

    let loosened = support::config(&(backend + &rule(1000, "1m")));
    node.handle()
        .rate_limiter()
        .update(&loosened.rate_limit)
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = post(&client, &node).await;
        statuses.push(response.status().as_u16());
        if response.status() == 200 {
            break;
        }
        assert_eq!(retry_after(&response), 1, "one interval of the new rule");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    node.shutdown().await.unwrap();
}
