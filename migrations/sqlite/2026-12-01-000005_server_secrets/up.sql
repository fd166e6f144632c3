-- Secrets every replica must share; see migrations/postgres.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret     BLOB NOT NULL CHECK (length(secret) >= 32),
    created_at TEXT NOT NULL
);
CREATE INDEX mcp_sessions_updated_at_idx ON mcp_sessions (updated_at);
