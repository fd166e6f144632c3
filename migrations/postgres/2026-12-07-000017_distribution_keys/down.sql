-- Back to keys led by id. Tokens and sessions whose user is gone would make the foreign
-- keys fail here: none exist, as erasing a user deletes them in the same transaction.
ALTER TABLE mcp_sessions ADD CONSTRAINT mcp_sessions_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;

ALTER TABLE task_labels DROP CONSTRAINT task_labels_task_fkey;
ALTER TABLE task_requests DROP CONSTRAINT task_requests_task_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_parent_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_fkey;
ALTER TABLE agent_states DROP CONSTRAINT agent_states_conversation_fkey;
ALTER TABLE turns DROP CONSTRAINT turns_conversation_fkey;
ALTER TABLE conversations DROP CONSTRAINT conversations_summary_through_message_fkey;

ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);
ALTER TABLE tasks ADD CONSTRAINT tasks_id_user_id_key UNIQUE (id, user_id);
CREATE INDEX tasks_user_id_id_idx ON tasks (user_id, id DESC);
ALTER TABLE tasks ADD CONSTRAINT tasks_parent_fkey
    FOREIGN KEY (parent_task_id, user_id) REFERENCES tasks (id, user_id)
    ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE task_labels DROP CONSTRAINT task_labels_pkey;
ALTER TABLE task_labels ADD CONSTRAINT task_labels_pkey PRIMARY KEY (task_id, label_key);
ALTER TABLE task_labels ADD CONSTRAINT task_labels_task_fkey
    FOREIGN KEY (task_id, user_id) REFERENCES tasks (id, user_id) ON DELETE CASCADE;
ALTER TABLE task_requests DROP CONSTRAINT task_requests_pkey;
ALTER TABLE task_requests ADD CONSTRAINT task_requests_pkey PRIMARY KEY (task_id);
ALTER TABLE task_requests ADD CONSTRAINT task_requests_task_fkey
    FOREIGN KEY (task_id, user_id) REFERENCES tasks (id, user_id) ON DELETE CASCADE;

ALTER TABLE conversations DROP CONSTRAINT conversations_pkey;
ALTER TABLE conversations ADD CONSTRAINT conversations_pkey PRIMARY KEY (id);
ALTER TABLE conversations ADD CONSTRAINT conversations_id_user_id_key UNIQUE (id, user_id);
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id);
CREATE INDEX messages_user_id_id_idx ON messages (user_id, id);
ALTER TABLE messages ADD CONSTRAINT messages_conversation_fkey
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE;
ALTER TABLE agent_states DROP CONSTRAINT agent_states_pkey;
ALTER TABLE agent_states ADD CONSTRAINT agent_states_pkey PRIMARY KEY (conversation_id, version);
ALTER TABLE agent_states ADD CONSTRAINT agent_states_conversation_fkey
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE;
ALTER TABLE turns ADD CONSTRAINT turns_conversation_fkey
    FOREIGN KEY (conversation_id, user_id) REFERENCES conversations (id, user_id) ON DELETE CASCADE;
ALTER TABLE conversations ADD CONSTRAINT conversations_summary_through_message_fkey
    FOREIGN KEY (summary_through_message_id) REFERENCES messages (id)
    ON DELETE SET NULL DEFERRABLE INITIALLY IMMEDIATE;
