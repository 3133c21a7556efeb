//! Test scaffolding, not the shop's services: small in-memory
//! implementations of the `auth.v1`, `users.v1` and `products.v1` contracts,
//! hosted beside the gateway so its routing, token forwarding and status
//! mapping can be checked on a real node. They follow the `.proto` comments
//! (codes, pagination, owners) closely enough for that and no further.
//!
//! In tests (`cfg(test)`), every call records what it saw (`Seen`) and
//! `Fakes::fail_next` makes the next call of any fake fail with a given
//! status; the `gateway_stubs` example serves them without those hooks.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use room619::{
    ServiceBuilder,
    middleware::{
        auth::Principal,
        validation::{FieldViolation, Invalid},
    },
    service::BuiltService,
};
use shop_proto::{
    auth::v1::{self as auth, auth_server::AuthServer},
    products::v1::{self as products, products_server::ProductsServer},
    users::v1::{self as users, users_server::UsersServer},
};
use tonic::{Request, Response, Status};

/// The HS256 secret the fake auth service signs with and nodes verify with.
pub const SECRET: &str = "a-gateway-test-secret-of-32-bytes!!";
/// The issuer of the fake tokens.
pub const ISSUER: &str = "https://auth.shop.test";
/// Their audience.
pub const AUDIENCE: &str = "shop";

/// The `[auth]` TOML that verifies the fake tokens.
pub fn auth_toml() -> String {
    format!(
        "[auth]\nissuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\n\
         [[auth.keys]]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"
    )
}

/// An access token for `subject`, valid for an hour.
pub fn token(subject: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let claims = serde_json::json!({
        "sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// What one call of a fake saw.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The RPC, such as `GetUser`.
    pub rpc: &'static str,
    /// Its `authorization` metadata.
    pub authorization: Option<String>,
    /// The subject the node's auth layer proved.
    pub subject: Option<String>,
    /// The request's page size, query and owner filter (list calls).
    pub list: Option<(u32, String, String)>,
    /// The time it had left, from its `grpc-timeout`.
    pub timeout: Option<std::time::Duration>,
}

#[derive(Default)]
struct Account {
    id: String,
    email: String,
    password: String,
}

#[derive(Default)]
struct State {
    next_id: u64,
    accounts: Vec<Account>,
    refresh_tokens: Vec<(String, String)>,
    users: Vec<users::User>,
    products: Vec<products::Product>,
    #[cfg(test)]
    seen: Vec<Seen>,
    fail_next: Option<Status>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:04}", self.next_id)
    }

    fn pair(&mut self, user_id: &str) -> auth::TokenPair {
        let refresh = self.id("r");
        self.refresh_tokens
            .push((refresh.clone(), user_id.to_owned()));
        auth::TokenPair {
            access_token: token(user_id),
            refresh_token: refresh,
            token_type: "Bearer".to_owned(),
            expires_in: 3600,
        }
    }
}

/// The three fakes' shared state.
#[derive(Clone, Default)]
pub struct Fakes {
    state: Arc<Mutex<State>>,
}

