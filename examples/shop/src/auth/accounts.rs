//! The account and refresh-token tables (`auth_accounts`,
//! `auth_refresh_tokens`), in SQL that runs on SQLite and PostgreSQL.

use room619::{Error, Result};

use super::tokens::{NewRefresh, now};
use crate::store::{Db, db_error};

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

/// A database failure, mapped as every one of the shop's is
/// ([`db_error`]: the database busy or out of reach `UNAVAILABLE`, a
/// transaction lost to another `ABORTED`, a constraint its own kind, such as
/// `FAILED_PRECONDITION` for a foreign key naming an account deleted
/// meanwhile; anything else `INTERNAL`), and logged with `what` failed.
fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| {
        let error = db_error(err);
        tracing::warn!(kind = ?error.kind(), error = ?error, "auth store: {what} failed");
        error
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
        // The account first: its row is the lock every change to its tokens
        // takes first (see `lock_account`), so this cannot deadlock with one.
        let deleted = sqlx::query("DELETE FROM auth_accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(failed("deleting an account"))?;
        sqlx::query("DELETE FROM auth_refresh_tokens WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(failed("deleting refresh tokens"))?;
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
        if !lock_account(&mut tx, presented).await? {
            return Ok(Rotation::Unknown);
        }
        // Only one of two concurrent uses claims the token.
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
        let Some(TokenRow {
            account_id,
            family_id,
            used_at,
            revoked_at,
            family_end,
            ..
        }) = token_row(&mut tx, presented)
            .await
            .map_err(failed("rotating a refresh token"))?
        else {
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
            revoke(&mut tx, Ended::Family(&family_id), at).await?;
            Rotation::Reused { account_id }
        } else {
            Rotation::Expired
        };
        tx.commit()
            .await
            .map_err(failed("rotating a refresh token"))?;
        Ok(rotation)
    }

    /// Ends the login the refresh token whose hash is `presented` belongs
    /// to (its family is revoked, whether the token was used or not), or
    /// with `everywhere` every login of its account, which only a token that
    /// could still be refreshed may ask (a used one still ends its own
    /// login: it may have been stolen and used first).
    pub(crate) async fn log_out(&self, presented: &str, everywhere: bool) -> Result<Logout> {
        let at = now();
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(failed("ending a login"))?;
        let row = if lock_account(&mut tx, presented).await? {
            token_row(&mut tx, presented)
                .await
                .map_err(failed("ending a login"))?
        } else {
            None
        };
        let Some(row) = row else {
            return Ok(Logout::Unknown);
        };
        let live = row.used_at.is_none() && row.revoked_at.is_none() && row.expires_at > at;
        let ended = if everywhere && live {
            Ended::Account(&row.account_id)
        } else {
            Ended::Family(&row.family_id)
        };
        let logins = revoke(&mut tx, ended, at).await?;
        tx.commit().await.map_err(failed("ending a login"))?;
        Ok(if everywhere && !live {
            Logout::NotLive {
                account_id: row.account_id,
            }
        } else {
            Logout::Ended {
                logins,
                account_id: row.account_id,
            }
        })
    }
}

/// What a logout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Logout {
    /// No such token: nothing changed.
    Unknown,
    /// This many logins of the account that could still be refreshed ended
    /// (0: the token's login had ended already).
    Ended {
        /// How many.
        logins: u32,
        /// The account they belong to.
        account_id: String,
    },
    /// Every login was asked to end with a token that could not be
    /// refreshed: only the token's own login ended.
    NotLive {
        /// The account it belongs to.
        account_id: String,
    },
}

