-- The agent's own tool calls and results in its history, told apart from the server's call
-- records, and messages an agent takes back (pop_message, clear_conversation):
-- * kind: 'message' (what an agent appended) or 'call_record' (the server's record of a
--   tool call: role 'tool', the record in tool_calls);
-- * agent_tool_calls: an assistant message's tool calls, [{id, name, arguments}];
-- * tool_call_id: on an agent's 'tool' message, the call it answers;
-- * hidden_at: set when the agent popped or cleared the message; hidden messages stay in
--   the table (the audit trail) but leave the history and the quota.
ALTER TABLE messages
    ADD COLUMN kind text NOT NULL DEFAULT 'message' CHECK (kind IN ('message', 'call_record')),
    ADD COLUMN agent_tool_calls jsonb
        CHECK (agent_tool_calls IS NULL OR (role = 'assistant' AND jsonb_typeof(agent_tool_calls) = 'array')),
    ADD COLUMN tool_call_id text
        CHECK (tool_call_id IS NULL OR (role = 'tool' AND char_length(tool_call_id) BETWEEN 1 AND 200)),
    ADD COLUMN hidden_at timestamptz;
UPDATE messages SET kind = 'call_record' WHERE role = 'tool';
ALTER TABLE messages ADD CONSTRAINT messages_kind_matches_role
    CHECK ((kind = 'call_record') = (role = 'tool' AND tool_call_id IS NULL));
