//! The account and refresh-token tables (`auth_accounts`,
//! `auth_refresh_tokens`), in SQL that runs on SQLite and PostgreSQL.

use room619::{Error, Result};

use super::tokens::{NewRefresh, now};
use crate::store::Db;

/// The accounts of the shop's database.
#[derive(Debug, Clone)]
pub(crate) struct Accounts {
    db: Db,
}

/// What became of a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rotation {
    /// It was valid; it is now used and `next` (same family) replaces it.
    Rotated {
        /// The account it belongs to.
        account_id: String,
    },
    /// No such token.
    Unknown,
    /// It expired unused.
    Expired,
    /// Its family was revoked earlier.
    Revoked,
    /// It had been used already: its whole family is now revoked.
    Reused {
        /// The account it belongs to.
        account_id: String,
    },
}

/// A database failure, logged with its cause; the caller learns only that
/// the store failed.
fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| {
        tracing::error!(error = %err, "auth store: {what} failed");
        Error::unavailable(format!("the account store failed ({what})")).with_source(err)
    }
}

impl Accounts {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Stores a new account; `false` when the email is taken.
    pub(crate) async fn create(&self, id: &str, email: &str, password_hash: &str) -> Result<bool> {
        let created_at =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let inserted = sqlx::query(
            "INSERT INTO auth_accounts (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(created_at)
        .execute(self.db.pool())
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Ok(false),
            Err(err) => Err(failed("creating an account")(err)),
        }
    }

    /// The id and password hash of the account with `email`.
    pub(crate) async fn find_by_email(&self, email: &str) -> Result<Option<(String, String)>> {
        sqlx::query_as("SELECT id, password_hash FROM auth_accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(self.db.pool())
            .await
            .map_err(failed("finding an account"))
    }

    /// Deletes the account `id` and its refresh tokens; `false` when there
    /// was no such account.
    pub(crate) async fn delete(&self, id: &str) -> Result<bool> {
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(failed("deleting an account"))?;
        sqlx::query("DELETE FROM auth_refresh_tokens WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(failed("deleting refresh tokens"))?;
        let deleted = sqlx::query("DELETE FROM auth_accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(failed("deleting an account"))?;
        tx.commit().await.map_err(failed("deleting an account"))?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Stores the first refresh token of a new family for `account_id`.
    pub(crate) async fn start_family(
        &self,
        account_id: &str,
        family_id: &str,
        token: &NewRefresh,
    ) -> Result<()> {
        let stored = Stored {
            account_id,
            family_id,
            hash: &token.hash,
            expires_at: token.expires_at,
            family_expires_at: token.family_expires_at,
        };
        insert_refresh(self.db.pool(), &stored)
            .await
            .map_err(failed("storing a refresh token"))
    }

    /// Removes the tokens of families that have ended; how many.
    pub(crate) async fn remove_ended_families(&self) -> Result<u64> {
        sqlx::query("DELETE FROM auth_refresh_tokens WHERE family_expires_at <= $1")
            .bind(now())
            .execute(self.db.pool())
            .await
            .map(|done| done.rows_affected())
            .map_err(failed("removing ended token families"))
    }

    /// Uses the refresh token whose hash is `presented`: marks it used and
    /// stores `next` in its family (expiring no later than the family
    /// does), or says why it cannot be used (revoking the family when it
    /// was used before).
    pub(crate) async fn rotate(&self, presented: &str, next: &NewRefresh) -> Result<Rotation> {
        let at = now();
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(failed("rotating a refresh token"))?;
        // Writing first takes the write lock at once (SQLite) and lets only
        // one of two concurrent uses claim the token (PostgreSQL).
        let claimed = sqlx::query(
            "UPDATE auth_refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(presented)
        .execute(&mut *tx)
        .await
        .map_err(failed("rotating a refresh token"))?
        .rows_affected()
            == 1;
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT account_id, family_id, used_at, revoked_at, family_expires_at \
             FROM auth_refresh_tokens WHERE token_hash = $1",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("rotating a refresh token"))?;
        let Some((account_id, family_id, used_at, revoked_at, family_end)) = row else {
            return Ok(Rotation::Unknown);
        };
        let rotation = if claimed {
            let family_expires_at = family_end.unwrap_or(next.family_expires_at);
            let stored = Stored {
                account_id: &account_id,
                family_id: &family_id,
                hash: &next.hash,
                expires_at: next.expires_at.min(family_expires_at),
                family_expires_at,
            };
            insert_refresh(&mut *tx, &stored)
                .await
                .map_err(failed("storing a refresh token"))?;
            Rotation::Rotated { account_id }
        } else if revoked_at.is_some() {
            Rotation::Revoked
        } else if used_at.is_some() {
            sqlx::query(
                "UPDATE auth_refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(&family_id)
            .execute(&mut *tx)
            .await
            .map_err(failed("revoking a token family"))?;
            Rotation::Reused { account_id }
        } else {
            Rotation::Expired
        };
        tx.commit()
            .await
            .map_err(failed("rotating a refresh token"))?;
        Ok(rotation)
    }
}

/// A presented token's row: account, family, when used, when revoked, when
/// its family ends (unset only for rows from before families ended).
type TokenRow = (String, String, Option<i64>, Option<i64>, Option<i64>);

/// A refresh token's row.
struct Stored<'a> {
    account_id: &'a str,
    family_id: &'a str,
    hash: &'a str,
    expires_at: i64,
    family_expires_at: i64,
}

async fn insert_refresh<'e, E>(executor: E, token: &Stored<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO auth_refresh_tokens \
         (token_hash, account_id, family_id, expires_at, family_expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.hash)
    .bind(token.account_id)
    .bind(token.family_id)
    .bind(token.expires_at)
    .bind(token.family_expires_at)
    .execute(executor)
    .await
    .map(|_| ())
}
