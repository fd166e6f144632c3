-- What an API token may do, as OAuth scopes (`todo:read`, `todo:write`, space-separated).
-- NULL for the tokens issued before scopes existed: they keep full access.
ALTER TABLE api_tokens
    ADD COLUMN scopes text
    CHECK (scopes IN ('todo:read', 'todo:write', 'todo:read todo:write'));
