-- auth: refresh tokens, stored as the SHA-256 (hex) of the token only.
-- Each login starts a family; Refresh marks a token used and adds the next
-- one of its family; presenting a used token revokes the whole family.
-- Times are seconds since the Unix epoch.
CREATE TABLE auth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES auth_accounts (id) ON DELETE CASCADE,
    family_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX auth_refresh_tokens_family ON auth_refresh_tokens (family_id);
CREATE INDEX auth_refresh_tokens_account ON auth_refresh_tokens (account_id);
