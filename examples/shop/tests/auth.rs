#![cfg(test)]
//! The auth service on a real node (127.0.0.1:0) with a real database: the
//! PostgreSQL at `SHOP_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, the machine's, as in
//! `scripts/test`), a fresh schema per test. The end-to-end tests
//! (`tests/e2e`) run the same flows on SQLite.
//!
//! `SignUp` calls the users service; `FakeUsers` below is TEST SCAFFOLDING
//! standing in for it (it records the calls and can be told to fail).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use room619::{
    RunningNode, ServiceBuilder,
    config::ConfigLoader,
    middleware::auth::{Principal, Requirement},
};
use serde_json::Value;
use shop::{
    auth::{self, Keys},
    settings::ShopSettings,
    store::Db,
};
use shop_proto::{
    auth::v1::{
        LoginRequest, LogoutRequest, RefreshRequest, SignUpRequest, SignUpResponse, TokenPair,
        auth_client::AuthClient,
    },
    users::v1::{
        CreateUserRequest, DeleteUserRequest, DeleteUserResponse, GetUserRequest, ListUsersRequest,
        ListUsersResponse, UpdateUserRequest, User, UserEvent,
        users_client::UsersClient,
        users_server::{Users, UsersServer},
    },
};
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_types::StatusExt as _;

/// What the fake users service saw: (id, email, name, caller, caller's scopes).
type Created = Arc<Mutex<Vec<(String, String, String, String, Vec<String>)>>>;

/// TEST SCAFFOLDING: a `users.v1.Users` that records `CreateUser` and
/// answers `fail_with` when set; the other methods are not used here.
#[derive(Clone, Default)]
struct FakeUsers {
    created: Created,
    fail_with: Option<Code>,
    /// How long `CreateUser` takes.
    delay: Duration,
    /// Set: the next `CreateUser` creates the user, then answers
    /// `DEADLINE_EXCEEDED` as if its answer were lost.
    lose_an_answer: Arc<AtomicBool>,
    /// Every `CreateUser` creates the user and loses its answer.
    lose_every_answer: bool,
}

#[tonic::async_trait]
impl Users for FakeUsers {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let principal = Principal::of(request.extensions()).cloned().unwrap();
        tokio::time::sleep(self.delay).await;
        if let Some(code) = self.fail_with {
            return Err(Status::new(code, "the fake users service refuses"));
        }
        let request = request.into_inner();
        let mut created = self.created.lock().unwrap();
        // Asked again for a user it has, it answers that user.
        if !created
            .iter()
            .any(|(id, email, ..)| *id == request.id && *email == request.email)
        {
            created.push((
                request.id.clone(),
                request.email.clone(),
                request.name.clone(),
                principal.subject().to_owned(),
                principal.scopes().iter().cloned().collect(),
            ));
        }
        drop(created);
        if self.lose_an_answer.swap(false, Ordering::SeqCst) || self.lose_every_answer {
            return Err(Status::deadline_exceeded("the answer was lost"));
        }
        Ok(Response::new(User {
            id: request.id,
            email: request.email,
            name: request.name,
            created_at: String::new(),
        }))
    }

    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("test scaffolding"))
    }

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("test scaffolding"))
    }

    async fn update_user(&self, _: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("test scaffolding"))
    }

    /// Deletes a user it created, for a caller with the service's scope.
    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let principal = Principal::of(request.extensions()).cloned().unwrap();
        assert!(principal.has_scope(auth::SERVICE_SCOPE), "{principal:?}");
        let id = request.into_inner().id;
        let mut created = self.created.lock().unwrap();
        let before = created.len();
        created.retain(|(created_id, ..)| *created_id != id);
        if created.len() == before {
            return Err(Status::not_found(format!("no user {id}")));
        }
        Ok(Response::new(DeleteUserResponse {}))
    }
}

/// A node hosting `auth` and the fake `users`, and what the test inspects.
struct Shop {
    node: RunningNode,
    db: Db,
    users: FakeUsers,
    settings: ShopSettings,
}