impl Fakes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next call of any fake fails with `status`.
    #[cfg(test)]
    pub fn fail_next(&self, status: Status) {
        self.lock().fail_next = Some(status);
    }

    /// Every call so far, oldest first.
    #[cfg(test)]
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Records a call (in tests); fails it when a failure is scripted. The
    /// caller's subject, when the node's auth layer proved one.
    fn enter<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        list: Option<(u32, String, String)>,
    ) -> Result<Option<String>, Status> {
        let subject = Principal::of(request.extensions()).map(|p| p.subject().to_owned());
        let mut state = self.lock();
        #[cfg(test)]
        {
            let authorization = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|value| room619::rpc::deadline::parse_timeout(value.as_bytes()).ok());
            state.seen.push(Seen {
                rpc,
                authorization,
                subject: subject.clone(),
                list,
                timeout,
            });
        }
        #[cfg(not(test))]
        {
            let _ = rpc;
            drop(list);
        }
        match state.fail_next.take() {
            Some(status) => Err(status),
            None => Ok(subject),
        }
    }

    /// The caller's subject, or `UNAUTHENTICATED`.
    fn caller<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        list: Option<(u32, String, String)>,
    ) -> Result<String, Status> {
        self.enter(rpc, request, list)?
            .ok_or_else(|| Status::unauthenticated("no token"))
    }

    /// The fake `auth` 1.0.0 (public methods).
    pub fn auth(&self) -> room619::Result<BuiltService> {
        ServiceBuilder::new("auth", "1.0.0")?
            .grpc(AuthServer::new(self.clone()))
            .public("/auth.v1.Auth/{*method}")
            .build()
    }

    /// The fake `users` 1.0.0.
    pub fn users(&self) -> room619::Result<BuiltService> {
        ServiceBuilder::new("users", "1.0.0")?
            .grpc(UsersServer::new(self.clone()))
            .build()
    }

    /// The fake `products` 1.0.0.
    pub fn products(&self) -> room619::Result<BuiltService> {
        ServiceBuilder::new("products", "1.0.0")?
            .grpc(ProductsServer::new(self.clone()))
            .build()
    }

    /// All three.
    pub fn services(&self) -> room619::Result<[BuiltService; 3]> {
        Ok([self.auth()?, self.users()?, self.products()?])
    }
}

/// The fakes' clock never moves.
fn now() -> String {
    "2026-11-26T00:00:00Z".to_owned()
}

/// A page of `items` from `page_token` (an offset this fake issued).
fn page<T: Clone>(items: &[T], size: u32, page_token: &str) -> Result<(Vec<T>, String), Status> {
    let size = match size {
        0 => 20,
        1..=100 => size as usize,
        _ => return Err(Status::invalid_argument("page_size must be 1 to 100")),
    };
    let start = if page_token.is_empty() {
        0
    } else {
        page_token
            .strip_prefix("o")
            .and_then(|offset| offset.parse::<usize>().ok())
            .filter(|offset| *offset <= items.len())
            .ok_or_else(|| Status::invalid_argument("page_token is not one this service issued"))?
    };
    let end = (start + size).min(items.len());
    let next = if end < items.len() {
        format!("o{end}")
    } else {
        String::new()
    };
    Ok((items[start..end].to_vec(), next))
}

fn invalid(field: &str, detail: &str) -> Status {
    Status::from(Invalid::new(vec![FieldViolation {
        field: field.to_owned(),
        detail: detail.to_owned(),
    }]))
}

#[tonic::async_trait]
impl auth::auth_server::Auth for Fakes {
    async fn sign_up(
        &self,
        request: Request<auth::SignUpRequest>,
    ) -> Result<Response<auth::SignUpResponse>, Status> {
        self.enter("SignUp", &request, None)?;
        let request = request.into_inner();
        if request.password.chars().count() < 8 {
            return Err(invalid("password", "at least 8 characters"));
        }
        let mut state = self.lock();
        if state.accounts.iter().any(|a| a.email == request.email) {
            return Err(Status::already_exists("the email is taken"));
        }
        let id = state.id("u");
        state.accounts.push(Account {
            id: id.clone(),
            email: request.email.clone(),
            password: request.password,
        });
        state.users.push(users::User {
            id: id.clone(),
            email: request.email,
            name: request.name,
            created_at: now(),
        });
        let tokens = state.pair(&id);
        Ok(Response::new(auth::SignUpResponse {
            user_id: id,
            tokens: Some(tokens),
        }))
    }

