-- The same schema as migrations/postgres, in SQLite's types: uuids are canonical
-- lowercase text (so text order is uuid order), timestamps are RFC 3339 text, json is text.

CREATE TABLE users (
    id         TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 255),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT CHECK (length(name) <= 200),
    token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at TEXT,
    revoked_at TEXT
);
CREATE INDEX api_tokens_user_id_created_at_idx ON api_tokens (user_id, created_at);

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title           TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description     TEXT CHECK (length(description) <= 10000),
    completed       BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    idempotency_key TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    completed_at    TEXT,
    CHECK (completed = (completed_at IS NOT NULL)),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX tasks_user_id_id_idx ON tasks (user_id, id DESC);
CREATE INDEX tasks_user_id_completed_id_idx ON tasks (user_id, completed, id DESC);

CREATE TABLE conversations (
    id                         TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    user_id                    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title                      TEXT CHECK (length(title) <= 500),
    status                     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    summary                    TEXT CHECK (length(summary) <= 100000),
    summary_through_message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    archived_at                TEXT,
    CHECK ((status = 'archived') = (archived_at IS NOT NULL)),
    UNIQUE (id, user_id)
);
CREATE INDEX conversations_user_id_status_id_idx ON conversations (user_id, status, id DESC);

CREATE TABLE messages (
    -- AUTOINCREMENT: ids are never reused, so they order messages strictly forever.
    id              INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         TEXT NOT NULL,
    tool_calls      TEXT CHECK (tool_calls IS NULL OR (role = 'tool' AND json_valid(tool_calls))),
    created_at      TEXT NOT NULL,
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE
);
CREATE INDEX messages_conversation_id_id_idx ON messages (conversation_id, id);
