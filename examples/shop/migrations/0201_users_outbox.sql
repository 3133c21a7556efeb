-- The transactional outbox of the users service: a row is written in the
-- same transaction as the change it announces, and deleted by the relay once
-- the bus accepted the event (`users.created`, `users.deleted`).
CREATE TABLE users_outbox (
    -- Also the bus message id, so a republished event is deduplicated.
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- Unix milliseconds until which a relay owns the row; 0 when free.
    claimed_until BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX users_outbox_by_creation ON users_outbox (created_at, id);
