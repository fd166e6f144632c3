-- Optional Streamable HTTP sessions (`todo-mcp http --sessions`): what a replica needs to
-- serve a session it did not start, and whose it is.
CREATE TABLE mcp_sessions (
    id         text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 200),
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The client's initialize parameters, replayed by a replica restoring the session.
    state      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_sessions_user_id_idx ON mcp_sessions (user_id);