static SHOPS: AtomicU32 = AtomicU32::new(0);

/// The PostgreSQL of the tests: `SHOP_TEST_POSTGRES_URL`, else the machine's.
fn postgres() -> String {
    std::env::var("SHOP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Fresh settings: a new data directory, and a fresh PostgreSQL schema
/// (see [`postgres`]).
async fn fresh_settings() -> ShopSettings {
    let n = SHOPS.fetch_add(1, Ordering::SeqCst);
    let tag = format!("{}_{n}", std::process::id());
    let data_dir = std::env::temp_dir().join(format!("shop-auth-test-{tag}"));
    remove_dir(&data_dir);
    let database_url = {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let server = postgres();
        let schema = format!("auth_test_{tag}");
        let mut admin = sqlx::AnyConnection::connect(&server)
            .await
            .unwrap_or_else(|err| panic!("the tests need PostgreSQL at {server}: {err}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        format!("{server}{separator}options=-c%20search_path%3D{schema}")
    };
    ShopSettings {
        data_dir,
        database_url: Some(database_url),
        ..ShopSettings::default()
    }
}

async fn start(settings: ShopSettings, fail_with: Option<Code>) -> Shop {
    start_with(settings, fail_with, Duration::ZERO).await
}

/// [`start`], with a users service that takes `delay` to create a user.
async fn start_with(settings: ShopSettings, fail_with: Option<Code>, delay: Duration) -> Shop {
    let users = FakeUsers {
        fail_with,
        delay,
        ..FakeUsers::default()
    };
    start_with_users(settings, users).await
}

/// [`start`], with `users` as the users service.
async fn start_with_users(settings: ShopSettings, users: FakeUsers) -> Shop {
    let db = Db::connect(&settings).await.unwrap();
    let keys = Keys::load_or_create(&settings).unwrap();
    let mut config = ConfigLoader::new()
        .toml_str(
            "[node]\nlisten = \"127.0.0.1:0\"\nname = \"shop-test\"\ndrain_timeout = \"5s\"\n",
        )
        .without_env()
        .load()
        .unwrap();
    keys.trust(&mut config.auth, &settings.auth);
    let users_service = ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .grpc(UsersServer::new(users.clone()))
        .require(
            "/users.v1.Users/CreateUser",
            Requirement::scopes([auth::SERVICE_SCOPE]),
        )
        .build()
        .unwrap();
    let node = room619::Node::builder()
        .config(config)
        .service(auth::service(db.clone(), keys, &settings).unwrap())
        .service(users_service)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    Shop {
        node,
        db,
        users,
        settings,
    }
}

impl Shop {
    async fn client(&self) -> AuthClient<Channel> {
        AuthClient::new(channel(self.node.local_addr()).await)
    }

    async fn users_client(&self) -> UsersClient<Channel> {
        UsersClient::new(channel(self.node.local_addr()).await)
    }

    async fn count(&self, sql: &str, bind: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql)
            .bind(bind)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        n
    }

    async fn stop(self) {
        self.node.shutdown().await.unwrap();
        drop_schema(&self.settings).await;
        remove_dir(&self.settings.data_dir);
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn sign_up_request(email: &str, password: &str, name: &str) -> SignUpRequest {
    SignUpRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        name: name.to_owned(),
    }
}

async fn sign_up(client: &mut AuthClient<Channel>, email: &str) -> SignUpResponse {
    client
        .sign_up(sign_up_request(email, "correct horse battery", "Ada"))
        .await
        .unwrap()
        .into_inner()
}

async fn login(
    client: &mut AuthClient<Channel>,
    email: &str,
    password: &str,
) -> Result<TokenPair, Status> {
    client
        .login(LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(Response::into_inner)
}

async fn refresh(client: &mut AuthClient<Channel>, token: &str) -> Result<TokenPair, Status> {
    client
        .refresh(RefreshRequest {
            refresh_token: token.to_owned(),
        })
        .await
        .map(Response::into_inner)
}

/// Verifies `token` with the JWKS the node serves, by hand (ring, not the
/// JWT library under test); its claims.
async fn verify_with_served_jwks(shop: &Shop, token: &str) -> Value {
    let response = reqwest::get(format!(
        "http://{}/.well-known/jwks.json",
        shop.node.local_addr()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let jwks: Value = response.json().await.unwrap();
    let mut parts = token.split('.');
    let (header, claims, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|jwk| jwk["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
        .verify(
            format!("{}.{claims}", token.split('.').next().unwrap()).as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the signature verifies with the served key");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[tokio::test]
async fn sign_up_then_login_and_the_tokens_verify_against_the_served_jwks() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "  Ada@Example.com ").await;
    assert_eq!(signed.user_id.len(), 36);
    let tokens = signed.tokens.unwrap();
    assert_eq!(
        (tokens.token_type.as_str(), tokens.expires_in),
        ("Bearer", 900)
    );

    // The user was created with the same id, by the auth service's own token.
    let created = shop.users.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let (id, email, name, caller, scopes) = &created[0];
    assert_eq!(
        (id, email.as_str(), name.as_str()),
        (&signed.user_id, "ada@example.com", "Ada")
    );
    assert_eq!(
        (caller.as_str(), scopes.as_slice()),
        ("service:auth", ["users:create".to_owned()].as_slice())
    );

    let claims = verify_with_served_jwks(&shop, &tokens.access_token).await;
    assert_eq!(claims["sub"], signed.user_id.as_str());
    assert_eq!(claims["iss"], "room619-shop-auth");
    assert_eq!(claims["aud"], "room619-shop");
    assert_eq!(claims["scope"], "shop");
    let (iat, nbf, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!((nbf, exp - iat), (iat, 900));

    // The node accepts the token: the call gets past auth to the handler.
    let mut users = shop.users_client().await;
    let anonymous = users
        .get_user(GetUserRequest {
            id: signed.user_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let mut request = Request::new(GetUserRequest {
        id: signed.user_id.clone(),
    });
    let bearer = format!("Bearer {}", tokens.access_token);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    assert_eq!(
        users.get_user(request).await.unwrap_err().code(),
        Code::Unimplemented
    );
    // A user token cannot create users.
    let mut request = Request::new(CreateUserRequest::default());
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    assert_eq!(
        users.create_user(request).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let logged = login(&mut client, "ADA@example.com", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(
        verify_with_served_jwks(&shop, &logged.access_token).await["sub"],
        signed.user_id.as_str()
    );
    assert_ne!(logged.refresh_token, tokens.refresh_token);

    // A wrong password and an unknown email are told apart by nothing.
    let wrong = login(&mut client, "ada@example.com", "correct horse battery!")
        .await
        .unwrap_err();
    let unknown = login(&mut client, "nobody@example.com", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(
        (wrong.code(), unknown.code()),
        (Code::Unauthenticated, Code::Unauthenticated)
    );
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(
        login(&mut client, "", "").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    shop.stop().await;
}

#[tokio::test]
async fn duplicate_emails_and_bad_input_get_their_codes() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    sign_up(&mut client, "grace@example.com").await;
    let again = client
        .sign_up(sign_up_request(
            "GRACE@example.com",
            "another password",
            "Grace",
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert_eq!(
        shop.users.created.lock().unwrap().len(),
        1,
        "users is not asked twice"
    );
    // One address however its accent is typed (composed, or `e` and a
    // combining accent): the second is taken too.
    sign_up(&mut client, "jos\u{e9}@example.com").await;
    let look_alike = client
        .sign_up(sign_up_request(
            "jose\u{301}@example.com",
            "another password",
            "José",
        ))
        .await
        .unwrap_err();
    assert_eq!(look_alike.code(), Code::AlreadyExists, "{look_alike:?}");

    let bad = client
        .sign_up(sign_up_request("not-an-email", "short", ""))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["email", "password", "name"]);
    assert!(
        bad.message()
            .contains("password: must be 8 to 128 characters"),
        "{}",
        bad.message()
    );
    let (long_password, long_name) = ("p".repeat(129), "n".repeat(101));
    for (email, password, name) in [
        ("a@b.c", long_password.as_str(), "A"),
        ("a@b.c", "12345678", long_name.as_str()),
        ("two@@example.com", "12345678", "A"),
    ] {
        let status = client
            .sign_up(sign_up_request(email, password, name))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{email} {name}");
    }
    // A NUL in a login's email (which PostgreSQL cannot store or compare)
    // is a wrong login, as any email no account has.
    for email in ["grace\0@example.com", "\0", "grace@example.com\u{1b}"] {
        let status = login(&mut client, email, "correct horse battery")
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{email:?}: {status:?}"
        );
        assert_eq!(status.message(), "wrong email or password");
    }
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM auth_accounts WHERE email <> $1", "")
            .await,
        2
    );
    shop.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_its_family() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "linus@example.com").await;
    let first = signed.tokens.unwrap().refresh_token;
    // Only a SHA-256 of each token is stored.
    let hash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(first.as_bytes())
            .iter()
            .fold(String::new(), |mut hex, byte| {
                std::fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}")).unwrap();
                hex
            })
    };
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_refresh_tokens WHERE token_hash = $1",
            &hash
        )
        .await,
        1
    );
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_refresh_tokens WHERE token_hash = $1",
            &first
        )
        .await,
        0
    );

    let second = refresh(&mut client, &first).await.unwrap();
    let claims = verify_with_served_jwks(&shop, &second.access_token).await;
    assert_eq!(claims["sub"], signed.user_id.as_str());
    assert_ne!(second.refresh_token, first);

    // A second session, from a login, is another family.
    let other = login(&mut client, "linus@example.com", "correct horse battery")
        .await
        .unwrap();

    // The first token again: refused, and its family (the second token too) revoked.
    let reused = refresh(&mut client, &first).await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    let revoked = refresh(&mut client, &second.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(reused.message(), revoked.message());

    // The other family still works.
    let other_next = refresh(&mut client, &other.refresh_token).await.unwrap();
    refresh(&mut client, &other_next.refresh_token)
        .await
        .unwrap();

    for garbage in ["", "not-a-token", &"x".repeat(10_000)] {
        let status = refresh(&mut client, garbage).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{garbage:.20}");
    }
    shop.stop().await;
}

async fn logout(
    client: &mut AuthClient<Channel>,
    token: &str,
    everywhere: bool,
) -> Result<u32, Status> {
    client
        .logout(LogoutRequest {
            refresh_token: token.to_owned(),
            everywhere,
        })
        .await
        .map(|response| response.into_inner().ended)
}

#[tokio::test]
async fn logout_ends_its_login_and_everywhere_ends_every_login() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "hedy@example.com").await;
    let first = signed.tokens.unwrap();
    let password = "correct horse battery";
    let second = login(&mut client, "hedy@example.com", password)
        .await
        .unwrap();
    let third = login(&mut client, "hedy@example.com", password)
        .await
        .unwrap();

    // One login ends; the others go on.
    assert_eq!(
        logout(&mut client, &first.refresh_token, false)
            .await
            .unwrap(),
        1
    );
    let ended = refresh(&mut client, &first.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);
    // Ended already, unknown: nothing to end, not an error.
    for done in [&*first.refresh_token, "not-a-token"] {
        assert_eq!(logout(&mut client, done, false).await.unwrap(), 0);
    }
    let empty = logout(&mut client, "", false).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("refresh_token"), "{empty:?}");

    // A used token ends its login all the same: the token that replaced it
    // stops working.
    let second_next = refresh(&mut client, &second.refresh_token).await.unwrap();
    assert_eq!(
        logout(&mut client, &second.refresh_token, false)
            .await
            .unwrap(),
        1
    );
    let replaced = refresh(&mut client, &second_next.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(replaced.code(), Code::Unauthenticated);

    // Every login needs a token that could still be refreshed. An unknown
    // one changes nothing; a used one (perhaps stolen and used first) ends
    // its own login, and no other.
    let unknown = logout(&mut client, "not-a-token", true).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let fourth = login(&mut client, "hedy@example.com", password)
        .await
        .unwrap();
    let fourth_next = refresh(&mut client, &fourth.refresh_token).await.unwrap();
    let used = logout(&mut client, &fourth.refresh_token, true)
        .await
        .unwrap_err();
    assert_eq!(used.code(), Code::Unauthenticated);
    let replaced = refresh(&mut client, &fourth_next.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(replaced.code(), Code::Unauthenticated);
    let third_next = refresh(&mut client, &third.refresh_token).await.unwrap();

    let fifth = login(&mut client, "hedy@example.com", password)
        .await
        .unwrap();
    assert_eq!(
        logout(&mut client, &third_next.refresh_token, true)
            .await
            .unwrap(),
        2
    );
    for token in [&third_next.refresh_token, &fifth.refresh_token] {
        let refused = refresh(&mut client, token).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_refresh_tokens WHERE account_id = $1 AND revoked_at IS NULL",
            &signed.user_id
        )
        .await,
        0
    );

    // The password still logs in: a new login.
    let fresh = login(&mut client, "hedy@example.com", password)
        .await
        .unwrap();
    refresh(&mut client, &fresh.refresh_token).await.unwrap();
    shop.stop().await;
}

/// A login's family revoked (a used token presented again, or every login
/// ended) while one of the account's tokens is being rotated: the token
/// rotated in is revoked too. Without the account's row lock, PostgreSQL
/// let the rotation's new token, inserted after the revocation's snapshot,
/// live on (it fails then on every run against PostgreSQL; SQLite, which
/// has one writer at a time, never showed the race).
#[tokio::test]
async fn a_revocation_racing_a_rotation_leaves_no_token_alive() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    let email = "frances@example.com";
    let password = "correct horse battery";
    let signed = sign_up(&mut client, email).await;
    let first = signed.tokens.unwrap().refresh_token;
    assert_eq!(logout(&mut client, &first, false).await.unwrap(), 1);
    let live = "SELECT COUNT(*) FROM auth_refresh_tokens \
                WHERE account_id = $1 AND used_at IS NULL AND revoked_at IS NULL";
    for round in 0..25 {
        // A used token presented again while its successor is rotated.
        let used = login(&mut client, email, password).await.unwrap();
        let current = refresh(&mut client, &used.refresh_token).await.unwrap();
        let (mut a, mut b) = (client.clone(), client.clone());
        let (rotated, used_again) = tokio::join!(
            refresh(&mut a, &current.refresh_token),
            refresh(&mut b, &used.refresh_token),
        );
        assert_eq!(used_again.unwrap_err().code(), Code::Unauthenticated);
        if let Ok(next) = rotated {
            let next_status = refresh(&mut client, &next.refresh_token).await.unwrap_err();
            assert_eq!(next_status.code(), Code::Unauthenticated, "round {round}");
        }
        assert_eq!(shop.count(live, &signed.user_id).await, 0, "round {round}");

        // Every login ended while another login is rotated.
        let ending = login(&mut client, email, password).await.unwrap();
        let other = login(&mut client, email, password).await.unwrap();
        let (rotated, ended) = tokio::join!(
            refresh(&mut a, &other.refresh_token),
            logout(&mut b, &ending.refresh_token, true),
        );
        ended.unwrap();
        if let Ok(next) = rotated {
            let next_status = refresh(&mut client, &next.refresh_token).await.unwrap_err();
            assert_eq!(next_status.code(), Code::Unauthenticated, "round {round}");
        }
        assert_eq!(shop.count(live, &signed.user_id).await, 0, "round {round}");
    }
    shop.stop().await;
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let mut settings = fresh_settings().await;
    settings.auth.refresh_token_ttl = Duration::from_secs(1);
    let shop = start(settings, None).await;
    let mut client = shop.client().await;
    let token = sign_up(&mut client, "barbara@example.com")
        .await
        .tokens
        .unwrap()
        .refresh_token;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = refresh(&mut client, &token).await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    shop.stop().await;
}

/// A login ends `session_ttl` after it was made, however often its tokens
/// are rotated; the stored tokens of ended logins are removed (here by the
/// next auth node to start on the database).
#[tokio::test]
async fn a_login_ends_at_its_session_ttl_however_often_it_is_refreshed() {
    let mut settings = fresh_settings().await;
    settings.auth.session_ttl = Duration::from_secs(2);
    let shop = start(settings.clone(), None).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "grace@example.com").await;
    let mut token = signed.tokens.unwrap().refresh_token;
    let started = std::time::Instant::now();
    let (status, lasted) = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match refresh(&mut client, &token).await {
            Ok(pair) => token = pair.refresh_token,
            Err(status) => break (status, started.elapsed()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the login never ended"
        );
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // Whole seconds: a 2 s session lasts more than one second.
    assert!(
        lasted >= Duration::from_millis(900),
        "ended early: {lasted:?}"
    );
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_refresh_tokens \
             WHERE account_id = $1 AND (family_expires_at IS NULL OR expires_at > family_expires_at)",
            &signed.user_id
        )
        .await,
        0,
        "a token outlives its family"
    );
    // Logging in again starts a new session.
    let fresh = login(&mut client, "grace@example.com", "correct horse battery")
        .await
        .unwrap();
    refresh(&mut client, &fresh.refresh_token).await.unwrap();

    let rows = "SELECT COUNT(*) FROM auth_refresh_tokens WHERE account_id = $1";
    assert!(shop.count(rows, &signed.user_id).await >= 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let next = start(settings, None).await;
    let removed = tokio::time::timeout(Duration::from_secs(10), async {
        while next.count(rows, &signed.user_id).await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(removed.is_ok(), "the ended logins' tokens were kept");
    next.node.shutdown().await.unwrap();
    shop.stop().await;
}

/// The caller goes away while users is still creating the user: the
/// sign-up is not cut in half (an account without its user could log in,
/// had no profile, and blocked signing up again). It finishes: the account
/// and its user both exist.
#[tokio::test]
async fn a_sign_up_whose_caller_goes_away_is_not_cut_in_half() {
    let shop = start_with(fresh_settings().await, None, Duration::from_secs(1)).await;
    let mut client = shop.client().await;
    let request = sign_up_request("gone@example.com", "correct horse battery", "Gone");
    let gone = tokio::time::timeout(Duration::from_millis(500), client.sign_up(request)).await;
    assert!(gone.is_err(), "the sign-up answered before its caller left");
    let users = || {
        shop.users
            .created
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, email, ..)| email == "gone@example.com")
            .count()
    };
    let finished = tokio::time::timeout(Duration::from_secs(10), async {
        while users() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "the user was never created");
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_accounts WHERE email = $1",
            "gone@example.com"
        )
        .await,
        1
    );
    let tokens = login(&mut client, "gone@example.com", "correct horse battery").await;
    assert!(tokens.is_ok(), "{tokens:?}");
    shop.stop().await;
}

/// Users created the user but its answer was lost (a deadline passing as it
/// committed): the sign-up asks again rather than removing the account and
/// leaving a user whose email could never sign up again.
#[tokio::test]
async fn a_lost_answer_from_users_is_asked_again_not_undone() {
    let users = FakeUsers::default();
    users.lose_an_answer.store(true, Ordering::SeqCst);
    let shop = start_with_users(fresh_settings().await, users).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "lost@example.com").await;
    assert!(
        !shop.users.lose_an_answer.load(Ordering::SeqCst),
        "no answer was lost"
    );
    let created = shop.users.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].0, signed.user_id);
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_accounts WHERE email = $1",
            "lost@example.com"
        )
        .await,
        1
    );
    let tokens = login(&mut client, "lost@example.com", "correct horse battery").await;
    assert!(tokens.is_ok(), "{tokens:?}");
    shop.stop().await;
}