/// The logins a revocation ends.
#[derive(Debug, Clone, Copy)]
enum Ended<'a> {
    /// One login: the token family with this id.
    Family(&'a str),
    /// Every login of the account with this id.
    Account(&'a str),
}

/// Takes the row lock of the account the refresh token whose hash is
/// `presented` belongs to, for the rest of `tx`: `false` when there is no
/// such token (or account). Rotations and logouts take it first, and an
/// account's deletion deletes the row first, so that these change an
/// account's tokens one after the other. Without it, a family revoked on
/// PostgreSQL while one of its tokens was being rotated kept the token
/// rotated in alive: it was inserted after the revocation's snapshot. A new
/// login does not wait for it (a login made while every login is ended may
/// live on: it was made with the password). It is a write that changes
/// nothing, made first in `tx`, so that on SQLite it takes the database's
/// write lock at once (a transaction that read first cannot write once
/// another one has).
async fn lock_account(tx: &mut sqlx::Transaction<'_, sqlx::Any>, presented: &str) -> Result<bool> {
    let locked = sqlx::query(
        "UPDATE auth_accounts SET id = id \
         WHERE id = (SELECT account_id FROM auth_refresh_tokens WHERE token_hash = $1)",
    )
    .bind(presented)
    .execute(&mut **tx)
    .await
    .map_err(failed("locking an account"))?
    .rows_affected();
    Ok(locked == 1)
}

/// The row of the refresh token whose hash is `presented`.
async fn token_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    presented: &str,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let row: Option<Columns> = sqlx::query_as(
        "SELECT account_id, family_id, expires_at, used_at, revoked_at, family_expires_at \
             FROM auth_refresh_tokens WHERE token_hash = $1",
    )
    .bind(presented)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(
        |(account_id, family_id, expires_at, used_at, revoked_at, family_end)| TokenRow {
            account_id,
            family_id,
            expires_at,
            used_at,
            revoked_at,
            family_end,
        },
    ))
}

/// Revokes the tokens of the logins `ended` at `at`; how many of those
/// logins could still be refreshed until then. Families that have ended are
/// left to [`Accounts::remove_ended_families`] (not locking its rows keeps
/// the two from waiting on each other).
async fn revoke(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ended: Ended<'_>,
    at: i64,
) -> Result<u32> {
    let (column, id) = match ended {
        Ended::Family(id) => ("family_id", id),
        Ended::Account(id) => ("account_id", id),
    };
    let revoked: Vec<(String, Option<i64>, i64)> = sqlx::query_as(&format!(
        "UPDATE auth_refresh_tokens SET revoked_at = $1 \
         WHERE {column} = $2 AND revoked_at IS NULL AND family_expires_at > $1 \
         RETURNING family_id, used_at, expires_at"
    ))
    .bind(at)
    .bind(id)
    .fetch_all(&mut **tx)
    .await
    .map_err(failed("revoking refresh tokens"))?;
    let live: std::collections::HashSet<&str> = revoked
        .iter()
        .filter(|(_, used_at, expires_at)| used_at.is_none() && *expires_at > at)
        .map(|(family, _, _)| family.as_str())
        .collect();
    Ok(u32::try_from(live.len()).unwrap_or(u32::MAX))
}

/// The columns [`token_row`] reads, in [`TokenRow`]'s order.
type Columns = (String, String, i64, Option<i64>, Option<i64>, Option<i64>);

/// A presented refresh token's row.
struct TokenRow {
    account_id: String,
    family_id: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    /// When its family ends (unset only for rows from before families
    /// ended).
    family_end: Option<i64>,
}

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

#[cfg(test)]
mod tests {
    use room619::ErrorKind;

    use super::*;

    /// A token for an account that is gone (its user deleted between a
    /// login's password check and this insert) breaks the foreign key: a
    /// refusal of the request, not a database out of reach.
    #[tokio::test]
    async fn a_family_of_an_account_deleted_meanwhile_is_a_failed_precondition() {
        let dir = std::env::temp_dir().join(format!("shop-accounts-{}", crate::store::new_id()));
        let db = Db::open_sqlite(&dir.join("shop.db")).await.unwrap();
        let accounts = Accounts::new(db.clone());
        let token = |hash: &str| NewRefresh {
            token: format!("token-{hash}"),
            hash: hash.to_owned(),
            expires_at: now() + 60,
            family_expires_at: now() + 60,
        };
        assert!(
            accounts
                .create("a1", "ada@example.com", "hash")
                .await
                .unwrap()
        );
        accounts
            .start_family("a1", "f1", &token("h1"))
            .await
            .unwrap();
        assert!(accounts.delete("a1").await.unwrap());
        let gone = accounts
            .start_family("a1", "f2", &token("h2"))
            .await
            .unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::FailedPrecondition, "{gone:?}");
        // A duplicate is a conflict, not an outage either.
        assert!(
            accounts
                .create("a2", "bob@example.com", "hash")
                .await
                .unwrap()
        );
        accounts
            .start_family("a2", "f3", &token("h3"))
            .await
            .unwrap();
        let twice = accounts
            .start_family("a2", "f4", &token("h3"))
            .await
            .unwrap_err();
        assert_eq!(twice.kind(), ErrorKind::AlreadyExists, "{twice:?}");
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