    async fn login(
        &self,
        request: Request<auth::LoginRequest>,
    ) -> Result<Response<auth::TokenPair>, Status> {
        self.enter("Login", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        let id = state
            .accounts
            .iter()
            .find(|a| a.email == request.email && a.password == request.password)
            .map(|a| a.id.clone())
            .ok_or_else(|| Status::unauthenticated("wrong email or password"))?;
        Ok(Response::new(state.pair(&id)))
    }

    async fn refresh(
        &self,
        request: Request<auth::RefreshRequest>,
    ) -> Result<Response<auth::TokenPair>, Status> {
        self.enter("Refresh", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        let index = state
            .refresh_tokens
            .iter()
            .position(|(token, _)| *token == request.refresh_token)
            .ok_or_else(|| Status::unauthenticated("unknown or used refresh token"))?;
        let (_, id) = state.refresh_tokens.remove(index);
        Ok(Response::new(state.pair(&id)))
    }

    async fn logout(
        &self,
        request: Request<auth::LogoutRequest>,
    ) -> Result<Response<auth::LogoutResponse>, Status> {
        self.enter("Logout", &request, None)?;
        let request = request.into_inner();
        if request.refresh_token.is_empty() {
            return Err(invalid("refresh_token", "required"));
        }
        let mut state = self.lock();
        let account = state
            .refresh_tokens
            .iter()
            .find(|(token, _)| *token == request.refresh_token)
            .map(|(_, id)| id.clone());
        let ended = match (account, request.everywhere) {
            (None, true) => {
                return Err(Status::unauthenticated("unknown or used refresh token"));
            }
            (None, false) => 0,
            (Some(id), everywhere) => {
                let before = state.refresh_tokens.len();
                state.refresh_tokens.retain(|(token, owner)| {
                    if everywhere {
                        *owner != id
                    } else {
                        *token != request.refresh_token
                    }
                });
                u32::try_from(before - state.refresh_tokens.len()).unwrap_or(u32::MAX)
            }
        };
        Ok(Response::new(auth::LogoutResponse { ended }))
    }
}

#[tonic::async_trait]
impl users::users_server::Users for Fakes {
    async fn create_user(
        &self,
        request: Request<users::CreateUserRequest>,
    ) -> Result<Response<users::User>, Status> {
        self.caller("CreateUser", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        if state.users.iter().any(|u| u.email == request.email) {
            return Err(Status::already_exists("the email is taken"));
        }
        let id = if request.id.is_empty() {
            state.id("u")
        } else {
            request.id
        };
        let user = users::User {
            id,
            email: request.email,
            name: request.name,
            created_at: now(),
        };
        state.users.push(user.clone());
        Ok(Response::new(user))
    }

    async fn get_user(
        &self,
        request: Request<users::GetUserRequest>,
    ) -> Result<Response<users::User>, Status> {
        self.caller("GetUser", &request, None)?;
        let id = request.into_inner().id;
        self.lock()
            .users
            .iter()
            .find(|u| u.id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no user {id}")))
    }

    async fn list_users(
        &self,
        request: Request<users::ListUsersRequest>,
    ) -> Result<Response<users::ListUsersResponse>, Status> {
        let list = (request.get_ref().page_size, String::new(), String::new());
        self.caller("ListUsers", &request, Some(list))?;
        let request = request.into_inner();
        let (users, next_page_token) =
            page(&self.lock().users, request.page_size, &request.page_token)?;
        Ok(Response::new(users::ListUsersResponse {
            users,
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<users::UpdateUserRequest>,
    ) -> Result<Response<users::User>, Status> {
        let caller = self.caller("UpdateUser", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        let user = state
            .users
            .iter_mut()
            .find(|u| u.id == request.id)
            .ok_or_else(|| Status::not_found(format!("no user {}", request.id)))?;
        if user.id != caller {
            return Err(Status::permission_denied("only your own profile"));
        }
        user.name = request.name;
        Ok(Response::new(user.clone()))
    }

    async fn delete_user(
        &self,
        request: Request<users::DeleteUserRequest>,
    ) -> Result<Response<users::DeleteUserResponse>, Status> {
        let caller = self.caller("DeleteUser", &request, None)?;
        let id = request.into_inner().id;
        let mut state = self.lock();
        let index = state
            .users
            .iter()
            .position(|u| u.id == id)
            .ok_or_else(|| Status::not_found(format!("no user {id}")))?;
        if id != caller {
            return Err(Status::permission_denied("only your own profile"));
        }
        state.users.remove(index);
        state.accounts.retain(|a| a.id != id);
        for product in state.products.iter_mut().filter(|p| p.owner_id == id) {
            product.archived = true;
        }
        Ok(Response::new(users::DeleteUserResponse {}))
    }
}

impl Fakes {
    /// The product `id`, owned by `caller`: `NOT_FOUND` or
    /// `PERMISSION_DENIED` otherwise.
    /// The caller's product `id`, if at `expected` (when given).
    fn owned<'a>(
        state: &'a mut State,
        id: &str,
        caller: &str,
        expected: Option<i64>,
    ) -> Result<&'a mut products::Product, Status> {
        let product = state
            .products
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| Status::not_found(format!("no product {id}")))?;
        if product.owner_id != caller {
            return Err(Status::permission_denied("only the owner may"));
        }
        if expected.is_some_and(|expected| expected != product.version) {
            return Err(Status::failed_precondition(format!(
                "product {id} is at version {}",
                product.version
            )));
        }
        Ok(product)
    }
}

#[tonic::async_trait]
impl products::products_server::Products for Fakes {
    async fn create_product(
        &self,
        request: Request<products::CreateProductRequest>,
    ) -> Result<Response<products::Product>, Status> {
        let caller = self.caller("CreateProduct", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        let id = state.id("p");
        let product = products::Product {
            id,
            owner_id: caller,
            name: request.name,
            description: request.description,
            price_cents: request.price_cents,
            archived: false,
            created_at: now(),
            updated_at: now(),
            version: 1,
        };
        state.products.push(product.clone());
        Ok(Response::new(product))
    }

    async fn get_product(
        &self,
        request: Request<products::GetProductRequest>,
    ) -> Result<Response<products::Product>, Status> {
        self.caller("GetProduct", &request, None)?;
        let id = request.into_inner().id;
        self.lock()
            .products
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no product {id}")))
    }

    async fn list_products(
        &self,
        request: Request<products::ListProductsRequest>,
    ) -> Result<Response<products::ListProductsResponse>, Status> {
        let r = request.get_ref();
        let list = (r.page_size, r.query.clone(), r.owner_id.clone());
        self.caller("ListProducts", &request, Some(list))?;
        let request = request.into_inner();
        let query = request.query.to_lowercase();
        let matching: Vec<products::Product> = self
            .lock()
            .products
            .iter()
            .filter(|p| request.include_archived || !p.archived)
            .filter(|p| p.name.to_lowercase().contains(&query))
            .filter(|p| request.owner_id.is_empty() || p.owner_id == request.owner_id)
            .cloned()
            .collect();
        let (products, next_page_token) = page(&matching, request.page_size, &request.page_token)?;
        Ok(Response::new(products::ListProductsResponse {
            products,
            next_page_token,
        }))
    }

    async fn update_product(
        &self,
        request: Request<products::UpdateProductRequest>,
    ) -> Result<Response<products::Product>, Status> {
        let caller = self.caller("UpdateProduct", &request, None)?;
        let request = request.into_inner();
        let mut state = self.lock();
        let product = Self::owned(&mut state, &request.id, &caller, request.expected_version)?;
        if let Some(name) = request.name {
            product.name = name;
        }
        if let Some(description) = request.description {
            product.description = description;
        }
        if let Some(price) = request.price_cents {
            product.price_cents = price;
        }
        product.updated_at = now();
        product.version += 1;
        Ok(Response::new(product.clone()))
    }

    async fn delete_product(
        &self,
        request: Request<products::DeleteProductRequest>,
    ) -> Result<Response<products::DeleteProductResponse>, Status> {
        let caller = self.caller("DeleteProduct", &request, None)?;
        let request = request.into_inner();
        let id = request.id;
        let mut state = self.lock();
        Self::owned(&mut state, &id, &caller, request.expected_version)?;
        state.products.retain(|p| p.id != id);
        Ok(Response::new(products::DeleteProductResponse {}))
    }
}
