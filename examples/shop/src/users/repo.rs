//! The users table: validation, queries and the outbox writes, shared by
//! both API versions.

use std::sync::Arc;

use room619::{Error, ErrorKind, middleware::auth::Principal};
use sqlx::{Row as _, any::AnyRow};

use super::outbox::{self, Outbox};
use crate::store::{
    Db, db_error,
    page::{self, Cursor},
    timestamp,
};

/// The scope `CreateUser` needs (the auth service's token has it); it also
/// lets its holder delete any user (auth undoing a failed sign-up).
pub(crate) const CREATE_SCOPE: &str = "users:create";
/// The longest name, in characters.
const MAX_NAME: usize = 100;
/// The longest caller-chosen id.
const MAX_ID: usize = 128;

const COLUMNS: &str = "id, email, name, created_at";

/// One user, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) created_at: String,
}

impl UserRow {
    /// The row as `caller` may see it: the email (a login, personal data)
    /// only on the caller's own profile, or for a service token (auth
    /// creating the user); every other caller gets it empty.
    pub(crate) fn seen_by(mut self, caller: &Principal) -> Self {
        if caller.subject() != self.id && !caller.has_scope(CREATE_SCOPE) {
            self.email.clear();
        }
        self
    }

    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at.clone(),
            id: self.id.clone(),
        }
    }
}

/// The users' data, for both API versions. `name_field` in the methods is
/// what the calling version calls the name (`name`, `display_name`), so
/// error messages speak its language.
#[derive(Debug, Clone)]
pub(crate) struct UserStore {
    db: Db,
    outbox: Arc<Outbox>,
}

impl UserStore {
    pub(crate) fn new(db: Db, outbox: Arc<Outbox>) -> Self {
        Self { db, outbox }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Creates a user and queues `users.created`, in one transaction. Asked
    /// again with the id, email and name of a user it has, answers that
    /// user: a caller whose first answer was lost can ask again safely.
    pub(crate) async fn create(
        &self,
        caller: &Principal,
        id: &str,
        email: &str,
        name: (&str, &str),
    ) -> room619::Result<UserRow> {
        if !caller.has_scope(CREATE_SCOPE) {
            return Err(Error::permission_denied(format!(
                "creating users needs the scope `{CREATE_SCOPE}`"
            )));
        }
        let id = if id.is_empty() {
            crate::store::new_id()
        } else {
            check_id(id)?.to_owned()
        };
        let email = check_email(email)?;
        let name = check_name(name.0, name.1)?;
        let now = timestamp();
        let mut tx = self.db.pool().begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&id)
        .bind(&email)
        .bind(&name)
        .bind(&now)
        .execute(&mut *tx)
        .await;
        if let Err(err) = inserted {
            let err = db_error(err);
            drop(tx);
            if err.kind() != ErrorKind::AlreadyExists {
                return Err(err);
            }
            // Asked again for a user it has (the caller lost the first
            // answer, or its deadline passed as this committed): the user.
            if let Ok(existing) = self.get(&id).await
                && existing.email == email
                && existing.name == name
            {
                return Ok(existing);
            }
            return Err(self.which_exists(&id, &email).await);
        }
        outbox::enqueue(&mut tx, outbox::CREATED, &id, &email).await?;
        tx.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(UserRow {
            id,
            email,
            name,
            created_at: now,
        })
    }

    /// The `AlreadyExists` error after a unique violation on `id` or `email`.
    async fn which_exists(&self, id: &str, email: &str) -> Error {
        let taken: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(self.db.pool())
                .await;
        match taken {
            Ok(Some(_)) => {
                Error::already_exists(format!("a user with email {email} exists already"))
            }
            Ok(None) => Error::already_exists(format!("a user with id {id} exists already")),
            Err(err) => db_error(err),
        }
    }

