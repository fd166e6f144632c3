-- What an API token is restricted to: one OAuth scope (`todo:read` or `todo:write`), or NULL
-- for every scope (as the tokens issued before scopes existed have).
ALTER TABLE api_tokens
    ADD COLUMN scopes text
    CHECK (scopes IN ('todo:read', 'todo:write'));
