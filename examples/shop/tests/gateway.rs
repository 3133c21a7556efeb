#![cfg(test)]
//! The gateway on a real node (127.0.0.1:0): routing to the services, token
//! forwarding, gRPC → HTTP status mapping, validation, malformed input and
//! the OpenAPI document. The services behind it are in-test fakes of the
//! `auth.v1`, `users.v1` and `products.v1` contracts (`support/fakes.rs`),
//! since the real ones live elsewhere.

#[path = "support/fakes.rs"]
mod fakes;

use std::collections::BTreeSet;

use fakes::Fakes;
use reqwest::{Method, Response, StatusCode};
use room619::{
    RunningNode,
    config::{Config, ConfigLoader, InstanceConfig},
    middleware::validation::{FieldViolation, Invalid},
    service::BuiltService,
};
use serde_json::{Value, json};
use tonic::Status;

/// A node configuration: port 0, `extra` TOML.
fn config(extra: &str) -> Config {
    let toml = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\nname = \"gateway-test\"\ndrain_timeout = \"2s\"\n{extra}"
    );
    ConfigLoader::new()
        .toml_str(toml)
        .without_env()
        .load()
        .unwrap()
}

async fn start(config: Config, services: impl IntoIterator<Item = BuiltService>) -> RunningNode {
    services
        .into_iter()
        .fold(
            room619::Node::builder().config(config),
            room619::NodeBuilder::service,
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// A node with the gateway and the three fakes, verifying the fake tokens.
struct Shop {
    node: RunningNode,
    fakes: Fakes,
    http: reqwest::Client,
}

impl Shop {
    async fn start() -> Self {
        Self::start_with("").await
    }

    async fn start_with(extra: &str) -> Self {
        let fakes = Fakes::default();
        let mut services = vec![shop::gateway::service().unwrap()];
        services.extend(fakes.services().unwrap());
        let node = start(config(&format!("{}{extra}", fakes::auth_toml())), services).await;
        Self {
            node,
            fakes,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.local_addr())
    }

    /// `method path` with `token` and a JSON `body`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Signs `email` up; its user id and access token.
    async fn sign_up(&self, email: &str) -> (String, String) {
        let body = json!({"email": email, "password": "long enough", "name": "Someone"});
        let response = self
            .call(Method::POST, "/v1/auth/signup", None, Some(body))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let reply: Value = response.json().await.unwrap();
        (
            reply["user_id"].as_str().unwrap().to_owned(),
            reply["tokens"]["access_token"].as_str().unwrap().to_owned(),
        )
    }
}

/// A problem+json answer with `status`; its body.
async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// A `200`/`201` JSON answer; its body.
async fn json_ok(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "{response:?}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// An answer carrying tokens is kept by no cache.
fn not_to_be_cached(response: &Response) {
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "{response:?}"
    );
    assert_eq!(response.headers()["pragma"], "no-cache", "{response:?}");
}

#[tokio::test]
async fn sign_up_login_and_refresh_are_public_and_map_their_errors() {
    let shop = Shop::start().await;
    let body = json!({"email": "ada@example.com", "password": "long enough", "name": "Ada"});
    let response = shop
        .call(Method::POST, "/v1/auth/signup", None, Some(body.clone()))
        .await;
    not_to_be_cached(&response);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let reply = json_ok(response, StatusCode::CREATED).await;
    let user_id = reply["user_id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/users/{user_id}"));
    assert_eq!(reply["tokens"]["token_type"], "Bearer");
    assert_eq!(reply["tokens"]["expires_in"], 3600);

    let taken = shop
        .call(Method::POST, "/v1/auth/signup", None, Some(body))
        .await;
    assert!(
        problem(taken, 409).await["detail"]
            .as_str()
            .unwrap()
            .contains("taken")
    );

    let wrong = json!({"email": "ada@example.com", "password": "not it at all"});
    let response = shop
        .call(Method::POST, "/v1/auth/login", None, Some(wrong))
        .await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(response, 401).await;

    let right = json!({"email": "ada@example.com", "password": "long enough"});
    let response = shop
        .call(Method::POST, "/v1/auth/login", None, Some(right))
        .await;
    not_to_be_cached(&response);
    let pair = json_ok(response, StatusCode::OK).await;
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    let response = shop
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(refresh.clone()),
        )
        .await;
    not_to_be_cached(&response);
    let renewed = json_ok(response, StatusCode::OK).await;
    assert_ne!(renewed["refresh_token"], pair["refresh_token"]);
    let reused = shop
        .call(Method::POST, "/v1/auth/refresh", None, Some(refresh))
        .await;
    problem(reused, 401).await;
}

