//! A token naming a key id the node has not loaded (the identity provider
//! rotated its keys since the last fetch) makes the node fetch its JWKS URL
//! at once, not at the next refresh, and is accepted on its first try;
//! made-up key ids cause at most one fetch per 30 s and are refused at once.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, routing::get};
use serde_json::{Value, json};

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

/// An identity provider serving `document` at `/jwks.json`, counting the
/// fetches in `fetches`.
async fn identity_provider(document: Arc<Mutex<String>>, fetches: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let (document, fetches) = (Arc::clone(&document), Arc::clone(&fetches));
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                document.lock().unwrap().clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

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

#[tokio::test]
async fn a_new_key_id_is_fetched_at_once_and_made_up_ones_at_most_every_30_s() {
    let document = Arc::new(Mutex::new(jwks(&[jwt::rsa_jwk(&jwt::rsa(), "a")])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let idp = identity_provider(Arc::clone(&document), Arc::clone(&fetches)).await;
    // Refreshed hourly: only a fetch out of turn can pick up a new key.
    let extra = format!("[auth.jwks]\nurl = \"http://{idp}/jwks.json\"\nrefresh = \"1h\"\n");
    let node = support::start(support::config(&jwt::auth_toml(&extra))).await;
    let addr = node.local_addr();
    let a = mint("RS256", Some("a"), &good_claims("alice", ""), &jwt::rsa());
    assert_eq!(status_with(addr, &a).await, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once, at start");

    // The provider rotates: key `b` signs from now on.
    *document.lock().unwrap() = jwks(&[
        jwt::rsa_jwk(&jwt::rsa(), "a"),
        jwt::rsa_jwk(&jwt::rsa2(), "b"),
    ]);
    let b = mint("RS256", Some("b"), &good_claims("bob", ""), &jwt::rsa2());
    assert_eq!(
        status_with(addr, &b).await,
        200,
        "accepted on its first try"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(status_with(addr, &a).await, 200, "the old key still works");

    // Made-up key ids: refused at once, without another fetch.
    for kid in ["x1", "x2", "x3"] {
        let forged = mint("RS256", Some(kid), &good_claims("eve", ""), &jwt::rsa2());
        assert_eq!(status_with(addr, &forged).await, 401, "{kid}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "one fetch per 30 s");
    node.shutdown().await.unwrap();
}
