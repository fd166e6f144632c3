-- The older schema holds neither the agent's tool calls nor hidden messages: hidden
-- messages show again in the history after this, and an agent's tool results read as
-- tool messages without a record.
ALTER TABLE messages DROP CONSTRAINT messages_kind_matches_role;
ALTER TABLE messages
    DROP COLUMN hidden_at,
    DROP COLUMN tool_call_id,
    DROP COLUMN agent_tool_calls,
    DROP COLUMN kind;
