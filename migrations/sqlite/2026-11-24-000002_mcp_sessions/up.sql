-- Optional Streamable HTTP sessions (`todo-mcp http --sessions`); see migrations/postgres.
CREATE TABLE mcp_sessions (
    id         TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL CHECK (json_valid(state)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX mcp_sessions_user_id_idx ON mcp_sessions (user_id);
