-- The older schema cannot hold a restriction: a narrowed token would come back with full
-- access. Revoke those instead (they stay listed, as revoked); full-access tokens live on.
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
    WHERE scopes IS NOT NULL;
ALTER TABLE api_tokens DROP COLUMN scopes;
