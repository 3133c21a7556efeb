//! `users.v1.Users` over the shared [`UserStore`].

use shop_proto::users::v1::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, GetUserRequest, ListUsersRequest,
    ListUsersResponse, UpdateUserRequest, User, users_server::Users,
};
use tonic::{Request, Response, Status};

use super::repo::{UserRow, UserStore};
use crate::access::caller;

/// users.v1 calls the name `name`.
const NAME: &str = "name";

/// The users.v1 API.
#[derive(Debug, Clone)]
pub(crate) struct V1(pub(crate) UserStore);

fn user(row: UserRow) -> User {
    User {
        id: row.id,
        email: row.email,
        name: row.name,
        created_at: row.created_at,
    }
}

#[tonic::async_trait]
impl Users for V1 {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.into_inner();
        let row = self
            .0
            .create(&caller, &request.id, &request.email, (NAME, &request.name))
            .await?;
        Ok(Response::new(user(row)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(request.extensions())?;
        Ok(Response::new(user(
            self.0.get(&request.get_ref().id).await?.seen_by(&caller),
        )))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.into_inner();
        let (rows, next_page_token) = self.0.list(request.page_size, &request.page_token).await?;
        Ok(Response::new(ListUsersResponse {
            users: rows
                .into_iter()
                .map(|row| user(row.seen_by(&caller)))
                .collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.into_inner();
        let row = self
            .0
            .update(&caller, &request.id, (NAME, &request.name))
            .await?;
        Ok(Response::new(user(row)))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let caller = caller(request.extensions())?;
        self.0.delete(&caller, &request.get_ref().id).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }
}
