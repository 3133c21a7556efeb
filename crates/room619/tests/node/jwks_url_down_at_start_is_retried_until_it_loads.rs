//! A JWKS URL that does not answer when the node starts (the identity
//! service starts later), or answers a document with no usable key yet: the
//! node starts anyway, answers tokens it cannot check yet with `503` /
//! `UNAVAILABLE` and `Retry-After: 1` (not as invalid tokens, which OAuth
//! clients would throw away), and accepts them once the keys load. A JWKS
//! file that is missing still fails the start.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, routing::get};
use serde_json::{Value, json};
use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

/// Polls `GET /me` with `token` until it answers `200`, for at most 10 s
/// (retries are at most `refresh`, 2 s, apart); its body.
async fn until_accepted(addr: SocketAddr, token: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = support::http1()
                .get(format!("http://{addr}/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the JWKS was never loaded")
}

/// Checks that `token` is answered as not verifiable yet, over HTTP and
/// gRPC.
async fn assert_pending(addr: SocketAddr, token: &str) {
    let refused = support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(
        refused.headers().get("www-authenticate").is_none(),
        "no invalid_token challenge"
    );
    let problem = support::problem(refused).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("not loaded yet"), "{problem}");

    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let status = support::echo_client(addr)
        .await
        .echo(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_jwks_url_that_is_down_at_start_is_retried_until_it_loads() {
    // A port nothing listens on yet: bound, noted, released.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = probe.local_addr().unwrap();
    drop(probe);

    let extra = format!("[auth.jwks]\nurl = \"http://{idp}/jwks.json\"\nrefresh = \"2s\"\n");
    let node = support::start(support::config(&jwt::auth_toml(&extra))).await;
    let addr = node.local_addr();
    let token = mint(
        "RS256",
        Some("late"),
        &good_claims("alice", ""),
        &jwt::rsa(),
    );

    assert_pending(addr, &token).await;
    // A token of a configured key works meanwhile.
    let fixed = mint("RS256", Some("rs"), &good_claims("bob", ""), &jwt::rsa());
    let me = support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(&fixed)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // The identity service comes up on that port.
    let document = json!({ "keys": [jwt::rsa_jwk(&jwt::rsa(), "late")] }).to_string();
    let app = Router::new().route("/jwks.json", get(move || async move { document }));
    let listener = tokio::net::TcpListener::bind(idp).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(until_accepted(addr, &token).await, "alice");

    // Once loaded, a token no key verifies is just invalid.
    let stranger = mint(
        "RS256",
        Some("other"),
        &good_claims("eve", ""),
        &jwt::rsa2(),
    );
    let refused = support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["detail"], "invalid credentials", "{problem}");
    node.shutdown().await.unwrap();
}

/// An identity provider that answers with an empty key set while it sets
/// up: that document does not count as loaded.
#[tokio::test]
async fn a_jwks_without_usable_keys_at_start_is_fetched_again_until_it_has_some() {
    let document = Arc::new(Mutex::new(json!({ "keys": [] }).to_string()));
    let served = Arc::clone(&document);
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let served = Arc::clone(&served);
            async move { served.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let extra = format!("[auth.jwks]\nurl = \"http://{idp}/jwks.json\"\nrefresh = \"2s\"\n");
    let node = support::start(support::config(&jwt::auth_toml(&extra))).await;
    let addr = node.local_addr();
    let token = mint(
        "RS256",
        Some("late"),
        &good_claims("alice", ""),
        &jwt::rsa(),
    );
    assert_pending(addr, &token).await;

    *document.lock().unwrap() = json!({ "keys": [jwt::rsa_jwk(&jwt::rsa(), "late")] }).to_string();
    assert_eq!(until_accepted(addr, &token).await, "alice");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_jwks_file_fails_the_start() {
    let path = std::env::temp_dir().join(format!("room619-no-jwks-{}.json", std::process::id()));
    let extra = format!("[auth.jwks]\nfile = \"{}\"\n", path.display());
    let err = support::start_fails(
        support::config(&jwt::auth_toml(&extra)),
        [support::echo_service()],
    )
    .await;
    assert!(err.message().contains("cannot read JWKS file"), "{err}");
}
