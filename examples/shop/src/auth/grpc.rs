//! `auth.v1.Auth` over gRPC.

use room619::{Error, ErrorKind, ServiceContext, rpc::client::RpcChannel};
use shop_proto::{
    auth::v1::{
        LoginRequest, LogoutRequest, LogoutResponse, RefreshRequest, SignUpRequest, SignUpResponse,
        TokenPair, auth_server::Auth,
    },
    users::v1::{CreateUserRequest, DeleteUserRequest, users_client::UsersClient},
};
use tonic::{Request, Response, Status, metadata::MetadataValue};
use tonic_types::StatusExt as _;

use super::{
    accounts::{Accounts, Logout, Rotation},
    password::Passwords,
    tokens::{Issuer, random_id, refresh_hash},
    validate::{self, PASSWORD_CHARS},
};

/// What a failed login, refresh or logout tells the caller (and nothing
/// more).
const BAD_LOGIN: &str = "wrong email or password";
const BAD_REFRESH: &str = "the refresh token is unknown, used, revoked or expired";
/// What a sign-up tells its caller when the users service refused it for a
/// reason that is not the caller's (see [`for_the_caller`]).
const USERS_REFUSED: &str = "the users service refused the sign-up; retry shortly";

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct AuthService {
    accounts: Accounts,
    issuer: Issuer,
    passwords: Passwords,
}

impl AuthService {
    pub(crate) fn new(accounts: Accounts, issuer: Issuer, passwords: Passwords) -> Self {
        Self {
            accounts,
            issuer,
            passwords,
        }
    }

    /// A new token family for `account_id`: its first pair.
    async fn log_in(&self, account_id: &str) -> Result<TokenPair, Status> {
        let refresh = self.issuer.new_refresh()?;
        self.accounts
            .start_family(account_id, &random_id()?, &refresh)
            .await
            .map_err(login_refused)?;
        Ok(self.issuer.pair(account_id, refresh)?)
    }

    /// A client of `users` 1, and a request carrying `message` with the
    /// service's own token.
    fn users_call<T>(
        &self,
        ctx: Option<&ServiceContext>,
        message: T,
    ) -> Result<(UsersClient<RpcChannel>, Request<T>), Status> {
        let ctx = ctx.ok_or_else(|| Status::internal("the service context is missing"))?;
        let users = ctx.client::<UsersClient<RpcChannel>>("users", "^1")?;
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.issuer.service_token()?))
            .map_err(|_| Status::internal("a service token is not a header value"))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", bearer);
        Ok((users, request))
    }

    /// Creates the `users.v1.User` of a new account, as the auth service.
    async fn create_user(
        &self,
        ctx: Option<&ServiceContext>,
        id: &str,
        email: &str,
        name: &str,
    ) -> Result<(), Status> {
        let (mut users, request) = self.users_call(
            ctx,
            CreateUserRequest {
                id: id.to_owned(),
                email: email.to_owned(),
                name: name.to_owned(),
            },
        )?;
        users
            .create_user(request)
            .await
            .map(|_| ())
            .map_err(|status| {
                Status::new(
                    status.code(),
                    format!(
                        "the users service did not create the user: {}",
                        status.message()
                    ),
                )
            })
    }
}

/// The answer to a login whose token family could not be stored: the
/// account deleted meanwhile (its user's `users.deleted` handled between the
/// password check and the insert, which its foreign key then refuses) is a
/// wrong login, as it would be a moment later; any other failure is itself.
fn login_refused(error: Error) -> Status {
    if error.kind() == ErrorKind::FailedPrecondition {
        tracing::info!(error = ?error, "a login's account was deleted as it logged in");
        Status::unauthenticated(BAD_LOGIN)
    } else {
        error.into()
    }
}

/// What a sign-up tells its caller, who is anonymous, of the users service's
/// refusal `status`: an email users has already (`ALREADY_EXISTS`), a field
/// it refuses (`INVALID_ARGUMENT`) and a deadline that passed
/// (`DEADLINE_EXCEEDED`, the caller's own or that of asking again) are the
/// caller's to know. Any other code is between the two services (users not
/// trusting the auth service's token yet, its key rotated, clocks apart, a
/// scope missing, a bulkhead full, users down) and would mislead as it is (a
/// `401` asking a public sign-up for a token, a `403`, a `429`, a `412`): it
/// is logged, and answered `UNAVAILABLE`, which a retry may get past.
fn for_the_caller(status: Status) -> Status {
    use tonic::Code;
    match status.code() {
        Code::AlreadyExists | Code::InvalidArgument | Code::DeadlineExceeded => status,
        code => {
            tracing::warn!(
                ?code,
                error = %status.message(),
                "the users service refused a sign-up"
            );
            Status::unavailable(USERS_REFUSED)
        }
    }
}

