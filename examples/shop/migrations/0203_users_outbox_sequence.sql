-- Events go out in the order their transactions committed: each queued event
-- takes the next number of this one counter row, whose lock its transaction
-- holds until it commits, so a number is visible only after every smaller
-- one. The relay publishes by number; the lease of `users_outbox_relay`
-- alone decides which relay publishes, so rows are no longer claimed one by
-- one (claims let a relay publish a row after one that failed before it).
CREATE TABLE users_outbox_sequence (
    name TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);

INSERT INTO users_outbox_sequence (name, last) VALUES ('users', 0);

-- Rows queued before this migration keep 0 and go first, by creation time.
ALTER TABLE users_outbox ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE users_outbox DROP COLUMN claimed_until;

CREATE INDEX users_outbox_by_seq ON users_outbox (seq, created_at, id);
