-- Narrowed tokens are revoked rather than widened; see migrations/postgres.
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    WHERE scopes IS NOT NULL;
ALTER TABLE api_tokens DROP COLUMN scopes;
