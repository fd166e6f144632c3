-- An agent's state per conversation, versioned; see migrations/postgres.
CREATE TABLE agent_states (
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    state           TEXT NOT NULL CHECK (json_valid(state) AND json_type(state) = 'object'),
    created_at      TEXT NOT NULL,
    PRIMARY KEY (conversation_id, version),
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE
);

-- commit_turn's idempotency; see migrations/postgres.
CREATE TABLE turns (
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    conversation_id TEXT NOT NULL,
    request_hash    BLOB NOT NULL CHECK (length(request_hash) = 32),
    result          TEXT NOT NULL CHECK (json_valid(result)),
    created_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key),
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE
);
