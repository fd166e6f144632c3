-- See migrations/postgres: hidden messages show again.
ALTER TABLE messages DROP COLUMN hidden_at;
ALTER TABLE messages DROP COLUMN tool_call_id;
ALTER TABLE messages DROP COLUMN agent_tool_calls;
ALTER TABLE messages DROP COLUMN kind;