/// Users made the user but lost its answer twice (asked again, still no
/// answer): the sign-up fails, and removes the user along with the account,
/// so that no profile without an account holds the email against every
/// later sign-up.
#[tokio::test]
async fn a_sign_up_whose_answers_are_all_lost_leaves_no_user_behind() {
    let users = FakeUsers {
        lose_every_answer: true,
        ..FakeUsers::default()
    };
    let shop = start_with_users(fresh_settings().await, users).await;
    let mut client = shop.client().await;
    let failed = client
        .sign_up(sign_up_request(
            "unlucky@example.com",
            "correct horse battery",
            "Unlucky",
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::DeadlineExceeded, "{failed:?}");
    let created = shop.users.created.lock().unwrap().clone();
    assert!(created.is_empty(), "a user was left behind: {created:?}");
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_accounts WHERE email = $1",
            "unlucky@example.com"
        )
        .await,
        0
    );
    shop.stop().await;
}

/// Users refuses to create the user: no account is left behind, and the
/// anonymous caller learns what is theirs to know (a taken email, a refused
/// field) and nothing of what is between the services: users not trusting
/// auth's token (`UNAUTHENTICATED`, which would be a `401` asking a public
/// sign-up for a token), a scope missing, a bulkhead full, a state of its
/// own are all `UNAVAILABLE`, worth a retry.
#[tokio::test]
async fn a_failing_create_user_leaves_no_account_behind() {
    for (refusal, answer) in [
        (Code::FailedPrecondition, Code::Unavailable),
        (Code::Unauthenticated, Code::Unavailable),
        (Code::PermissionDenied, Code::Unavailable),
        (Code::ResourceExhausted, Code::Unavailable),
        (Code::AlreadyExists, Code::AlreadyExists),
        (Code::InvalidArgument, Code::InvalidArgument),
    ] {
        let shop = start(fresh_settings().await, Some(refusal)).await;
        let mut client = shop.client().await;
        let failed = client
            .sign_up(sign_up_request(
                "ken@example.com",
                "correct horse battery",
                "Ken",
            ))
            .await
            .unwrap_err();
        assert_eq!(failed.code(), answer, "{refusal:?}: {failed:?}");
        if answer == Code::Unavailable {
            assert_eq!(
                failed.message(),
                "the users service refused the sign-up; retry shortly",
                "{refusal:?}"
            );
        } else {
            assert!(
                failed.message().contains("the fake users service refuses"),
                "{refusal:?}: {}",
                failed.message()
            );
        }
        assert_eq!(
            shop.count(
                "SELECT COUNT(*) FROM auth_accounts WHERE email = $1",
                "ken@example.com"
            )
            .await,
            0,
            "{refusal:?}"
        );
        assert_eq!(
            shop.count(
                "SELECT COUNT(*) FROM auth_refresh_tokens WHERE token_hash <> $1",
                ""
            )
            .await,
            0,
            "{refusal:?}"
        );
        let status = login(&mut client, "ken@example.com", "correct horse battery")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{refusal:?}");
        shop.stop().await;
    }

    // With no users service at all, the same: its error, no account.
    let settings = fresh_settings().await;
    let db = Db::connect(&settings).await.unwrap();
    let keys = Keys::load_or_create(&settings).unwrap();
    let mut config = ConfigLoader::new()
        .toml_str("[node]\nlisten = \"127.0.0.1:0\"\nname = \"alone\"\ndrain_timeout = \"5s\"\n")
        .without_env()
        .load()
        .unwrap();
    keys.trust(&mut config.auth, &settings.auth);
    let node = room619::Node::builder()
        .config(config)
        .service(auth::service(db.clone(), keys, &settings).unwrap())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut client = AuthClient::new(channel(node.local_addr()).await);
    let alone = client
        .sign_up(sign_up_request(
            "ken@example.com",
            "correct horse battery",
            "Ken",
        ))
        .await
        .unwrap_err();
    assert_eq!(alone.code(), Code::Unavailable, "{alone:?}");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM auth_accounts")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    node.shutdown().await.unwrap();
    drop_schema(&settings).await;
    remove_dir(&settings.data_dir);
}

