//! The transactional outbox of the users service.
//!
//! A change and the event announcing it are written in one transaction
//! ([`enqueue`]): the event row exists exactly when the change does. The
//! relay ([`run`]) claims pending rows, publishes them on the bus with the
//! row id as message id (JetStream drops a republished duplicate), and
//! deletes each row once the bus accepted it. A crash between publishing and
//! deleting republishes (at least once); a crash before publishing loses
//! nothing. Claims expire, so the rows of a relay that died are taken over.
//!
//! Several relays share the table (both API versions, several instances),
//! and events go out in the order they were written: a pass runs only while
//! its relay holds the one lease row of `users_outbox_relay`. The relays of
//! one process take turns on a lock and share one lease holder id, so a relay
//! woken while the other passes runs right after it; another instance's relay
//! finds the lease taken and looks again at its next poll.

use std::{sync::Arc, time::Duration};

use room619::{
    ServiceContext,
    bus::{MessageBus, OutgoingMessage},
};
use shop_proto::users::v1::UserEvent;
use sqlx::{Any, Row as _, Transaction, any::AnyRow};
use tokio::sync::{Mutex, Notify};

use crate::store::{Db, db_error, new_id, timestamp, unix_millis};

/// Published when a user is created.
pub const CREATED: &str = "users.created";
/// Published when a user is deleted.
pub const DELETED: &str = "users.deleted";

/// The most rows one relay pass publishes.
const BATCH: i64 = 100;
/// How long a claim (of the lease or of a row) lasts before another relay
/// may take it.
const CLAIM_MS: i64 = 30_000;
/// How often the relay looks for rows nobody woke it for (written by other
/// instances, left by a crash, or after the bus failed).
const POLL: Duration = Duration::from_secs(1);
/// The longest the final pass at shutdown may take.
const FINAL_PASS: Duration = Duration::from_secs(5);

/// Wakes the relay when a request committed an event, and lets the relays
/// of this process take turns.
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: Notify,
    /// Held for the length of a pass.
    turn: Mutex<()>,
    /// This process's name on the lease.
    holder: String,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            pending: Notify::new(),
            turn: Mutex::new(()),
            holder: new_id(),
        }
    }
}

impl Outbox {
    /// Tells a relay that rows are waiting.
    pub(crate) fn wake(&self) {
        self.pending.notify_one();
    }
}

/// Queues the event `subject` about `user_id` inside the caller's
/// transaction.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    subject: &str,
    user_id: &str,
    email: &str,
) -> room619::Result<()> {
    sqlx::query(
        "INSERT INTO users_outbox (id, subject, user_id, email, created_at, claimed_until) \
         VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(new_id())
    .bind(subject)
    .bind(user_id)
    .bind(email)
    .bind(timestamp())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// One queued event.
struct Pending {
    id: String,
    subject: String,
    created_at: String,
    event: UserEvent,
}

impl Pending {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            created_at: row.try_get("created_at")?,
            event: UserEvent {
                user_id: row.try_get("user_id")?,
                email: row.try_get("email")?,
            },
        })
    }
}

/// The relay loop: publishes pending events until the node shuts down. It
/// waits before its first pass, so the node's subscribers are listening
/// when rows left from a previous run go out.
pub(crate) async fn run(ctx: ServiceContext, db: Db, outbox: Arc<Outbox>) {
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                biased;
                () = ctx.shutdown_signal() => break,
                () = outbox.pending.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        more = match pass(ctx.bus(), &db, &outbox).await {
            Ok(published) => published == BATCH,
            Err(err) => {
                tracing::warn!(error = %err, "the users outbox relay could not publish; retrying");
                false
            }
        };
    }
}

/// The pass at shutdown, after the requests drained: what they queued goes
/// out now rather than at the next start.
pub(crate) async fn final_pass(bus: &MessageBus, db: &Db, outbox: &Outbox) {
    let result = tokio::time::timeout(FINAL_PASS, async {
        loop {
            match pass(bus, db, outbox).await {
                Ok(published) if published == BATCH => {}
                other => return other,
            }
        }
    })
    .await;
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "events stay in the users outbox until the next start");
        }
        Err(_) => tracing::warn!("the final outbox pass timed out; events stay queued"),
    }
}

