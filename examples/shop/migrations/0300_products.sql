-- The product catalog. Portable SQL: it runs on SQLite and PostgreSQL alike.
CREATE TABLE products (
    id TEXT PRIMARY KEY,
    -- The users.v1 id of the creator (no foreign key: another service owns users).
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The name lower-cased (Unicode) by the service, for case-insensitive search.
    name_folded TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    -- 1 once the owner is deleted, else 0.
    archived BIGINT NOT NULL DEFAULT 0,
    -- RFC 3339 UTC with microseconds: sorts as text in time order.
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Keyset pagination walks (created_at, id).
CREATE INDEX products_by_creation ON products (created_at, id);
CREATE INDEX products_by_owner ON products (owner_id, created_at, id);
