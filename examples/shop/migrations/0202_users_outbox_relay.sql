-- Which relay publishes the users outbox. One relay at a time holds this
-- lease, so events go out in the order they were written even when several
-- relays (both API versions, several instances) share the table; a relay
-- that died loses the lease when `held_until` passes.
CREATE TABLE users_outbox_relay (
    name TEXT PRIMARY KEY,
    -- The id of the relay holding the lease; empty when nobody has held it.
    holder TEXT NOT NULL,
    -- Unix milliseconds until which `holder` owns the lease; 0 when free.
    held_until BIGINT NOT NULL
);

INSERT INTO users_outbox_relay (name, holder, held_until) VALUES ('users', '', 0);
