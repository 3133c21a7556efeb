-- Every product carries a version, 1 when created and one more with each
-- change (an update, or its archiving with its owner): the gateway's ETag,
-- and what an update or delete made with `expected_version` (HTTP
-- `If-Match`) is checked against, so that two edits from one read cannot
-- both apply.
ALTER TABLE products ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
