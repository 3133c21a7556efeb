//! Local rate limits: exactly `limit + burst` of a quick run pass, whatever
//! `X-Forwarded-For` an untrusted client invents; behind a trusted proxy
//! each forwarded client has its own limit; limits by principal count
//! callers apart; the rules change at run time, and a loosened rule does not
//! keep the wait of the old one.

use std::net::SocketAddr;

use room619::middleware::rate_limit::RateLimitConfig;
use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

/// 5 per hour (so no token comes back during the test) plus a burst of 2.
const LIMIT: usize = 5;
const BURST: usize = 2;

fn rules(trusted: &str, key: &str) -> String {
    format!(
        "[rate_limit]\ntrusted_proxies = [{trusted}]\n\
         [[rate_limit.rules]]\nroute = \"/echo\"\nmethod = \"POST\"\nlimit = {LIMIT}\nperiod = \"1h\"\nburst = {BURST}\nkey = \"{key}\"\n\
         [[rate_limit.rules]]\nroute = \"/shop.echo.v1.Echo/{{*method}}\"\nlimit = {LIMIT}\nperiod = \"1h\"\n"
    )
}

/// POSTs `/echo` with `x-forwarded-for: xff`; the status.
async fn post(client: &reqwest::Client, addr: SocketAddr, xff: &str) -> reqwest::Response {
    client
        .post(format!("http://{addr}/echo"))
        .header("x-forwarded-for", xff)
        .body("x")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_untrusted_client_gets_limit_plus_burst_of_3n_whatever_it_forwards() {
    let node = support::start(support::config(&rules("", "ip"))).await;
    let addr = node.local_addr();
    let client = support::http1();
    let mut passed = 0;
    let mut refused = Vec::new();
    for i in 0..3 * LIMIT {
        let response = post(&client, addr, &format!("198.51.100.{i}, 10.0.0.{i}")).await;
        match response.status().as_u16() {
            200 => passed += 1,
            429 => refused.push(response),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(passed, LIMIT + BURST);
    let response = refused.pop().unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(support::problem(response).await["status"], 429);
    // GET /echo has no rule (the rule is for POST).
    let response = client
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // gRPC: the same limit per method path, RESOURCE_EXHAUSTED beyond it.
    let mut echo = support::echo_client(addr).await;
    let mut codes = Vec::new();
    for _ in 0..3 * LIMIT {
        let request = tonic::Request::new(EchoRequest::default());
        codes.push(match echo.echo(request).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    assert_eq!(codes.iter().filter(|c| **c == Code::Ok).count(), LIMIT);
    assert!(
        codes[LIMIT..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let node = support::start(support::config(&rules("\"127.0.0.0/8\"", "ip"))).await;
    let addr = node.local_addr();
    let client = support::h2c();
    for forwarded in ["203.0.113.1", "203.0.113.2"] {
        let mut passed = 0;
        for i in 0..3 * LIMIT {
            // The left part is whatever the client claimed; the proxy appended
            // what it saw, and only that counts.
            let xff = format!("6.6.6.{i}, {forwarded}");
            if post(&client, addr, &xff).await.status() == 200 {
                passed += 1;
            }
        }
        assert_eq!(passed, LIMIT + BURST, "{forwarded}");
    }
    // `Forwarded` works when there is no X-Forwarded-For.
    let response = client
        .post(format!("http://{addr}/echo"))
        .header("forwarded", "for=\"[2001:db8::7]:5555\"")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_by_principal_count_callers_apart_and_change_at_run_time() {
    let config = support::config(&format!(
        "{}\n{}",
        jwt::auth_toml(""),
        rules("", "principal")
    ));
    let node = support::start(config).await;
    let addr = node.local_addr();
    let client = support::http1();
    for user in ["ann", "ben"] {
        let token = mint("HS256", Some("hs"), &good_claims(user, ""), &jwt::hs());
        let mut passed = 0;
        for _ in 0..3 * LIMIT {
            let response = client
                .post(format!("http://{addr}/echo"))
                .bearer_auth(&token)
                .body("x")
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                passed += 1;
            }
        }
        assert_eq!(passed, LIMIT + BURST, "{user}");
    }
    // Lift the limits at run time: ann passes again.
    let token = mint("HS256", Some("hs"), &good_claims("ann", ""), &jwt::hs());
    node.handle()
        .rate_limiter()
        .update(&RateLimitConfig::default())
        .unwrap();
    let response = client
        .post(format!("http://{addr}/echo"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A bad update is refused and the rules stay.
    let mut bad = RateLimitConfig::default();
    bad.trusted_proxies.push("not-a-net".into());
    assert!(node.handle().rate_limiter().update(&bad).is_err());
    node.shutdown().await.unwrap();
}

/// A counter's TAT a day ahead (`1 per day`) used to be kept as it was after
/// an update to `1000 per minute`: the client stayed refused for a day. It
/// is now read under the new rule (at most a minute ahead): the client waits
/// one interval, 60 ms.
#[tokio::test]
async fn a_rule_loosened_at_run_time_does_not_keep_the_wait_of_the_old_one() {
    let rule = |limit: u32, period: &str| {
        support::config(&format!(
            "[[rate_limit.rules]]\nroute = \"/echo\"\nlimit = {limit}\nperiod = \"{period}\"\n"
        ))
    };
    let node = support::start(rule(1, "1d")).await;
    let addr = node.local_addr();
    let client = support::http1();
    let retry_after = |response: &reqwest::Response| -> u64 {
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(post(&client, addr, "").await.status(), 200);
    let refused = post(&client, addr, "").await;
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) > 86_000, "{}", retry_after(&refused));

    node.handle()
        .rate_limiter()
        .update(&rule(1000, "1m").rate_limit)
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = post(&client, addr, "").await;
        statuses.push(response.status().as_u16());
        if response.status() == 200 {
            break;
        }
        assert_eq!(retry_after(&response), 1, "one interval of the new rule");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    node.shutdown().await.unwrap();
}
