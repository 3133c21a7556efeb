//! CORS and gzip compression on the HTTP side, when `[http]` asks for them:
//! preflights are answered before authentication, unknown origins get no
//! CORS headers, and nothing changes for a node without `[http]`.

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

const ORIGIN: &str = "https://app.test";

#[tokio::test]
async fn cors_preflights_pass_before_auth_and_responses_are_gzipped() {
    let extra = format!(
        "{}\n[http]\ncompression = true\n[http.cors]\nallow_origins = [\"{ORIGIN}\"]\nallow_credentials = true\n",
        jwt::auth_toml("")
    );
    let node = support::start(support::config(&extra)).await;
    let url = format!("http://{}/echo", node.local_addr());
    let client = support::http1();

    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let token = mint("HS256", Some("hs"), &good_claims("ann", ""), &jwt::hs());
    let body = "compress me ".repeat(200);
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("origin", ORIGIN)
        .header("accept-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    let compressed = response.bytes().await.unwrap();
    assert!(
        compressed.len() < body.len() / 4,
        "{} bytes",
        compressed.len()
    );

    let other = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_http_settings_there_is_no_cors_and_no_compression() {
    let node = support::start(support::config("")).await;
    let response = support::http1()
        .post(format!("http://{}/echo", node.local_addr()))
        .header("origin", ORIGIN)
        .header("accept-encoding", "gzip")
        .body("plain ".repeat(200))
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("content-encoding"));
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    node.shutdown().await.unwrap();
}

#[test]
fn cors_config_errors_name_the_key() {
    let err = room619::config::Config::from_toml_str(
        "[http.cors]\nallow_origins = [\"*\"]\nallow_credentials = true",
    )
    .unwrap_err();
    assert_eq!(err.key(), "http.cors.allow_credentials");
    let err =
        room619::config::Config::from_toml_str("[http.cors]\nallow_origins = [\"not an origin\"]")
            .unwrap_err();
    assert_eq!(err.key(), "http.cors.allow_origins.0");
    // `tower-http` panics on these when the layer is applied: refused here.
    for list in ["allow_methods", "allow_headers", "expose_headers"] {
        let err = room619::config::Config::from_toml_str(&format!(
            "[http.cors]\nallow_origins = [\"{ORIGIN}\"]\nallow_credentials = true\n{list} = [\"*\"]"
        ))
        .unwrap_err();
        assert_eq!(err.key(), format!("http.cors.{list}.0"), "{err}");
    }
}