/// How long a sign-up asks users again whether it created a user, after a
/// first answer that did not say.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a call that failed with `code` may have taken effect all the
/// same: its answer was lost or cut short, not a refusal.
fn outcome_unknown(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::DeadlineExceeded
            | Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
    )
}

impl AuthService {
    /// Removes the account of a sign-up whose user was not created: nothing
    /// half-written, no account without its user.
    async fn undo_account(&self, id: &str) {
        if let Err(err) = self.accounts.delete(id).await {
            tracing::error!(account = id, error = %err, "could not remove the account of a failed sign-up");
        }
    }

    /// Removes the user `users` may have made for the failed sign-up of
    /// account `id` (its answers were lost), so that no profile is left
    /// without an account, holding its email against every later sign-up.
    /// Best effort: a create still running at users when this delete finds
    /// nothing can commit after it (both are bounded by their deadlines).
    async fn undo_user(&self, ctx: Option<&ServiceContext>, id: &str) {
        let removed = async {
            let (mut users, request) =
                self.users_call(ctx, DeleteUserRequest { id: id.to_owned() })?;
            match users.delete_user(request).await {
                Ok(_) => Ok(()),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                Err(status) => Err(status),
            }
        };
        let removed = room619::rpc::deadline::Deadline::after(CONFIRM_TIMEOUT)
            .scope(removed)
            .await;
        if let Err(status) = removed {
            tracing::error!(
                account = id,
                error = %status.message(),
                "a failed sign-up may have left a user without an account; delete it with the users service"
            );
        }
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn sign_up(
        &self,
        request: Request<SignUpRequest>,
    ) -> Result<Response<SignUpResponse>, Status> {
        let ctx = request.extensions().get::<ServiceContext>().cloned();
        let sign_up = validate::sign_up(request.into_inner())?;
        let taken = || Status::already_exists(format!("the email {} is taken", sign_up.email));
        if self.accounts.find_by_email(&sign_up.email).await?.is_some() {
            return Err(taken());
        }
        let hash = self.passwords.hash(sign_up.password.clone()).await?;
        let id = random_id()?;
        // The account, its user and the clean-up of a failed half run as a
        // task of their own: a request cancelled (its deadline passed, its
        // client gone) in between cannot leave an account without its user.
        // The deadline still bounds the first call to users.
        let service = self.clone();
        let deadline = room619::rpc::deadline::Deadline::current();
        let account = tokio::spawn({
            let id = id.clone();
            let email = sign_up.email.clone();
            async move {
                if !service.accounts.create(&id, &email, &hash).await? {
                    return Ok(false);
                }
                let create = || service.create_user(ctx.as_ref(), &id, &email, &sign_up.name);
                let first = match deadline {
                    // The caller gave up already: nothing is sent, so there
                    // is nothing to ask again about.
                    Some(deadline) if deadline.is_expired() => {
                        let passed = "the deadline passed before the user was created";
                        service.undo_account(&id).await;
                        return Err(Status::deadline_exceeded(passed));
                    }
                    Some(deadline) => deadline.scope(create()).await,
                    None => create().await,
                };
                let mut unsure = false;
                let created = match first {
                    // Users may have created the user all the same (the
                    // deadline passed as it committed, its answer was lost):
                    // ask again, with the same id, outside the caller's
                    // deadline; users answers with the user it has. (Asked
                    // again and still unsure, the account goes, and the
                    // user users may have made with it.)
                    Err(status) if outcome_unknown(status.code()) => {
                        tracing::warn!(account = id, error = %status.message(), "asking users again whether the user of a sign-up exists");
                        unsure = true;
                        room619::rpc::deadline::Deadline::after(CONFIRM_TIMEOUT)
                            .scope(create())
                            .await
                    }
                    settled => settled,
                };
                if let Err(status) = created {
                    service.undo_account(&id).await;
                    if unsure {
                        service.undo_user(ctx.as_ref(), &id).await;
                    }
                    return Err(for_the_caller(status));
                }
                Ok::<_, Status>(true)
            }
        });
        let created = account
            .await
            .map_err(|err| Status::internal(format!("the sign-up task failed: {err}")))??;
        if !created {
            return Err(taken());
        }
        tracing::info!(account = id, "account created");
        let tokens = self.log_in(&id).await?;
        Ok(Response::new(SignUpResponse {
            user_id: id,
            tokens: Some(tokens),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let request = request.into_inner();
        // No account has a longer password; refuse before hashing megabytes.
        if request.password.chars().count() > *PASSWORD_CHARS.end() {
            return Err(Status::unauthenticated(BAD_LOGIN));
        }
        let email = validate::normalize_email(&request.email);
        // No account has an email sign-up refuses (a NUL in one would fail
        // in PostgreSQL, not as a wrong login); saying so early tells an
        // attacker nothing about which accounts exist.
        if crate::rules::email_problem(&email).is_some() {
            return Err(Status::unauthenticated(BAD_LOGIN));
        }
        let account = self.accounts.find_by_email(&email).await?;
        let (id, stored) = account.map_or((None, None), |(id, hash)| (Some(id), Some(hash)));
        // Unknown emails are checked against a dummy hash: same cost.
        if !self.passwords.verify(request.password, stored).await? {
            return Err(Status::unauthenticated(BAD_LOGIN));
        }
        let id = id.ok_or_else(|| Status::unauthenticated(BAD_LOGIN))?;
        Ok(Response::new(self.log_in(&id).await?))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        let presented = request.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(Status::unauthenticated(BAD_REFRESH));
        }
        let next = self.issuer.new_refresh()?;
        match self
            .accounts
            .rotate(&refresh_hash(&presented), &next)
            .await?
        {
            Rotation::Rotated { account_id } => {
                Ok(Response::new(self.issuer.pair(&account_id, next)?))
            }
            Rotation::Reused { account_id } => {
                tracing::warn!(
                    account = account_id,
                    "a used refresh token was presented again: its token family is revoked"
                );
                Err(Status::unauthenticated(BAD_REFRESH))
            }
            Rotation::Unknown | Rotation::Expired | Rotation::Revoked => {
                Err(Status::unauthenticated(BAD_REFRESH))
            }
        }
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let LogoutRequest {
            refresh_token,
            everywhere,
        } = request.into_inner();
        if refresh_token.is_empty() {
            let mut details = tonic_types::ErrorDetails::new();
            details.add_bad_request_violation("refresh_token", "required");
            return Err(Status::with_error_details(
                tonic::Code::InvalidArgument,
                "refresh_token: the refresh token of the login to end is required",
                details,
            ));
        }
        match self
            .accounts
            .log_out(&refresh_hash(&refresh_token), everywhere)
            .await?
        {
            Logout::Unknown if everywhere => Err(Status::unauthenticated(BAD_REFRESH)),
            Logout::Unknown => Ok(Response::new(LogoutResponse { ended: 0 })),
            Logout::Ended { logins, account_id } => {
                tracing::info!(
                    account = account_id,
                    ended = logins,
                    everywhere,
                    "logged out"
                );
                Ok(Response::new(LogoutResponse { ended: logins }))
            }
            Logout::NotLive { account_id } => {
                tracing::warn!(
                    account = account_id,
                    "every login was asked to end with a used, revoked or expired refresh token: \
                     only its own login ended"
                );
                Err(Status::unauthenticated(BAD_REFRESH))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn only_the_callers_own_refusals_reach_a_sign_up() {
        for code in [
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
        ] {
            let answer = for_the_caller(Status::new(code, "users says"));
            assert_eq!(
                (answer.code(), answer.message()),
                (code, "users says"),
                "{code:?}"
            );
        }
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Unavailable,
            Code::Internal,
            Code::Unimplemented,
            Code::NotFound,
        ] {
            let answer = for_the_caller(Status::new(code, "the JWKS is not loaded"));
            assert_eq!(
                (answer.code(), answer.message()),
                (Code::Unavailable, USERS_REFUSED),
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_login_whose_account_went_away_is_a_wrong_login() {
        let gone = login_refused(Error::failed_precondition("the foreign key"));
        assert_eq!(
            (gone.code(), gone.message()),
            (Code::Unauthenticated, BAD_LOGIN)
        );
        let down = login_refused(Error::unavailable("the database is unavailable"));
        assert_eq!(down.code(), Code::Unavailable);
    }
}