    /// One user; `NotFound` when there is none.
    pub(crate) async fn get(&self, id: &str) -> room619::Result<UserRow> {
        let id = crate::access::required("id", id)?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => UserRow::from_row(&row).map_err(db_error),
            None => Err(not_found(id)),
        }
    }

    /// A page of users in creation order, and the next page's token.
    pub(crate) async fn list(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> room619::Result<(Vec<UserRow>, String)> {
        let size = page::page_size(page_size)?;
        let cursor = Cursor::decode(page_token)?;
        let limit = size + 1;
        let sql = match &cursor {
            None => format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT {limit}"),
            Some(_) => format!(
                "SELECT {COLUMNS} FROM users WHERE {after} ORDER BY created_at, id LIMIT {limit}",
                after = page::after(1, 2),
            ),
        };
        let mut query = sqlx::query(&sql);
        if let Some(cursor) = &cursor {
            query = query
                .bind(cursor.created_at.as_str())
                .bind(cursor.id.as_str());
        }
        let rows = query.fetch_all(self.db.pool()).await.map_err(db_error)?;
        let rows = rows
            .iter()
            .map(UserRow::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        Ok(page::split(rows, size, UserRow::cursor))
    }

    /// Renames the caller's own profile.
    pub(crate) async fn update(
        &self,
        caller: &Principal,
        id: &str,
        name: (&str, &str),
    ) -> room619::Result<UserRow> {
        let id = own(caller, id, "change")?;
        let name = check_name(name.0, name.1)?;
        let row = sqlx::query(&format!(
            "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&name)
        .bind(timestamp())
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => UserRow::from_row(&row).map_err(db_error),
            None => Err(not_found(id)),
        }
    }

    /// Deletes the caller's own profile (or, for the auth service's token,
    /// the one a failed sign-up may have left) and queues `users.deleted`,
    /// in one transaction.
    pub(crate) async fn delete(&self, caller: &Principal, id: &str) -> room619::Result<()> {
        let id = if caller.has_scope(CREATE_SCOPE) {
            crate::access::required("id", id)?
        } else {
            own(caller, id, "delete")?
        };
        let mut tx = self.db.pool().begin().await.map_err(db_error)?;
        let email: Option<String> =
            sqlx::query_scalar("DELETE FROM users WHERE id = $1 RETURNING email")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let Some(email) = email else {
            return Err(not_found(id));
        };
        outbox::enqueue(&mut tx, outbox::DELETED, id, &email).await?;
        tx.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }
}

/// `id` when it is the caller's own; `PermissionDenied` otherwise.
fn own<'a>(caller: &Principal, id: &'a str, what: &str) -> room619::Result<&'a str> {
    let id = crate::access::required("id", id)?;
    if caller.subject() != id {
        return Err(Error::permission_denied(format!(
            "you may only {what} your own profile"
        )));
    }
    Ok(id)
}

/// A caller-chosen id: 1 to 128 visible characters.
fn check_id(id: &str) -> room619::Result<&str> {
    if id.chars().count() > MAX_ID || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_argument(format!(
            "id must be at most {MAX_ID} characters without spaces or control characters"
        )));
    }
    Ok(id)
}

/// An email address of the shape `local@domain.tld`, lower-cased.
pub(crate) fn check_email(email: &str) -> room619::Result<String> {
    let email = email.trim();
    if email.is_empty() {
        return Err(Error::invalid_argument("email is required"));
    }
    if let Some(problem) = crate::rules::email_problem(email) {
        return Err(Error::invalid_argument(format!(
            "email {problem}; got `{email}`"
        )));
    }
    Ok(crate::rules::normalize_email(email))
}

/// A name of 1 to 100 characters once trimmed; `field` names it in errors.
pub(crate) fn check_name(field: &str, name: &str) -> room619::Result<String> {
    let name = name.trim();
    if let Some(problem) = crate::rules::name_problem(name, MAX_NAME) {
        return Err(Error::invalid_argument(format!("{field} {problem}")));
    }
    Ok(name.to_owned())
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("no user with id {id}"))
}
