//! A JWKS file rewritten while the node runs: the new key is used after the
//! next refresh, the removed one stops working, and a JWKS served over HTTP
//! works the same way.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use serde_json::{Value, json};

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

async fn status_with(addr: SocketAddr, token: &str) -> u16 {
    support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `token` gets `want`, for at most 10 s (a hang guard).
async fn until_status(addr: SocketAddr, token: &str, want: u16) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while status_with(addr, token).await != want {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never got {want}"));
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn a_rewritten_jwks_file_rotates_keys_without_restart() {
    let dir = std::env::temp_dir().join(format!("room619-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    let (old, new) = (jwt::rsa(), jwt::rsa2());
    std::fs::write(
        &path,
        jwks(&[jwt::rsa_jwk(&old, "2024"), jwt::ed_jwk(&jwt::ed(), "ed-1")]),
    )
    .unwrap();
    let extra = format!(
        "[auth.jwks]\nfile = \"{}\"\nrefresh = \"1s\"\n",
        path.display()
    );
    let node = support::start(support::config(&jwt::auth_toml(&extra))).await;
    let addr = node.local_addr();

    let old_token = mint("RS256", Some("2024"), &good_claims("alice", ""), &old);
    let new_token = mint("RS256", Some("2025"), &good_claims("alice", ""), &new);
    let ed_token = mint("EdDSA", Some("ed-1"), &good_claims("alice", ""), &jwt::ed());
    assert_eq!(status_with(addr, &old_token).await, 200);
    assert_eq!(status_with(addr, &ed_token).await, 200);
    assert_eq!(
        status_with(addr, &new_token).await,
        401,
        "not yet published"
    );
    // A JWKS key answers only to its own algorithm.
    let confused = mint(
        "HS256",
        Some("2024"),
        &good_claims("alice", ""),
        &jwt::Signer::Hs(b"x".repeat(32)),
    );
    assert_eq!(status_with(addr, &confused).await, 401);

    std::fs::write(
        &path,
        jwks(&[jwt::rsa_jwk(&new, "2025"), jwt::ec_jwk(&jwt::ec(), "ec-1")]),
    )
    .unwrap();
    until_status(addr, &new_token, 200).await;
    assert_eq!(
        status_with(addr, &old_token).await,
        401,
        "the retired key no longer verifies"
    );
    let p256_token = mint("ES256", Some("ec-1"), &good_claims("alice", ""), &jwt::ec());
    assert_eq!(status_with(addr, &p256_token).await, 200);

    // A broken document keeps the last good keys; so does one with no key
    // room619 can use (empty, or an `oct` secret, never taken from a JWKS).
    for broken in [
        "{ not json".to_owned(),
        jwks(&[]),
        jwks(&[serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"})]),
    ] {
        std::fs::write(&path, broken).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status_with(addr, &new_token).await, 200);
    }
    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_jwks_served_over_http_is_fetched_and_refreshed() {
    let document = std::sync::Arc::new(std::sync::Mutex::new(jwks(&[jwt::rsa_jwk(
        &jwt::rsa(),
        "a",
    )])));
    let served = std::sync::Arc::clone(&document);
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let served = std::sync::Arc::clone(&served);
            async move { served.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let extra = format!("[auth.jwks]\nurl = \"http://{idp}/jwks.json\"\nrefresh = \"1s\"\n");
    let node = support::start(support::config(&jwt::auth_toml(&extra))).await;
    let addr = node.local_addr();
    let a = mint("RS256", Some("a"), &good_claims("alice", ""), &jwt::rsa());
    let b = mint("RS256", Some("b"), &good_claims("alice", ""), &jwt::rsa2());
    assert_eq!(status_with(addr, &a).await, 200);
    assert_eq!(status_with(addr, &b).await, 401);
    *document.lock().unwrap() = jwks(&[jwt::rsa_jwk(&jwt::rsa2(), "b")]);
    until_status(addr, &b, 200).await;
    assert_eq!(status_with(addr, &a).await, 401);
    node.shutdown().await.unwrap();
}
