-- Secrets every replica must share, made by the first server that needs one (never by a
-- migration, so no secret is ever in a migration's text or re-made by `migrate redo`).
-- `cursor` keys the MAC that binds a list cursor to its user and list.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 100),
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Idle sessions are swept by their last use.
CREATE INDEX mcp_sessions_updated_at_idx ON mcp_sessions (updated_at);
