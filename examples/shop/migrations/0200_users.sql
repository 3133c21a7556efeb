-- The users service's profiles (users.v1 and users.v2 serve the same rows).
-- Portable SQL: it runs on SQLite and PostgreSQL alike.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Lower-cased; one profile per address.
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- RFC 3339 UTC with microseconds: sorts as text in time order.
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Keyset pagination walks (created_at, id).
CREATE INDEX users_by_creation ON users (created_at, id);
