//! `[rate_limit.refused_credentials]`: a client IP whose credentials were
//! refused as possible guesses `limit + burst` times, on any route, is
//! answered `429` / `RESOURCE_EXHAUSTED` for every request with
//! credentials, valid ones too, until its allowance comes back; other
//! clients, requests without credentials and refusals of tokens a key
//! signed (expired ones) are not held to it.

use std::{net::SocketAddr, time::Duration};

use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

/// 2 an hour plus a burst of 1: three refusals, then the wait.
const HELD_AFTER_THREE: &str =
    "[rate_limit.refused_credentials]\nlimit = 2\nperiod = \"1h\"\nburst = 1\n";

fn config(extra: &str) -> room619::config::Config {
    support::config(&jwt::auth_toml(extra))
}

fn token() -> String {
    mint(
        "HS256",
        Some("hs"),
        &good_claims("alice", "echo"),
        &jwt::hs(),
    )
}

/// POSTs `/echo` with `header`, forwarded for `xff` when given.
async fn post(addr: SocketAddr, header: (&str, &str), xff: Option<&str>) -> reqwest::Response {
    let mut request = support::http1()
        .post(format!("http://{addr}/echo"))
        .header(header.0, header.1)
        .body("x");
    if let Some(xff) = xff {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

async fn grpc_echo(addr: SocketAddr, bearer: &str) -> Code {
    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    let value = format!("Bearer {bearer}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    match support::echo_client(addr).await.echo(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn after_limit_plus_burst_refusals_even_valid_credentials_wait() {
    let node = support::start(config(HELD_AFTER_THREE)).await;
    let addr = node.local_addr();
    let bearer = format!("Bearer {}", token());

    assert_eq!(
        post(addr, ("authorization", &bearer), None).await.status(),
        200
    );
    for guess in ["guess-1", "guess-2", "guess-3"] {
        let response = post(addr, ("x-api-key", guess), None).await;
        assert_eq!(response.status(), 401, "{guess}");
    }
    // The fourth guess, and the valid token, are not checked.
    for header in [("x-api-key", "guess-4"), ("authorization", bearer.as_str())] {
        let response = post(addr, header, None).await;
        assert_eq!(response.status(), 429, "{}", header.0);
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
        let problem = support::problem(response).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("too many refused credentials"),
            "{problem}"
        );
    }
    assert_eq!(grpc_echo(addr, &token()).await, Code::ResourceExhausted);
    // Without credentials the request is checked as ever.
    let anonymous = support::http1()
        .post(format!("http://{addr}/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let metrics = support::metrics_text(addr).await;
    assert!(
        metrics.contains("room619_rate_limited_requests_total{limiter=\"refused credentials\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    let trusted = format!("[rate_limit]\ntrusted_proxies = [\"127.0.0.1\"]\n{HELD_AFTER_THREE}");
    let node = support::start(config(&trusted)).await;
    let addr = node.local_addr();
    let bearer = format!("Bearer {}", token());
    for _ in 0..3 {
        let response = post(addr, ("x-api-key", "guess"), Some("198.51.100.1")).await;
        assert_eq!(response.status(), 401);
    }
    let held = post(addr, ("authorization", &bearer), Some("198.51.100.1")).await;
    assert_eq!(held.status(), 429);
    let other = post(addr, ("authorization", &bearer), Some("198.51.100.2")).await;
    assert_eq!(other.status(), 200);
}

/// A public route serves refused credentials as an anonymous caller, but
/// may answer a principal differently: guesses there count too.
#[tokio::test]
async fn guesses_on_a_public_route_count_too() {
    let service = support::echo_builder().public("/whoami").build().unwrap();
    let node = support::start_with(config(HELD_AFTER_THREE), service).await;
    let addr = node.local_addr();
    let client = support::http1();
    let whoami = |key: &'static str| {
        client
            .get(format!("http://{addr}/whoami"))
            .header("x-api-key", key)
            .send()
    };
    for _ in 0..3 {
        let response = whoami("guess").await.unwrap();
        assert_eq!(response.status(), 200, "served as an anonymous caller");
    }
    assert_eq!(whoami("guess").await.unwrap().status(), 429);
    let bearer = format!("Bearer {}", token());
    assert_eq!(
        post(addr, ("authorization", &bearer), None).await.status(),
        429
    );
}

/// Legitimate clients send expired tokens (a page left open) and tokens of
/// another scheme: refused, never counted, so they cannot lock a shared
/// address out.
#[tokio::test]
async fn expired_tokens_and_other_schemes_are_not_counted() {
    let node = support::start(config(HELD_AFTER_THREE)).await;
    let addr = node.local_addr();
    let mut claims = good_claims("alice", "echo");
    claims["exp"] = serde_json::json!(jwt::now() - 3600);
    let expired = format!("Bearer {}", mint("HS256", Some("hs"), &claims, &jwt::hs()));
    for _ in 0..10 {
        let response = post(addr, ("authorization", &expired), None).await;
        assert_eq!(response.status(), 401);
        let response = post(addr, ("authorization", "Basic c3RhZ2luZzpnYXRl"), None).await;
        assert_eq!(response.status(), 401);
    }
    let bearer = format!("Bearer {}", token());
    assert_eq!(
        post(addr, ("authorization", &bearer), None).await.status(),
        200
    );
}

#[tokio::test]
async fn the_allowance_comes_back_with_time() {
    let one_a_second = "[rate_limit.refused_credentials]\nlimit = 1\nperiod = \"1s\"\n";
    let node = support::start(config(one_a_second)).await;
    let addr = node.local_addr();
    let bearer = format!("Bearer {}", token());
    assert_eq!(post(addr, ("x-api-key", "guess"), None).await.status(), 401);
    let held = post(addr, ("authorization", &bearer), None).await;
    assert_eq!(held.status(), 429);
    assert_eq!(held.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        post(addr, ("authorization", &bearer), None).await.status(),
        200
    );
}

#[test]
fn a_limit_of_zero_is_refused_by_key() {
    let err =
        room619::config::Config::from_toml_str("[rate_limit.refused_credentials]\nlimit = 0\n")
            .unwrap_err();
    assert_eq!(err.key(), "rate_limit.refused_credentials.limit", "{err}");
}