#[tokio::test]
async fn a_users_deleted_event_removes_the_account_and_its_tokens() {
    let shop = start(fresh_settings().await, None).await;
    let mut client = shop.client().await;
    let signed = sign_up(&mut client, "margaret@example.com").await;
    let kept = sign_up(&mut client, "edsger@example.com").await;
    shop.node
        .handle()
        .bus()
        .publish(
            "users.deleted",
            &UserEvent {
                user_id: signed.user_id.clone(),
                email: "margaret@example.com".to_owned(),
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while shop
            .count(
                "SELECT COUNT(*) FROM auth_accounts WHERE id = $1",
                &signed.user_id,
            )
            .await
            != 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the account was never removed");
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM auth_refresh_tokens WHERE account_id = $1",
            &signed.user_id
        )
        .await,
        0
    );
    let refused = refresh(&mut client, &signed.tokens.unwrap().refresh_token)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let gone = login(&mut client, "margaret@example.com", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
    // Others are untouched.
    refresh(&mut client, &kept.tokens.unwrap().refresh_token)
        .await
        .unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn the_signing_key_is_made_once_kept_private_and_reloaded() {
    let settings = ShopSettings {
        data_dir: std::env::temp_dir().join(format!("shop-auth-keys-{}", std::process::id())),
        ..ShopSettings::default()
    };
    remove_dir(&settings.data_dir);
    // A draft a crash left behind, half-written: never taken for the key.
    let path: PathBuf = settings.data_dir.join("auth").join("ed25519.pem");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path.with_extension("pem.1234.5678.tmp"), "-----BEGIN PRIV").unwrap();
    let made = Keys::load_or_create(&settings).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let permissions = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(permissions & 0o777, 0o600);
    }
    let again = Keys::load_or_create(&settings).unwrap();
    assert_eq!(made.kid(), again.kid());
    assert_eq!(made.jwks(), again.jwks());
    // The key took its name whole; no draft is left beside it, the crash's
    // neither.
    let beside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["ed25519.pem"]);

    // An explicit key file is used as is, and must exist.
    let explicit = ShopSettings {
        auth: shop::auth::AuthSettings {
            signing_key_file: Some(path.clone()),
            ..Default::default()
        },
        data_dir: settings.data_dir.join("elsewhere"),
        ..ShopSettings::default()
    };
    assert_eq!(Keys::load_or_create(&explicit).unwrap().kid(), made.kid());
    let missing = ShopSettings {
        auth: shop::auth::AuthSettings {
            signing_key_file: Some(settings.data_dir.join("missing.pem")),
            ..Default::default()
        },
        ..settings.clone()
    };
    let err = Keys::load_or_create(&missing).unwrap_err();
    assert_eq!(err.kind(), room619::ErrorKind::Config);
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    assert_eq!(
        Keys::load_or_create(&settings).unwrap_err().kind(),
        room619::ErrorKind::Config
    );
    // The PEM public key and the JWK describe the same key.
    assert!(
        made.public_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert_eq!(made.jwt_key_configs().len(), 1);
    std::fs::remove_dir_all(&settings.data_dir).unwrap();
}

/// Drops the PostgreSQL schema of `settings`, if it made one.
async fn drop_schema(settings: &ShopSettings) {
    use sqlx::Connection as _;
    let Some(url) = settings.database_url.as_deref() else {
        return;
    };
    let (_, schema) = url.split_once("search_path%3D").unwrap();
    let mut admin = sqlx::AnyConnection::connect(&postgres()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Removes a test directory if it exists.
fn remove_dir(dir: &std::path::Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
