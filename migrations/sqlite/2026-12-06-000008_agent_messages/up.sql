-- The agent's own tool calls and results, and hidden messages; see migrations/postgres.
-- (SQLite cannot add the table constraint tying kind to role; the store keeps it.)
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'
    CHECK (kind IN ('message', 'call_record'));
ALTER TABLE messages ADD COLUMN agent_tool_calls TEXT
    CHECK (agent_tool_calls IS NULL OR (role = 'assistant' AND json_valid(agent_tool_calls) AND json_type(agent_tool_calls) = 'array'));
ALTER TABLE messages ADD COLUMN tool_call_id TEXT
    CHECK (tool_call_id IS NULL OR (role = 'tool' AND length(tool_call_id) BETWEEN 1 AND 200));
ALTER TABLE messages ADD COLUMN hidden_at TEXT;
UPDATE messages SET kind = 'call_record' WHERE role = 'tool';
