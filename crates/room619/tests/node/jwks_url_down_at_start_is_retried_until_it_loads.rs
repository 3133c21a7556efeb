//! A JWKS URL that does not answer when the node starts (the identity
//! service starts later): the node starts anyway, refuses tokens with a
//! message saying the keys are not loaded yet, and accepts them once the URL
//! answers. A JWKS file that is missing still fails the start.

use std::time::Duration;

use axum::{Router, routing::get};
use serde_json::{Value, json};

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

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

    let refused = support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("not loaded yet"), "{problem}");
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

    // Retries are at most `refresh` (2 s) apart.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = support::http1()
                .get(format!("http://{addr}/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                assert_eq!(response.text().await.unwrap(), "alice");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the JWKS was never loaded");

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
