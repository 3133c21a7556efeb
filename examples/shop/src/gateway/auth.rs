//! `/v1/auth/*`: sign-up, login, refresh and logout, forwarded to
//! `auth.v1.Auth`.
//! Public: these routes need no token. Their answers that carry tokens say
//! `Cache-Control: no-store` and `Pragma: no-cache`.

use axum::{Extension, response::Response};
use room619::{ServiceContext, middleware::validation::Valid, rpc::client::RpcChannel};
use shop_proto::auth::v1::{
    LoginRequest, LogoutRequest, RefreshRequest, SignUpRequest, auth_client::AuthClient,
};

use super::{
    AUTH, REQUIREMENT,
    dto::{
        LoginBody, LogoutBody, LogoutReply, RefreshBody, SignUpBody, SignUpReply, TokenPairBody,
    },
    error::ApiError,
    reply,
};

fn client(ctx: &ServiceContext) -> Result<AuthClient<RpcChannel>, ApiError> {
    ctx.client::<AuthClient<RpcChannel>>(AUTH, REQUIREMENT)
        .map_err(|err| ApiError::reaching(AUTH, err))
}

/// Creates an account (and its user), then logs it in.
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    tag = "auth",
    operation_id = "signUp",
    request_body = SignUpBody,
    responses(
        (status = 201, description = "The account exists and is logged in", body = SignUpReply,
            headers(
                ("Location" = String, description = "The new user's profile"),
                ("Cache-Control" = String, description = "`no-store`: it carries tokens"),
                ("Pragma" = String, description = "`no-cache`, for HTTP/1.0 caches")
            )),
    )
)]
pub(crate) async fn sign_up(
    Extension(ctx): Extension<ServiceContext>,
    Valid(body): Valid<SignUpBody>,
) -> Result<Response, ApiError> {
    let reply = client(&ctx)?
        .sign_up(SignUpRequest {
            email: body.email,
            password: body.password,
            name: body.name,
        })
        .await
        .map_err(|status| ApiError::from_status(AUTH, status))?
        .into_inner();
    let tokens = reply.tokens.ok_or_else(|| {
        ApiError::reaching(
            AUTH,
            room619::Error::internal("a sign-up answered without tokens"),
        )
    })?;
    let location = format!("/v1/users/{}", reply.user_id);
    let reply = SignUpReply {
        user_id: reply.user_id,
        tokens: tokens.into(),
    };
    Ok(reply::uncached(reply::created(&location, &reply)))
}

/// Exchanges an email and password for tokens.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenPairBody,
            headers(
                ("Cache-Control" = String, description = "`no-store`: it carries tokens"),
                ("Pragma" = String, description = "`no-cache`, for HTTP/1.0 caches")
            )),
    )
)]
pub(crate) async fn login(
    Extension(ctx): Extension<ServiceContext>,
    Valid(body): Valid<LoginBody>,
) -> Result<Response, ApiError> {
    let pair = client(&ctx)?
        .login(LoginRequest {
            email: body.email,
            password: body.password,
        })
        .await
        .map_err(|status| ApiError::from_status(AUTH, status))?
        .into_inner();
    Ok(reply::uncached(reply::ok(&TokenPairBody::from(pair))))
}

/// Exchanges a refresh token for a new pair; the old one stops working.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new token pair", body = TokenPairBody,
            headers(
                ("Cache-Control" = String, description = "`no-store`: it carries tokens"),
                ("Pragma" = String, description = "`no-cache`, for HTTP/1.0 caches")
            )),
    )
)]
pub(crate) async fn refresh(
    Extension(ctx): Extension<ServiceContext>,
    Valid(body): Valid<RefreshBody>,
) -> Result<Response, ApiError> {
    let pair = client(&ctx)?
        .refresh(RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await
        .map_err(|status| ApiError::from_status(AUTH, status))?
        .into_inner();
    Ok(reply::uncached(reply::ok(&TokenPairBody::from(pair))))
}

/// Ends the login a refresh token belongs to, or with `everywhere` every
/// login of its account. An unknown token is not an error. Access tokens
/// already issued stay valid until they expire.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    request_body = LogoutBody,
    responses(
        (status = 200, description = "The login (or every login) ended", body = LogoutReply),
    )
)]
pub(crate) async fn logout(
    Extension(ctx): Extension<ServiceContext>,
    Valid(body): Valid<LogoutBody>,
) -> Result<Response, ApiError> {
    let reply = client(&ctx)?
        .logout(LogoutRequest {
            refresh_token: body.refresh_token,
            everywhere: body.everywhere,
        })
        .await
        .map_err(|status| ApiError::from_status(AUTH, status))?
        .into_inner();
    Ok(reply::ok(&LogoutReply { ended: reply.ended }))
}
