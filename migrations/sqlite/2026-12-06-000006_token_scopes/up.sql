-- What an API token may do; see migrations/postgres.
ALTER TABLE api_tokens
    ADD COLUMN scopes TEXT
    CHECK (scopes IN ('todo:read', 'todo:write'));
