//! The JWT negative suite: every forged, stale, misdirected or malformed
//! token is refused with `401` / `UNAUTHENTICATED` over HTTP and gRPC, and
//! tokens of every accepted algorithm pass. Tokens are minted by hand with
//! `ring` (see `support::jwt`).

use std::net::SocketAddr;

use serde_json::json;
use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, AUDIENCE, ISSUER, b64, good_claims, mint, now},
};

/// HTTP status and gRPC code for `authorization: <value>`.
async fn outcome(addr: SocketAddr, authorization: &str) -> (u16, Code, Option<String>) {
    let response = support::http1()
        .get(format!("http://{addr}/me"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    if status == 401 {
        assert!(
            !body.contains(authorization.trim_start_matches("Bearer ")) || authorization.len() < 12,
            "the token is not echoed"
        );
    }
    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    if let Ok(value) = authorization.parse() {
        request.metadata_mut().insert("authorization", value);
    }
    let code = match support::echo_client(addr).await.echo(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    (status, code, challenge)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `alg: none` in every casing, with and without a `kid`.
fn alg_none_cases() -> Vec<(String, String)> {
    let mut cases: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        let payload = b64(good_claims("alice", "read").to_string());
        cases.push((
            format!("alg {alg}, empty signature"),
            format!("{header}.{payload}."),
        ));
        cases.push((
            format!("alg {alg}, kid rs"),
            format!(
                "{}.{payload}.",
                b64(json!({"alg": alg, "kid": "rs"}).to_string())
            ),
        ));
    }
    cases
}

/// Every token that must be refused, with a name for the failure message.
fn forged_cases() -> Vec<(String, String)> {
    let rsa = jwt::rsa();
    let good = mint("RS256", Some("rs"), &good_claims("alice", "read"), &rsa);
    let mut cases = alg_none_cases();
    // HS256 keyed with the RSA public key, named as the RSA key and as no key.
    let public_pem = include_str!("support/keys/rsa.pub.pem");
    let confused = jwt::Signer::Hs(public_pem.as_bytes().to_vec());
    cases.push((
        "HS256 with the RS public key, kid rs".into(),
        mint(
            "HS256",
            Some("rs"),
            &good_claims("alice", "read"),
            &confused,
        ),
    ));
    cases.push((
        "HS256 with the RS public key, no kid".into(),
        mint("HS256", None, &good_claims("alice", "read"), &confused),
    ));
    cases.push((
        "RS256 claimed by the HS key".into(),
        mint("RS256", Some("hs"), &good_claims("alice", "read"), &rsa),
    ));
    let mut claims = good_claims("alice", "read");
    claims["exp"] = json!(now() - 3600);
    cases.push(("expired".into(), mint("RS256", Some("rs"), &claims, &rsa)));
    let mut claims = good_claims("alice", "read");
    claims["nbf"] = json!(now() + 3600);
    cases.push((
        "not yet valid".into(),
        mint("RS256", Some("rs"), &claims, &rsa),
    ));
    let mut claims = good_claims("alice", "read");
    claims.as_object_mut().unwrap().remove("exp");
    cases.push((
        "missing exp".into(),
        mint("RS256", Some("rs"), &claims, &rsa),
    ));
    let mut claims = good_claims("alice", "read");
    claims["exp"] = json!((now() + 3600).to_string());
    cases.push((
        "exp as a string".into(),
        mint("RS256", Some("rs"), &claims, &rsa),
    ));
    let mut claims = good_claims("alice", "read");
    claims["aud"] = json!("someone-else");
    cases.push(("wrong aud".into(), mint("RS256", Some("rs"), &claims, &rsa)));
    let mut claims = good_claims("alice", "read");
    claims.as_object_mut().unwrap().remove("aud");
    cases.push((
        "missing aud".into(),
        mint("RS256", Some("rs"), &claims, &rsa),
    ));
    let mut claims = good_claims("alice", "read");
    claims["iss"] = json!("https://evil.test");
    cases.push(("wrong iss".into(), mint("RS256", Some("rs"), &claims, &rsa)));
    cases.push((
        "unknown kid".into(),
        mint("RS256", Some("nope"), &good_claims("alice", "read"), &rsa),
    ));
    cases.push((
        "no kid".into(),
        mint("RS256", None, &good_claims("alice", "read"), &rsa),
    ));
    cases.push((
        "signed by another RSA key".into(),
        mint(
            "RS256",
            Some("rs"),
            &good_claims("alice", "read"),
            &jwt::rsa2(),
        ),
    ));
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered = good_claims("alice", "read");
    tampered["scope"] = json!("admin");
    tampered["exp"] = json!(now() + 7200);
    cases.push((
        "tampered payload".into(),
        format!("{}.{}.{}", parts[0], b64(tampered.to_string()), parts[2]),
    ));
    cases.push((
        "truncated signature".into(),
        good[..good.len() - 10].to_owned(),
    ));
    cases.push(("two segments".into(), format!("{}.{}", parts[0], parts[1])));
    cases.push(("four segments".into(), format!("{good}.{}", parts[2])));
    for garbage in ["", "garbage", "a.b.c", "....", "eyJ.eyJ.sig", "%%%.%%%.%%%"] {
        cases.push((format!("garbage {garbage:?}"), garbage.to_owned()));
    }

    cases
}

#[tokio::test]
async fn forged_stale_misdirected_and_malformed_tokens_are_unauthenticated() {
    let node = support::start(support::config(&jwt::auth_toml(""))).await;
    let addr = node.local_addr();
    let cases = forged_cases();

    for (name, token) in &cases {
        let (status, code, challenge) = outcome(addr, &bearer(token)).await;
        assert_eq!(status, 401, "{name}: HTTP status");
        assert_eq!(code, Code::Unauthenticated, "{name}: gRPC code");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{name}"
        );
    }
    for scheme in ["Basic YWxpY2U6cGFzcw==", "Token abc", "Bearer"] {
        let (status, code, _) = outcome(addr, scheme).await;
        assert_eq!((status, code), (401, Code::Unauthenticated), "{scheme}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_are_accepted_and_name_the_principal() {
    let node = support::start(support::config(&jwt::auth_toml(""))).await;
    let addr = node.local_addr();
    for (alg, kid, signer) in [
        ("HS256", "hs", jwt::hs()),
        ("RS256", "rs", jwt::rsa()),
        ("ES256", "es", jwt::ec()),
        ("EdDSA", "ed", jwt::ed()),
    ] {
        let subject = format!("user-{kid}");
        let token = mint(alg, Some(kid), &good_claims(&subject, "read"), &signer);
        let response = support::h2c()
            .get(format!("http://{addr}/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{alg}");
        assert_eq!(response.text().await.unwrap(), subject, "{alg}");

        let mut request = tonic::Request::new(EchoRequest::default());
        request
            .metadata_mut()
            .insert("authorization", bearer(&token).parse().unwrap());
        let reply = support::echo_client(addr)
            .await
            .echo(request)
            .await
            .unwrap();
        assert_eq!(
            reply.metadata().get("x-principal").unwrap(),
            subject.as_str(),
            "{alg}"
        );
    }
    // Within the leeway (30 s by default), a just-expired token still passes.
    let mut claims = good_claims("late", "");
    claims["exp"] = json!(now() - 5);
    let token = mint("RS256", Some("rs"), &claims, &jwt::rsa());
    let (status, code, _) = outcome(addr, &bearer(&token)).await;
    assert_eq!((status, code), (200, Code::Ok));
    // An audience given as a list naming ours passes too.
    let mut claims = good_claims("listed", "");
    claims["aud"] = json!(["other", AUDIENCE]);
    claims["iss"] = json!(ISSUER);
    let token = mint("ES256", Some("es"), &claims, &jwt::ec());
    let (status, code, _) = outcome(addr, &bearer(&token)).await;
    assert_eq!((status, code), (200, Code::Ok));
    node.shutdown().await.unwrap();
}
