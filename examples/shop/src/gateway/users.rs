//! `/v1/users`: profiles, forwarded to `users.v1.Users` with the caller's
//! token (the service lets a user change or delete only their own profile).

use axum::{Extension, response::Response};
use room619::{ServiceContext, middleware::validation::Valid, rpc::client::RpcChannel};
use shop_proto::users::v1::{
    DeleteUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest,
    users_client::UsersClient,
};

use super::{
    REQUIREMENT, USERS,
    dto::{ListUsersQuery, UpdateUserBody, UserBody, UserPage},
    error::ApiError,
    extract::{Bearer, Id, Params},
    reply,
};

fn client(ctx: &ServiceContext) -> Result<UsersClient<RpcChannel>, ApiError> {
    ctx.client::<UsersClient<RpcChannel>>(USERS, REQUIREMENT)
        .map_err(|err| ApiError::reaching(USERS, err))
}

fn failed(status: tonic::Status) -> ApiError {
    ApiError::from_status(USERS, status)
}

/// Users in creation order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    operation_id = "listUsers",
    params(ListUsersQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of users", body = UserPage))
)]
pub(crate) async fn list(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Params(query): Params<ListUsersQuery>,
) -> Result<Response, ApiError> {
    let page = client(&ctx)?
        .list_users(bearer.request(ListUsersRequest {
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&UserPage {
        users: page.users.into_iter().map(UserBody::from).collect(),
        next_page_token: reply::token(page.next_page_token),
    }))
}

/// One user's profile.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "getUser",
    params(("id" = String, Path, description = "The user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, description = "The user", body = UserBody))
)]
pub(crate) async fn get(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let user = client(&ctx)?
        .get_user(bearer.request(GetUserRequest { id }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&UserBody::from(user)))
}

/// Changes the caller's own name.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "updateUser",
    params(("id" = String, Path, description = "The user's id (the caller's own)", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = UpdateUserBody,
    security(("bearer" = [])),
    responses((status = 200, description = "The changed user", body = UserBody))
)]
pub(crate) async fn update(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
    Valid(body): Valid<UpdateUserBody>,
) -> Result<Response, ApiError> {
    let user = client(&ctx)?
        .update_user(bearer.request(UpdateUserRequest {
            id,
            name: body.name,
        }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&UserBody::from(user)))
}

/// Deletes the caller's own profile.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "deleteUser",
    params(("id" = String, Path, description = "The user's id (the caller's own)", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 204, description = "The profile is deleted"))
)]
pub(crate) async fn delete(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
) -> Result<Response, ApiError> {
    client(&ctx)?
        .delete_user(bearer.request(DeleteUserRequest { id }))
        .await
        .map_err(failed)?;
    Ok(reply::no_content())
}
