//! Sign up → log in → create, list, search, update and delete products;
//! strangers are refused; bad input is refused and writes nothing; deleting a
//! user archives their products through the bus and closes their account.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Shop, User};

/// Names of the products of the listing checks.
fn names(page: &Value) -> Vec<String> {
    page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|product| product["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_customer_journey_through_the_gateway_in_one_process() {
    journey(&Shop::start("journey")).await;
}

/// The journey, against the gateway of `shop`.
pub async fn journey(shop: &Shop) {
    let alice = shop.sign_up("alice@example.com", "Alice").await;
    logins(shop).await;
    let lamp = catalog(shop, &alice).await;
    let bob = shop.sign_up("bob@example.com", "Bob").await;
    strangers_and_bad_input(shop, &alice, &bob, &lamp).await;
    deleting_a_user_archives_their_products(shop, &alice, &bob, &lamp).await;
}

async fn logins(shop: &Shop) {
    let login = |password: &'static str| {
        shop.call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "alice@example.com", "password": password})),
        )
    };
    let (status, tokens) = login("correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let (status, problem) = login("wrong horse battery").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, again) = shop
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": tokens["refresh_token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let (status, _) = shop
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": tokens["refresh_token"]})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a used refresh token is refused"
    );
}

/// Pages through the three products two at a time, and searches them.
async fn pages_and_search(shop: &Shop, token: Option<&str>) {
    let (status, first) = shop
        .call(Method::GET, "/v1/products?page_size=2", token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(names(&first), ["Desk lamp", "Floor LAMP"]);
    let next = first["next_page_token"].as_str().unwrap();
    let (_, second) = shop
        .call(
            Method::GET,
            &format!("/v1/products?page_size=2&page_token={next}"),
            token,
            None,
        )
        .await;
    assert_eq!(names(&second), ["Kettle"]);
    assert!(
        second.get("next_page_token").is_none_or(Value::is_null),
        "{second}"
    );

    let (_, found) = shop
        .call(Method::GET, "/v1/products?q=lamp", token, None)
        .await;
    assert_eq!(
        names(&found),
        ["Desk lamp", "Floor LAMP"],
        "search ignores case"
    );
}

/// Creates, pages, searches, updates and deletes; the lamp it keeps.
async fn catalog(shop: &Shop, alice: &User) -> Value {
    let lamp = shop.create_product(alice, "Desk lamp", 2_500).await;
    shop.create_product(alice, "Floor LAMP", 8_900).await;
    let kettle = shop.create_product(alice, "Kettle", 3_000).await;
    assert_eq!(lamp["owner_id"], alice.id.as_str());

    let token = Some(alice.token.as_str());
    pages_and_search(shop, token).await;

    let path = format!("/v1/products/{}", lamp["id"].as_str().unwrap());
    let (status, updated) = shop
        .call(
            Method::PATCH,
            &path,
            token,
            Some(json!({"price_cents": 1_999})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["price_cents"], 1_999);
    assert_eq!(updated["name"], "Desk lamp", "fields not sent are kept");
    assert_eq!(
        (&lamp["version"], &updated["version"]),
        (&json!(1), &json!(2))
    );
    // An edit made from the first read (version 1) would undo the one above.
    let (status, problem) = shop
        .call_with(
            Method::PATCH,
            &path,
            token,
            &[("if-match", "\"1\"")],
            Some(json!({"price_cents": 2_100})),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    let (status, updated) = shop
        .call_with(
            Method::PATCH,
            &path,
            token,
            &[("if-match", "\"2\"")],
            Some(json!({"price_cents": 2_100})),
        )
        .await;
    assert_eq!(
        (status, &updated["version"]),
        (StatusCode::OK, &json!(3)),
        "{updated}"
    );
    let (status, _) = shop
        .call_with(
            Method::GET,
            &path,
            token,
            &[("if-none-match", "\"3\"")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A change only if it changed since version 3: it did not.
    let (status, problem) = shop
        .call_with(
            Method::PATCH,
            &path,
            token,
            &[("if-none-match", "\"3\"")],
            Some(json!({"price_cents": 2_200})),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    // A change of nothing: no new version of the same product.
    let (status, problem) = shop
        .call(Method::PATCH, &path, token, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    let kettle_path = format!("/v1/products/{}", kettle["id"].as_str().unwrap());
    let (status, _) = shop.call(Method::DELETE, &kettle_path, token, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = shop.call(Method::GET, &kettle_path, token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    updated
}

async fn strangers_and_bad_input(shop: &Shop, alice: &User, bob: &User, lamp: &Value) {
    let path = format!("/v1/products/{}", lamp["id"].as_str().unwrap());
    let (status, problem) = shop
        .call(
            Method::PATCH,
            &path,
            Some(&bob.token),
            Some(json!({"price_cents": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = shop
        .call(Method::DELETE, &path, Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = shop
        .call(
            Method::DELETE,
            &format!("/v1/users/{}", alice.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only Alice deletes Alice");
    let (status, _) = shop.call(Method::GET, "/v1/products", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, before) = shop
        .call(
            Method::GET,
            "/v1/products?page_size=100",
            Some(&bob.token),
            None,
        )
        .await;
    let bad = [
        json!({"name": "", "description": "", "price_cents": 1}),
        json!({"name": "x", "description": "", "price_cents": -5}),
        json!({"name": "x", "description": "", "price_cents": 1, "colour": "red"}),
    ];
    for body in bad {
        let (status, problem) = shop
            .call(
                Method::POST,
                "/v1/products",
                Some(&bob.token),
                Some(body.clone()),
            )
            .await;
        assert!(status.is_client_error(), "{body} answered {status}");
        assert!(
            problem["title"].is_string() || problem["detail"].is_string(),
            "{problem}"
        );
    }
    let (_, after) = shop
        .call(
            Method::GET,
            "/v1/products?page_size=100",
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        names(&before),
        names(&after),
        "a refused request writes nothing"
    );
    let (status, _) = shop
        .call(
            Method::GET,
            "/v1/products/not a valid id!",
            Some(&bob.token),
            None,
        )
        .await;
    assert!(status.is_client_error());
}

async fn deleting_a_user_archives_their_products(
    shop: &Shop,
    alice: &User,
    bob: &User,
    lamp: &Value,
) {
    let bobs = shop.create_product(bob, "Bob's lamp", 100).await;
    let (status, _) = shop
        .call(
            Method::DELETE,
            &format!("/v1/users/{}", alice.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let path = format!("/v1/products/{}", lamp["id"].as_str().unwrap());
    let archived = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (_, product) = shop.call(Method::GET, &path, Some(&bob.token), None).await;
            if product["archived"] == true {
                return product;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("users.deleted never archived Alice's products");
    assert_eq!(archived["name"], "Desk lamp", "archived, not deleted");
    let (_, listed) = shop
        .call(Method::GET, "/v1/products?q=lamp", Some(&bob.token), None)
        .await;
    assert_eq!(names(&listed), [bobs["name"].as_str().unwrap()]);

    // The auth service consumed the same event: Alice can no longer log in.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (status, _) = shop
                .call(
                    Method::POST,
                    "/v1/auth/login",
                    None,
                    Some(
                        json!({"email": "alice@example.com", "password": "correct horse battery"}),
                    ),
                )
                .await;
            if status == StatusCode::UNAUTHORIZED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "Alice's account outlived her profile");
}

#[tokio::test]
async fn password_guessing_is_rate_limited_per_client() {
    let shop = Shop::start("guessing");
    shop.sign_up("eve@example.com", "Eve").await;
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let (status, _) = shop
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": "eve@example.com", "password": "guess guess guess"})),
            )
            .await;
        statuses.push(status);
    }
    // 10 a minute plus a burst of 10 per route (sign-up counts apart).
    let refused = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 5, "{statuses:?}");
    assert!(
        statuses[..20]
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );

    // The same port speaks gRPC: guessing there is limited as well.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", shop.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = shop_proto::auth::v1::auth_client::AuthClient::new(channel);
    let mut codes = Vec::new();
    for _ in 0..25 {
        let status = auth
            .login(shop_proto::auth::v1::LoginRequest {
                email: "eve@example.com".into(),
                password: "guess guess guess".into(),
            })
            .await
            .unwrap_err();
        codes.push(status.code());
    }
    let refused = codes
        .iter()
        .filter(|code| **code == tonic::Code::ResourceExhausted)
        .count();
    assert_eq!(refused, 5, "{codes:?}");
    assert!(
        codes[..20]
            .iter()
            .all(|code| *code == tonic::Code::Unauthenticated),
        "{codes:?}"
    );
}
