-- auth: a login's token family ends at a fixed time however often its
-- tokens are rotated (`[app.shop.auth] session_ttl`), and the rows of ended
-- families are removed. Families from before this migration end when their
-- newest token expires.
ALTER TABLE auth_refresh_tokens ADD COLUMN family_expires_at BIGINT;
UPDATE auth_refresh_tokens SET family_expires_at = (
    SELECT MAX(family.expires_at) FROM auth_refresh_tokens family
    WHERE family.family_id = auth_refresh_tokens.family_id
);
CREATE INDEX auth_refresh_tokens_family_end ON auth_refresh_tokens (family_expires_at);