/// Takes the lease, publishes up to [`BATCH`] rows ([`publish_batch`]) and
/// hands the lease back; the count published, 0 when another instance's
/// relay holds the lease.
///
/// # Errors
///
/// The database's or the bus's error.
pub(crate) async fn pass(bus: &MessageBus, db: &Db, outbox: &Outbox) -> room619::Result<i64> {
    let _turn = outbox.turn.lock().await;
    let now = unix_millis();
    // One row, so PostgreSQL serialises two relays on its lock and checks
    // `held_until` again on the row the first one wrote: one of them wins.
    let taken = sqlx::query(
        "UPDATE users_outbox_relay SET holder = $1, held_until = $2 \
         WHERE name = 'users' AND (held_until < $3 OR holder = $1)",
    )
    .bind(&outbox.holder)
    .bind(now + CLAIM_MS)
    .bind(now)
    .execute(db.pool())
    .await
    .map_err(db_error)?;
    if taken.rows_affected() == 0 {
        return Ok(0);
    }
    let published = publish_batch(bus, db).await;
    if let Err(err) = sqlx::query(
        "UPDATE users_outbox_relay SET held_until = 0 WHERE name = 'users' AND holder = $1",
    )
    .bind(&outbox.holder)
    .execute(db.pool())
    .await
    {
        tracing::debug!(error = %err, "the outbox lease stays until it expires");
    }
    published
}

/// Claims up to [`BATCH`] free rows, publishes them in order and deletes
/// each once the bus accepted it; the count published.
///
/// # Errors
///
/// The database's or the bus's error; the rows not published are released
/// for the next pass.
async fn publish_batch(bus: &MessageBus, db: &Db) -> room619::Result<i64> {
    let now = unix_millis();
    // The outer `claimed_until < $2` is checked again on the row as it is
    // when the lock is granted (PostgreSQL re-reads a row another relay
    // changed meanwhile), so two relays never both claim one row, even one
    // whose lease ran out mid-pass; SQLite runs one writer at a time anyway.
    let rows = sqlx::query(&format!(
        "UPDATE users_outbox SET claimed_until = $1 WHERE claimed_until < $2 AND id IN \
         (SELECT id FROM users_outbox WHERE claimed_until < $2 ORDER BY created_at, id LIMIT {BATCH}) \
         RETURNING id, subject, user_id, email, created_at"
    ))
    .bind(now + CLAIM_MS)
    .bind(now)
    .fetch_all(db.pool())
    .await
    .map_err(db_error)?;
    let mut pending = rows
        .iter()
        .map(Pending::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    pending.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    let mut published = 0;
    let mut rows = pending.into_iter();
    while let Some(row) = rows.next() {
        if let Err(err) = publish(bus, &row).await {
            release(db, std::iter::once(row).chain(rows)).await;
            return Err(err);
        }
        sqlx::query("DELETE FROM users_outbox WHERE id = $1")
            .bind(&row.id)
            .execute(db.pool())
            .await
            .map_err(db_error)?;
        published += 1;
    }
    Ok(published)
}

async fn publish(bus: &MessageBus, row: &Pending) -> room619::Result<()> {
    let message = OutgoingMessage::encode(row.subject.clone(), &row.event, bus.format())?
        .message_id(row.id.clone());
    bus.publish_message(message).await
}

/// Frees the claims of `rows` so the next pass retries them.
async fn release(db: &Db, rows: impl Iterator<Item = Pending>) {
    for row in rows {
        if let Err(err) = sqlx::query("UPDATE users_outbox SET claimed_until = 0 WHERE id = $1")
            .bind(&row.id)
            .execute(db.pool())
            .await
        {
            tracing::debug!(error = %err, "an outbox claim stays until it expires");
        }
    }
}
