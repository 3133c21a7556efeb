-- The owners of products, and whether their user was deleted. Making a
-- product and archiving its owner's products both write the owner's row
-- first, so the one that comes second waits for the first: a product is
-- never made for an owner already deleted (with a token still valid), nor
-- left listed by an archive that ran beside its creation.
CREATE TABLE products_owners (
    owner_id TEXT PRIMARY KEY,
    -- 1 once the owner's users.deleted event was handled, else 0.
    deleted BIGINT NOT NULL DEFAULT 0
);

-- Owners archived before this table: their products are archived.
INSERT INTO products_owners (owner_id, deleted)
SELECT DISTINCT owner_id, 1 FROM products WHERE archived = 1;
