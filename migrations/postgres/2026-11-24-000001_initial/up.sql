-- Every user-owned row carries user_id, and every query the tools make filters by it;
-- each query has an index that starts with the columns it filters on.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE users (
    id         text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each token is kept: tokens are 256-bit random secrets, so a
-- fast hash is enough and lets authentication be one indexed lookup.
CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text CHECK (char_length(name) <= 200),
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_user_id_created_at_idx ON api_tokens (user_id, created_at);

CREATE TABLE tasks (
    id              uuid PRIMARY KEY,  -- UUIDv7: time-ordered, the keyset for "newest first"
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title           text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    description     text CHECK (char_length(description) <= 10000),
    completed       boolean NOT NULL DEFAULT false,
    idempotency_key text CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CONSTRAINT tasks_completed_at_matches CHECK (completed = (completed_at IS NOT NULL)),
    -- NULL keys never collide, so tasks added without a key are unconstrained.
    CONSTRAINT tasks_user_id_idempotency_key_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX tasks_user_id_id_idx ON tasks (user_id, id DESC);
CREATE INDEX tasks_user_id_completed_id_idx ON tasks (user_id, completed, id DESC);
-- list_tasks' `query` is a case-insensitive substring match on title and description.
CREATE INDEX tasks_title_trgm_idx ON tasks USING gin (lower(title) gin_trgm_ops);
CREATE INDEX tasks_description_trgm_idx ON tasks USING gin (lower(description) gin_trgm_ops);

CREATE TABLE conversations (
    id                         uuid PRIMARY KEY,
    user_id                    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title                      text CHECK (char_length(title) <= 500),
    status                     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    summary                    text CHECK (char_length(summary) <= 100000),
    summary_through_message_id bigint,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    archived_at                timestamptz,
    CONSTRAINT conversations_archived_at_matches CHECK ((status = 'archived') = (archived_at IS NOT NULL)),
    -- Target of messages' composite key: a message can only join its owner's conversation.
    CONSTRAINT conversations_id_user_id_key UNIQUE (id, user_id)
);
CREATE INDEX conversations_user_id_status_id_idx ON conversations (user_id, status, id DESC);

CREATE TABLE messages (
    -- Identity ids order messages strictly; appends lock their conversation row, so
    -- within a conversation id order is also commit order.
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL,
    user_id         text NOT NULL,
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         text NOT NULL,
    tool_calls      jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_tool_calls_only_on_tool_role CHECK (tool_calls IS NULL OR role = 'tool'),
    CONSTRAINT messages_conversation_fkey FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE
);
CREATE INDEX messages_conversation_id_id_idx ON messages (conversation_id, id);

ALTER TABLE conversations
    ADD CONSTRAINT conversations_summary_through_message_fkey
    FOREIGN KEY (summary_through_message_id) REFERENCES messages (id) ON DELETE SET NULL;
