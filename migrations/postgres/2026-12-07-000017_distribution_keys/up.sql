-- Keys that distribute by user. Every user-owned table's primary key, unique keys and
-- foreign keys now include user_id, so each table can be sharded by user (Citus's
-- create_distributed_table, co-located with users) and every key is checked on the one
-- node that holds the user's rows. Tables read before the user is known keep keys of their
-- own and no foreign key to users, so they can be reference tables (api_tokens,
-- server_secrets: read on every call, written rarely) or distributed by the key they are
-- looked up by (mcp_sessions, by id); erasing a user deletes their tokens and sessions
-- explicitly (store::users). See docs/scaling.md and deploy/citus/distribute.sql.
--
-- Also faster on one PostgreSQL: the old (user_id, id) indexes on tasks and messages are
-- the new primary keys, so each insert maintains one index fewer.

-- Everything that refers to tasks (id, user_id) or conversations (id, user_id) goes first.
ALTER TABLE task_labels DROP CONSTRAINT task_labels_task_fkey;
ALTER TABLE task_requests DROP CONSTRAINT task_requests_task_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_parent_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_fkey;
ALTER TABLE agent_states DROP CONSTRAINT agent_states_conversation_fkey;
ALTER TABLE turns DROP CONSTRAINT turns_conversation_fkey;
ALTER TABLE conversations DROP CONSTRAINT conversations_summary_through_message_fkey;

-- tasks
ALTER TABLE tasks DROP CONSTRAINT tasks_id_user_id_key;
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY (user_id, id);
DROP INDEX tasks_user_id_id_idx;
ALTER TABLE tasks ADD CONSTRAINT tasks_parent_fkey
    FOREIGN KEY (user_id, parent_task_id) REFERENCES tasks (user_id, id)
    ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE task_labels DROP CONSTRAINT task_labels_pkey;
ALTER TABLE task_labels ADD CONSTRAINT task_labels_pkey PRIMARY KEY (user_id, task_id, label_key);
ALTER TABLE task_labels ADD CONSTRAINT task_labels_task_fkey
    FOREIGN KEY (user_id, task_id) REFERENCES tasks (user_id, id) ON DELETE CASCADE;
ALTER TABLE task_requests DROP CONSTRAINT task_requests_pkey;
ALTER TABLE task_requests ADD CONSTRAINT task_requests_pkey PRIMARY KEY (user_id, task_id);
ALTER TABLE task_requests ADD CONSTRAINT task_requests_task_fkey
    FOREIGN KEY (user_id, task_id) REFERENCES tasks (user_id, id) ON DELETE CASCADE;

-- conversations and what hangs off them
ALTER TABLE conversations DROP CONSTRAINT conversations_id_user_id_key;
ALTER TABLE conversations DROP CONSTRAINT conversations_pkey;
ALTER TABLE conversations ADD CONSTRAINT conversations_pkey PRIMARY KEY (user_id, id);
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (user_id, id);
DROP INDEX messages_user_id_id_idx;
ALTER TABLE messages ADD CONSTRAINT messages_conversation_fkey
    FOREIGN KEY (user_id, conversation_id) REFERENCES conversations (user_id, id) ON DELETE CASCADE;
ALTER TABLE agent_states DROP CONSTRAINT agent_states_pkey;
ALTER TABLE agent_states ADD CONSTRAINT agent_states_pkey PRIMARY KEY (user_id, conversation_id, version);
ALTER TABLE agent_states ADD CONSTRAINT agent_states_conversation_fkey
    FOREIGN KEY (user_id, conversation_id) REFERENCES conversations (user_id, id) ON DELETE CASCADE;
ALTER TABLE turns ADD CONSTRAINT turns_conversation_fkey
    FOREIGN KEY (user_id, conversation_id) REFERENCES conversations (user_id, id) ON DELETE CASCADE;
-- A summary's last message. No ON DELETE SET NULL any more: Citus refuses it on a key
-- that holds the distribution column, even as SET NULL (summary_through_message_id), and
-- nothing needs it: a message is never deleted alone (hiding keeps the row), only with its
-- conversation or user, in the same statement as the summary that names it.
ALTER TABLE conversations ADD CONSTRAINT conversations_summary_through_message_fkey
    FOREIGN KEY (user_id, summary_through_message_id) REFERENCES messages (user_id, id)
    DEFERRABLE INITIALLY IMMEDIATE;

-- Read before the user is known: no foreign key to users, so these can be reference
-- tables or distributed by their own key. The user's erasure deletes them explicitly.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_user_id_fkey;
ALTER TABLE mcp_sessions DROP CONSTRAINT mcp_sessions_user_id_fkey;
