-- An agent's state per conversation (the serialized state of its graph or planner),
-- versioned: version 1, 2, … per conversation; earlier versions are kept up to
-- --max-state-versions (older ones are deleted by the save that passes the limit).
CREATE TABLE agent_states (
    conversation_id uuid NOT NULL,
    user_id         text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    state           jsonb NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, version),
    CONSTRAINT agent_states_conversation_fkey FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE
);

-- User rows, so row-level security as for the other user tables.
ALTER TABLE agent_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_states FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_states_of_current_user ON agent_states
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));

-- commit_turn's idempotency: a turn committed with a key keeps its result, which a retry
-- with the same key gets back instead of writing the turn again. `request_hash` tells a
-- retry from another turn that reuses the key.
CREATE TABLE turns (
    user_id         text NOT NULL,
    idempotency_key text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    conversation_id uuid NOT NULL,
    request_hash    bytea NOT NULL CHECK (length(request_hash) = 32),
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key),
    CONSTRAINT turns_conversation_fkey FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE
);

ALTER TABLE turns ENABLE ROW LEVEL SECURITY;
ALTER TABLE turns FORCE ROW LEVEL SECURITY;
CREATE POLICY turns_of_current_user ON turns
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));