#[tokio::test]
async fn logout_is_public_answers_what_it_ended_and_maps_its_errors() {
    let shop = Shop::start().await;
    let body = json!({"email": "joan@example.com", "password": "long enough", "name": "Joan"});
    let signed = json_ok(
        shop.call(Method::POST, "/v1/auth/signup", None, Some(body))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let token = signed["tokens"]["refresh_token"].clone();
    let logout = |body: Value| shop.call(Method::POST, "/v1/auth/logout", None, Some(body));

    let ended = json_ok(
        logout(json!({"refresh_token": token})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ended, json!({"ended": 1}));
    // Its login has ended: nothing more to end, and not an error.
    let again = json_ok(
        logout(json!({"refresh_token": token})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again, json!({"ended": 0}));
    let refreshed = shop
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await;
    problem(refreshed, 401).await;

    // Every login needs a token that could still be refreshed.
    let everywhere = logout(json!({"refresh_token": token, "everywhere": true})).await;
    problem(everywhere, 401).await;

    // Bad bodies: not of the shape (400), or a token that breaks its rules (422).
    for (bad, status) in [
        (json!({}), 400),
        (json!({"refresh_token": "x", "all": true}), 400),
        (json!({"refresh_token": "x", "everywhere": "yes"}), 400),
        (json!({"refresh_token": "x".repeat(4097)}), 422),
    ] {
        problem(logout(bad).await, status).await;
    }
    let empty = logout(json!({"refresh_token": ""})).await;
    let detail = problem(empty, 422).await;
    assert!(detail.to_string().contains("refresh_token"), "{detail}");
}

#[tokio::test]
async fn the_callers_token_reaches_the_services_as_grpc_metadata() {
    let shop = Shop::start().await;
    let (id, token) = shop.sign_up("grace@example.com").await;
    let user = json_ok(
        shop.call(Method::GET, &format!("/v1/users/{id}"), Some(&token), None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(user["email"], "grace@example.com");
    assert_eq!(user["name"], "Someone");

    let seen = shop.fakes.seen();
    let get = seen.iter().rev().find(|s| s.rpc == "GetUser").unwrap();
    assert_eq!(
        get.authorization.as_deref(),
        Some(&*format!("Bearer {token}"))
    );
    assert_eq!(get.subject.as_deref(), Some(&*id));
    // The public sign-up forwarded no token.
    let sign_up = seen.iter().find(|s| s.rpc == "SignUp").unwrap();
    assert_eq!(sign_up.authorization, None);
}

#[tokio::test]
async fn routes_other_than_auth_need_a_bearer_token() {
    let shop = Shop::start().await;
    for (method, path) in [
        (Method::GET, "/v1/users"),
        (Method::GET, "/v1/users/u1"),
        (Method::DELETE, "/v1/users/u1"),
        (Method::GET, "/v1/products"),
        (Method::GET, "/v1/products/p1"),
    ] {
        let response = shop.call(method.clone(), path, None, None).await;
        assert!(response.headers().contains_key("www-authenticate"));
        problem(response, 401).await;
        let forged = shop
            .call(method.clone(), path, Some("not-a-jwt"), None)
            .await;
        assert!(forged.headers().contains_key("www-authenticate"));
        problem(forged, 401).await;
        let basic = shop
            .http
            .request(method, shop.url(path))
            .basic_auth("ada", Some("pw"))
            .send()
            .await
            .unwrap();
        problem(basic, 401).await;
    }
    assert!(shop.fakes.seen().is_empty(), "nothing reached the services");
}

#[tokio::test]
async fn grpc_codes_become_http_statuses_with_problem_documents() {
    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("codes@example.com").await;
    let violations = Status::from(Invalid::new(vec![FieldViolation {
        field: "name".to_owned(),
        detail: "must not be rude".to_owned(),
    }]));
    // A service's rate limit says when to retry; a full bulkhead does not.
    let mut limited = Status::resource_exhausted("rate limit exceeded; retry in 7s");
    limited
        .metadata_mut()
        .insert("retry-after", "7".parse().unwrap());
    let bulkhead = room619::resilience::Rejection::bulkhead_full("products", 256, 0);
    let cases = [
        (Status::invalid_argument("page_token is stale"), 400),
        (Status::unauthenticated("token revoked"), 401),
        (Status::permission_denied("not yours"), 403),
        (Status::not_found("no such product"), 404),
        (Status::already_exists("exists"), 409),
        (Status::failed_precondition("at version 3"), 412),
        (limited, 429),
        (bulkhead.status().clone(), 503),
        (Status::resource_exhausted("queue of 1000 full"), 503),
        (Status::cancelled("the upstream went away"), 503),
        (Status::unavailable("database down"), 503),
        (Status::deadline_exceeded("too slow"), 504),
        (Status::internal("SELECT secret FROM db failed"), 500),
    ];
    for (status, expected) in cases {
        let message = status.message().to_owned();
        shop.fakes.fail_next(status);
        let response = shop
            .call(Method::GET, "/v1/products/p1", Some(&token), None)
            .await;
        assert_eq!(
            response.headers().contains_key("www-authenticate"),
            expected == 401
        );
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        let body = problem(response, expected).await;
        let detail = body["detail"].as_str().unwrap();
        // What is behind the gateway stays behind it.
        match expected {
            500 => assert_eq!(detail, "the products service failed"),
            503 => assert_eq!(detail, "the products service is unavailable; retry shortly"),
            504 => assert_eq!(detail, "the products service did not answer in time"),
            429 => assert_eq!(detail, "rate limit exceeded; retry in 7s"),
            _ => assert_eq!(detail, message),
        }
        let waits = match expected {
            429 => Some("7"),
            503 => Some("1"),
            _ => None,
        };
        assert_eq!(retry_after.as_deref(), waits, "{message}");
    }
    shop.fakes.fail_next(violations);
    let body = json!({"name": "Rude", "price_cents": 1});
    let response = shop
        .call(Method::POST, "/v1/products", Some(&token), Some(body))
        .await;
    let body = problem(response, 422).await;
    assert_eq!(
        body["errors"],
        json!([{"field": "name", "detail": "must not be rude"}])
    );
}

#[tokio::test]
async fn invalid_sign_ups_list_every_field_error() {
    let shop = Shop::start().await;
    let bad = json!({"email": "no-at-sign", "password": "short", "name": ""});
    let response = shop
        .call(Method::POST, "/v1/auth/signup", None, Some(bad))
        .await;
    let body = problem(response, 422).await;
    let fields: BTreeSet<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, BTreeSet::from(["email", "name", "password"]));
    // An address or a name with invisible format characters, which would
    // look like another's (or empty).
    let invisible = json!({
        "email": "ad\u{200b}a@example.com",
        "password": "long enough",
        "name": "A\u{2060}da",
    });
    let response = shop
        .call(Method::POST, "/v1/auth/signup", None, Some(invisible))
        .await;
    let body = problem(response, 422).await;
    let errors = body["errors"].as_array().unwrap();
    let fields: BTreeSet<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, BTreeSet::from(["email", "name"]), "{body}");
    assert!(
        errors.iter().all(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("invisible format characters")),
        "{body}"
    );
    assert!(
        shop.fakes.seen().is_empty(),
        "invalid sign-ups never reach the services"
    );
}

#[tokio::test]
async fn invalid_bodies_list_every_field_error() {
    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("fields@example.com").await;
    let bad = json!({"name": "x".repeat(201), "price_cents": -1, "description": "d"});
    let response = shop
        .call(Method::POST, "/v1/products", Some(&token), Some(bad))
        .await;
    let body = problem(response, 422).await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    let response = shop
        .call(
            Method::PATCH,
            "/v1/products/p1",
            Some(&token),
            Some(json!({"price_cents": 10_000_000_001_i64})),
        )
        .await;
    problem(response, 422).await;
    // Names of spaces only, escape sequences and NULs, in a name, a
    // description, an update or a search: each a field error, never sent on.
    for (method, path, body, field) in [
        (
            Method::POST,
            "/v1/products",
            json!({"name": "   ", "price_cents": 1}),
            "name",
        ),
        (
            Method::POST,
            "/v1/products",
            json!({"name": "\u{1b}[2J", "price_cents": 1}),
            "name",
        ),
        (
            Method::POST,
            "/v1/products",
            json!({"name": "Pot", "description": "a\u{0}b", "price_cents": 1}),
            "description",
        ),
        (
            Method::PATCH,
            "/v1/products/p1",
            json!({"name": " \t "}),
            "name",
        ),
        // Invisible format characters: a name that looks empty, or like
        // another's, or reverses what follows it.
        (
            Method::POST,
            "/v1/products",
            json!({"name": "\u{200b}", "price_cents": 1}),
            "name",
        ),
        (
            Method::PATCH,
            "/v1/products/p1",
            json!({"name": "Pot \u{202e}gnirts"}),
            "name",
        ),
        // A change that names nothing to change: the body as a whole.
        (Method::PATCH, "/v1/products/p1", json!({}), ""),
    ] {
        let response = shop
            .call(method, path, Some(&token), Some(body.clone()))
            .await;
        let problem = problem(response, 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let response = shop
        .call(Method::GET, "/v1/products?q=%00", Some(&token), None)
        .await;
    let status = response.status();
    assert!(status == 400 || status == 422, "{status}");
    let fine = json!({"name": "Pot", "description": "line\nbreak\tand tab", "price_cents": 1});
    let response = shop
        .call(Method::POST, "/v1/products", Some(&token), Some(fine))
        .await;
    assert_ne!(response.status(), 422);
    assert!(
        shop.fakes
            .seen()
            .iter()
            .all(|s| s.rpc == "SignUp" || s.rpc == "CreateProduct"),
        "invalid requests never reach the services"
    );
    assert_eq!(
        shop.fakes
            .seen()
            .iter()
            .filter(|s| s.rpc == "CreateProduct")
            .count(),
        1
    );
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_problems() {
    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("malformed@example.com").await;
    let raw = |method: Method, path: &str, content_type: &str, body: &'static str| {
        shop.http
            .request(method, shop.url(path))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json = "application/json";
    let cases = [
        (
            raw(Method::POST, "/v1/products", json, "{\"name\": ")
                .await
                .unwrap(),
            400,
        ),
        (
            raw(Method::POST, "/v1/products", json, "[1, 2]")
                .await
                .unwrap(),
            400,
        ),
        (
            raw(Method::POST, "/v1/products", "text/plain", "{}")
                .await
                .unwrap(),
            415,
        ),
        (
            raw(
                Method::POST,
                "/v1/products",
                json,
                r#"{"name":"a","price_cents":1,"colour":"red"}"#,
            )
            .await
            .unwrap(),
            400,
        ),
        (
            raw(
                Method::POST,
                "/v1/products",
                json,
                r#"{"name":"a","price_cents":1.5}"#,
            )
            .await
            .unwrap(),
            400,
        ),
        (
            raw(Method::PATCH, "/v1/users/a%20b", json, r#"{"name":"x"}"#)
                .await
                .unwrap(),
            400,
        ),
        (
            raw(Method::PUT, "/v1/users/u1", json, "{}").await.unwrap(),
            405,
        ),
        (
            raw(Method::GET, "/v1/nothing-here", json, "")
                .await
                .unwrap(),
            404,
        ),
    ];
    for (response, status) in cases {
        if status == 405 {
            assert!(response.headers().contains_key("allow"));
        }
        problem(response, status).await;
    }
    for (path, status) in [
        ("/v1/products/%C3%A9", 400),
        (&*format!("/v1/products/{}", "x".repeat(65)), 400),
        ("/v1/products?page_size=abc", 400),
        ("/v1/products?page_size=-1", 400),
        ("/v1/products?page_size=1&page_size=2", 400),
        ("/v1/products?colour=red", 400),
        ("/v1/products?page_size=101", 422),
        ("/v1/products?page_size=0", 422),
        ("/v1/products?owner_id=a/b", 422),
        ("/v1/users?page_size=1000", 422),
    ] {
        let response = shop.call(Method::GET, path, Some(&token), None).await;
        let body = problem(response, status).await;
        assert!(
            !body["detail"].as_str().unwrap().contains("Failed to"),
            "{body}"
        );
    }
    assert!(shop.fakes.seen().iter().all(|s| s.rpc == "SignUp"));
}

#[tokio::test]
async fn pagination_and_filters_reach_the_services() {
    let shop = Shop::start().await;
    let (ada, ada_token) = shop.sign_up("ada@example.com").await;
    let (_, bob_token) = shop.sign_up("bob@example.com").await;
    for (token, name) in [
        (&ada_token, "Red teapot"),
        (&ada_token, "Blue TEAPOT"),
        (&ada_token, "Mug"),
        (&bob_token, "Teapot lid"),
    ] {
        let body = json!({"name": name, "price_cents": 100});
        let response = shop
            .call(Method::POST, "/v1/products", Some(token), Some(body))
            .await;
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let product = json_ok(response, StatusCode::CREATED).await;
        assert_eq!(
            location,
            format!("/v1/products/{}", product["id"].as_str().unwrap())
        );
        assert_eq!(product["description"], "");
    }
    let list = async |path: String| shop.call(Method::GET, &path, Some(&ada_token), None).await;
    let first = json_ok(
        list("/v1/products?page_size=2&q=teapot".into()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["products"].as_array().unwrap().len(), 2);
    let next = first["next_page_token"].as_str().unwrap();
    let second = json_ok(
        list(format!(
            "/v1/products?page_size=2&q=teapot&page_token={next}"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["products"][0]["name"], "Teapot lid");
    assert!(second.get("next_page_token").is_none(), "{second}");
    let own = json_ok(
        list(format!("/v1/products?owner_id={ada}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(own["products"].as_array().unwrap().len(), 3);
    let seen = shop.fakes.seen();
    let calls: Vec<_> = seen.iter().filter_map(|s| s.list.clone()).collect();
    assert_eq!(
        calls,
        [
            (2, "teapot".to_owned(), String::new()),
            (2, "teapot".to_owned(), String::new()),
            (0, String::new(), ada.clone()),
        ]
    );

    let users = json_ok(list("/v1/users?page_size=1".into()).await, StatusCode::OK).await;
    assert_eq!(users["users"][0]["email"], "ada@example.com");
    let next = users["next_page_token"].as_str().unwrap();
    let users = json_ok(
        list(format!("/v1/users?page_token={next}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(users["users"][0]["email"], "bob@example.com");
    let stale = list("/v1/users?page_token=forged".into()).await;
    problem(stale, 400).await;
}

#[tokio::test]
async fn only_owners_change_or_delete_and_deleted_things_are_gone() {
    let shop = Shop::start().await;
    let (ada, ada_token) = shop.sign_up("ada@example.com").await;
    let (robert, bob_token) = shop.sign_up("bob@example.com").await;
    let body = json!({"name": "Teapot", "description": "Stout", "price_cents": 1250});
    let product = json_ok(
        shop.call(Method::POST, "/v1/products", Some(&ada_token), Some(body))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(product["owner_id"], ada.as_str());
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let cheaper = json!({"price_cents": 999});
    let response = shop
        .call(
            Method::PATCH,
            &path,
            Some(&bob_token),
            Some(cheaper.clone()),
        )
        .await;
    problem(response, 403).await;
    let changed = json_ok(
        shop.call(Method::PATCH, &path, Some(&ada_token), Some(cheaper))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["price_cents"], 999);
    assert_eq!(changed["name"], "Teapot");
    problem(
        shop.call(Method::DELETE, &path, Some(&bob_token), None)
            .await,
        403,
    )
    .await;
    let deleted = shop
        .call(Method::DELETE, &path, Some(&ada_token), None)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(
        shop.call(Method::GET, &path, Some(&ada_token), None).await,
        404,
    )
    .await;

    let bob_path = format!("/v1/users/{robert}");
    let rename = json!({"name": "Robert"});
    let response = shop
        .call(
            Method::PATCH,
            &bob_path,
            Some(&ada_token),
            Some(rename.clone()),
        )
        .await;
    problem(response, 403).await;
    let renamed = json_ok(
        shop.call(Method::PATCH, &bob_path, Some(&bob_token), Some(rename))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(renamed["name"], "Robert");
    let gone = shop
        .call(Method::DELETE, &bob_path, Some(&bob_token), None)
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    problem(
        shop.call(Method::GET, &bob_path, Some(&ada_token), None)
            .await,
        404,
    )
    .await;
}

/// A product's URL and its owner's token, on a [`Shop`].
struct Product<'a> {
    shop: &'a Shop,
    path: String,
    token: String,
}

impl Product<'_> {
    /// `method` on the product with the header `name: value` and a JSON
    /// `body` (`price_cents` set to it, if any).
    async fn send(&self, method: Method, header: (&str, &str), price: Option<i64>) -> Response {
        self.send_all(method, &[header], price).await
    }

    /// [`send`](Self::send) with every header of `headers`.
    async fn send_all(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        price: Option<i64>,
    ) -> Response {
        let mut request = self
            .shop
            .http
            .request(method, self.shop.url(&self.path))
            .bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(price) = price {
            request = request.json(&json!({ "price_cents": price }));
        }
        request.send().await.unwrap()
    }

    /// `If-Match: value` on a `PATCH` of the price.
    async fn patch(&self, value: &str, price: i64) -> Response {
        self.send(Method::PATCH, ("if-match", value), Some(price))
            .await
    }

    /// The product now.
    async fn read(&self) -> Value {
        let response = self
            .shop
            .call(Method::GET, &self.path, Some(&self.token), None);
        json_ok(response.await, StatusCode::OK).await
    }
}

#[tokio::test]
async fn a_products_version_is_its_etag_and_if_match_guards_changes() {
    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("ada@example.com").await;
    let body = json!({"name": "Teapot", "price_cents": 1250});
    let created = shop
        .call(Method::POST, "/v1/products", Some(&token), Some(body))
        .await;
    assert_eq!(created.headers()["etag"], "\"1\"");
    let created = json_ok(created, StatusCode::CREATED).await;
    assert_eq!(created["version"], 1);
    let product = Product {
        shop: &shop,
        path: format!("/v1/products/{}", created["id"].as_str().unwrap()),
        token,
    };
    reads_answer_304_while_unchanged(&product, &created).await;
    edits_from_a_stale_read_are_refused(&product).await;
    malformed_conditions_are_400(&product).await;
    // A stranger is refused as one (403), whatever `If-Match` names: a
    // precondition counts only for a change that could otherwise be made.
    let (_, stranger) = shop.sign_up("bob@example.com").await;
    let strangers = Product {
        shop: &shop,
        path: product.path.clone(),
        token: stranger,
    };
    for condition in ["\"3\"", "\"1\", \"2\"", "W/\"3\""] {
        problem(strangers.patch(condition, 1).await, 403).await;
        let deleted = strangers.send(Method::DELETE, ("if-match", condition), None);
        problem(deleted.await, 403).await;
    }

    let stale = product
        .send(Method::DELETE, ("if-match", "\"2\""), None)
        .await;
    problem(stale, 412).await;
    let any = product.send(Method::DELETE, ("if-match", "*"), None).await;
    assert_eq!(any.status(), StatusCode::NO_CONTENT);
    let gone = shop.call(Method::GET, &product.path, Some(&product.token), None);
    problem(gone.await, 404).await;
}

/// RFC 9110 §13.1.2: a change with an `If-None-Match` naming the version
/// the product is at (weakly), or `*`, is refused with `412`, after the
/// refusals that come first (a stranger's `403`); one naming other versions
/// applies, and only at the version it was checked against.
#[tokio::test]
async fn if_none_match_naming_the_current_version_refuses_changes() {
    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("ada@example.com").await;
    let body = json!({"name": "Teapot", "price_cents": 1250});
    let created = shop
        .call(Method::POST, "/v1/products", Some(&token), Some(body))
        .await;
    let created = json_ok(created, StatusCode::CREATED).await;
    let product = Product {
        shop: &shop,
        path: format!("/v1/products/{}", created["id"].as_str().unwrap()),
        token,
    };
    let (_, stranger) = shop.sign_up("bob@example.com").await;
    let strangers = Product {
        shop: &shop,
        path: product.path.clone(),
        token: stranger,
    };
    for current in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        for method in [Method::PATCH, Method::DELETE] {
            let condition = ("if-none-match", current);
            let refused = product.send(method.clone(), condition, Some(5)).await;
            let body = problem(refused, 412).await;
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("If-None-Match") && detail.contains("version 1"),
                "{current}: {body}"
            );
            let stranger = strangers.send(method, condition, Some(5)).await;
            problem(stranger, 403).await;
        }
    }
    // `If-Match` naming the version does not lift it.
    let both = [("if-match", "\"1\""), ("if-none-match", "\"1\"")];
    problem(product.send_all(Method::PATCH, &both, Some(5)).await, 412).await;
    assert_eq!(product.read().await["version"], 1, "nothing changed");

    let changed = product
        .send(Method::PATCH, ("if-none-match", "\"2\", W/\"3\""), Some(5))
        .await;
    assert_eq!(changed.headers()["etag"], "\"2\"");
    assert_eq!(json_ok(changed, StatusCode::OK).await["price_cents"], 5);
    let now = product
        .send(Method::DELETE, ("if-none-match", "W/\"2\""), None)
        .await;
    problem(now, 412).await;
    let malformed = product
        .send(Method::DELETE, ("if-none-match", "2"), None)
        .await;
    problem(malformed, 400).await;
    let stale = product
        .send(Method::DELETE, ("if-none-match", "\"1\""), None)
        .await;
    assert_eq!(stale.status(), StatusCode::NO_CONTENT);
    // Nothing there: `*` holds, and the change finds nothing.
    let gone = product
        .send(Method::DELETE, ("if-none-match", "*"), None)
        .await;
    problem(gone, 404).await;
}

async fn reads_answer_304_while_unchanged(product: &Product<'_>, created: &Value) {
    let read = product.send(Method::GET, ("if-none-match", ""), None).await;
    assert_eq!(read.headers()["etag"], "\"1\"");
    assert_eq!(&json_ok(read, StatusCode::OK).await, created);
    for unchanged in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        let response = product
            .send(Method::GET, ("if-none-match", unchanged), None)
            .await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{unchanged}");
        assert_eq!(response.headers()["etag"], "\"1\"");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let changed = product
        .send(Method::GET, ("if-none-match", "\"2\""), None)
        .await;
    assert_eq!(&json_ok(changed, StatusCode::OK).await, created);
}

/// Two edits from the read of version 1: the second is refused; a list
/// naming the current version applies at it; weak tags and tags the gateway
/// never issued name none.
async fn edits_from_a_stale_read_are_refused(product: &Product<'_>) {
    let first = product.patch("\"1\"", 999).await;
    assert_eq!(first.headers()["etag"], "\"2\"");
    assert_eq!(json_ok(first, StatusCode::OK).await["version"], 2);
    let body = problem(product.patch("\"1\"", 5).await, 412).await;
    assert!(
        body["detail"].as_str().unwrap().contains("version 2"),
        "{body}"
    );
    let now = product.read().await;
    assert_eq!(
        (now["price_cents"].as_i64(), now["version"].as_i64()),
        (Some(999), Some(2))
    );

    let listed = product.patch("\"1\", \"2\"", 7).await;
    assert_eq!(json_ok(listed, StatusCode::OK).await["version"], 3);
    for never in ["W/\"3\"", "\"abc\", \"1\"", "\"03\""] {
        let body = problem(product.patch(never, 8).await, 412).await;
        assert!(
            body["detail"].as_str().unwrap().contains("version 3"),
            "{never}: {body}"
        );
    }
    let missing = Product {
        shop: product.shop,
        path: "/v1/products/nope".to_owned(),
        token: product.token.clone(),
    };
    problem(missing.patch("\"1\", \"2\"", 8).await, 404).await;
}

async fn malformed_conditions_are_400(product: &Product<'_>) {
    for malformed in ["3", "\"3", "*, \"3\"", "\"3\" \"4\"", ","] {
        for method in [Method::PATCH, Method::DELETE] {
            let response = product.send(method, ("if-match", malformed), Some(8)).await;
            let body = problem(response, 400).await;
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("If-Match"), "{malformed}: {body}");
        }
        let response = product
            .send(Method::GET, ("if-none-match", malformed), None)
            .await;
        problem(response, 400).await;
    }
    assert_eq!(product.read().await["version"], 3, "nothing changed");
}

/// The deadline the services see: the client's, but no further than the
/// gateway's maximum (`99999999H` is eleven thousand years), or the
/// default without one.
#[tokio::test]
async fn a_clients_deadline_reaches_the_services_no_further_than_the_maximum() {
    use std::time::Duration;

    use shop::gateway::{DEFAULT_TIMEOUT, MAX_TIMEOUT};

    let shop = Shop::start().await;
    let (_, token) = shop.sign_up("deadline@example.com").await;
    for (asked, most) in [
        (None, DEFAULT_TIMEOUT),
        (Some("99999999H"), MAX_TIMEOUT),
        (Some("120S"), MAX_TIMEOUT),
        (Some("20S"), Duration::from_secs(20)),
        (Some("2S"), Duration::from_secs(2)),
    ] {
        let mut request = shop
            .http
            .get(shop.url("/v1/products/p1"))
            .bearer_auth(&token);
        if let Some(asked) = asked {
            request = request.header("x-request-timeout", asked);
        }
        problem(request.send().await.unwrap(), 404).await;
        let seen = shop.fakes.seen();
        let get = seen.iter().rev().find(|s| s.rpc == "GetProduct").unwrap();
        let left = get.timeout.expect("the call carries a deadline");
        assert!(left <= most, "{asked:?}: {left:?}");
        assert!(
            left > most.checked_sub(Duration::from_secs(2)).unwrap(),
            "{asked:?}: {left:?}"
        );
    }
}

#[tokio::test]
async fn services_that_are_not_there_answer_503() {
    // No `[auth]` on this node: the gateway still insists on a bearer token.
    let node = start(config(""), [shop::gateway::service().unwrap()]).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", node.local_addr());
    let response = http.get(url("/v1/products")).send().await.unwrap();
    problem(response, 401).await;
    let response = http
        .get(url("/v1/products"))
        .bearer_auth("any")
        .send()
        .await
        .unwrap();
    let body = problem(response, 503).await;
    assert_eq!(
        body["detail"], "the products service is unavailable; retry shortly",
        "no word of discovery or addresses"
    );
    let body = json!({"email": "a@b.c", "password": "long enough"});
    let response = http
        .post(url("/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(response, 503).await;
}

#[tokio::test]
async fn rate_limits_of_the_config_answer_429() {
    let shop = Shop::start_with(
        "[[rate_limit.rules]]\nroute = \"/v1/auth/login\"\nmethod = \"POST\"\nlimit = 1\nperiod = \"1m\"\nburst = 1\n",
    )
    .await;
    let body = json!({"email": "a@b.c", "password": "wrong"});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = shop
            .call(Method::POST, "/v1/auth/login", None, Some(body.clone()))
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            problem(response, 429).await;
        }
    }
    assert_eq!(statuses.first(), Some(&401));
    assert_eq!(statuses.last(), Some(&429));
}

#[tokio::test]
async fn a_gateway_on_another_node_forwards_the_token_over_the_network() {
    let fakes = Fakes::default();
    let backend = start(config(&fakes::auth_toml()), fakes.services().unwrap()).await;
    let mut front = config(&fakes::auth_toml());
    front.discovery.instances = ["auth", "users", "products"]
        .into_iter()
        .map(|name| InstanceConfig {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            address: backend.local_addr().to_string(),
        })
        .collect();
    let gateway = start(front, [shop::gateway::service().unwrap()]).await;
    let shop = Shop {
        node: gateway,
        fakes,
        http: reqwest::Client::new(),
    };
    let (id, token) = shop.sign_up("remote@example.com").await;
    let user = json_ok(
        shop.call(Method::GET, &format!("/v1/users/{id}"), Some(&token), None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(user["id"], id.as_str());
    let seen = shop.fakes.seen();
    let get = seen.iter().find(|s| s.rpc == "GetUser").unwrap();
    assert_eq!(get.subject.as_deref(), Some(&*id));
    assert_eq!(
        get.authorization.as_deref(),
        Some(&*format!("Bearer {token}"))
    );
    drop(backend);
}

/// Every `$ref` in `value` (recursively).
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                out.push(target);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Follows a `#/components/...` reference.
fn resolve<'a>(doc: &'a Value, target: &str) -> &'a Value {
    let pointer = target.strip_prefix('#').unwrap();
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("dangling $ref {target}"))
}

#[tokio::test]
async fn the_openapi_document_is_public_and_describes_every_route() {
    let shop = Shop::start().await;
    let response = shop.call(Method::GET, "/openapi.json", None, None).await;
    let doc = json_ok(response, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["version"], "1.0.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "An access token from `/v1/auth/*`"})
    );
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    for target in targets {
        resolve(&doc, target);
    }
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.insert(format!("{} {path}", method.to_uppercase()));
            check_operation(&doc, path, method, op);
            // The route exists: not 404 or 405 without a token.
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = shop.call(method, path, None, None).await.status();
            assert!(status != 404 && status != 405, "{path}: {status}");
        }
    }
    let expected = [
        "POST /v1/auth/signup",
        "POST /v1/auth/login",
        "POST /v1/auth/refresh",
        "POST /v1/auth/logout",
        "GET /v1/users",
        "GET /v1/users/{id}",
        "PATCH /v1/users/{id}",
        "DELETE /v1/users/{id}",
        "GET /v1/products",
        "POST /v1/products",
        "GET /v1/products/{id}",
        "PATCH /v1/products/{id}",
        "DELETE /v1/products/{id}",
    ];
    assert_eq!(
        operations,
        expected.into_iter().map(str::to_owned).collect()
    );
    let params = |path: &str| -> BTreeSet<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["in"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        params("/v1/users"),
        ["query:page_size", "query:page_token"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        params("/v1/products"),
        [
            "query:owner_id",
            "query:page_size",
            "query:page_token",
            "query:q"
        ]
        .map(String::from)
        .into()
    );
    let size = &doc["paths"]["/v1/products"]["get"]["parameters"];
    let size = size
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_size")
        .unwrap();
    assert_eq!(
        (&size["schema"]["minimum"], &size["schema"]["maximum"]),
        (&json!(1), &json!(100))
    );
    check_links(&doc);
    let product = &doc["paths"]["/v1/products/{id}"];
    // A read that is not modified is `304`, never `412`.
    assert!(product["get"]["responses"]["412"].is_null());
    for (method, header, status) in [
        ("get", "If-None-Match", "304"),
        ("patch", "If-Match", "412"),
        ("patch", "If-None-Match", "412"),
        ("delete", "If-Match", "412"),
        ("delete", "If-None-Match", "412"),
    ] {
        let op = &product[method];
        let condition = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == header);
        let condition = condition.unwrap_or_else(|| panic!("{method} lacks {header}"));
        assert_eq!(condition["in"], "header");
        assert_ne!(condition["required"], true);
        assert!(
            op["responses"][status].is_object(),
            "{method} lacks {status}"
        );
    }
    for (method, status) in [("get", "200"), ("patch", "200"), ("post", "201")] {
        let path = if method == "post" {
            "/v1/products"
        } else {
            "/v1/products/{id}"
        };
        let headers = &doc["paths"][path][method]["responses"][status]["headers"];
        assert!(headers["ETag"].is_object(), "{method} {status}: {headers}");
    }
    let signup = resolve(&doc, "#/components/schemas/SignUpBody");
    assert_eq!(signup["additionalProperties"], false);
    assert_eq!(signup["properties"]["password"]["minLength"], 8);
    assert_eq!(signup["required"], json!(["email", "password", "name"]));
}

/// The links from creations to the operations that take the new id.
fn check_links(doc: &Value) {
    let ids: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    for (path, method, status, pointer) in [
        ("/v1/auth/signup", "post", "201", "$response.body#/user_id"),
        ("/v1/products", "post", "201", "$response.body#/id"),
    ] {
        let links = doc["paths"][path][method]["responses"][status]["links"]
            .as_object()
            .unwrap();
        assert_eq!(links.len(), 3, "{path}");
        for link in links.values() {
            assert!(
                ids.contains(link["operationId"].as_str().unwrap()),
                "{link}"
            );
            assert_eq!(link["parameters"]["id"], pointer);
        }
    }
}

/// One operation: ids, security, parameters and every response's media type.
fn check_operation(doc: &Value, path: &str, method: &str, op: &Value) {
    assert!(op["operationId"].is_string(), "{method} {path}");
    let public = path.starts_with("/v1/auth/");
    assert_eq!(op.get("security").is_none(), public, "{method} {path}");
    if !public {
        assert_eq!(op["security"], json!([{"bearer": []}]));
    }
    if path.ends_with("{id}") {
        let id = &op["parameters"][0];
        assert_eq!(
            (&id["in"], &id["name"], &id["required"]),
            (&json!("path"), &json!("id"), &json!(true))
        );
        assert_eq!(id["schema"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    }
    let has_body = op.get("requestBody").is_some();
    assert_eq!(
        has_body,
        method == "post" || method == "patch",
        "{method} {path}"
    );
    if has_body {
        let body = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        let schema = resolve(doc, body.as_str().unwrap());
        assert_eq!(schema["additionalProperties"], false, "{body}");
    }
    let responses = op["responses"].as_object().unwrap();
    let mut statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
    statuses.sort_unstable();
    for needed in ["400", "429", "500", "503", "504"] {
        assert!(statuses.contains(&needed), "{method} {path} lacks {needed}");
    }
    let needed: &[&str] = match (public, has_body) {
        (false, true) => &["401", "403", "413", "415", "422"],
        (false, false) => &["401", "403"],
        (true, _) => &["413", "415", "422"],
    };
    for status in needed {
        assert!(statuses.contains(status), "{method} {path} lacks {status}");
    }
    for (status, response) in responses {
        let response = match response.get("$ref") {
            Some(target) => resolve(doc, target.as_str().unwrap()),
            None => response,
        };
        assert!(response["description"].is_string());
        if status == "204" || status == "304" {
            assert!(response.get("content").is_none());
        } else if status.starts_with('2') {
            assert!(response["content"]["application/json"]["schema"].is_object());
        } else {
            let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
    }
}
