-- Counters behind the quotas (`--max-tasks-per-user`, `--max-messages-per-conversation`):
-- kept in the row each add or append already locks, so checking a quota costs no count(*)
-- and concurrent calls count one at a time.
ALTER TABLE users ADD COLUMN task_count integer NOT NULL DEFAULT 0;
UPDATE users SET task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id);

-- Messages appended by clients; the server's own call records (role `tool`) don't count.
ALTER TABLE conversations ADD COLUMN message_count integer NOT NULL DEFAULT 0;
UPDATE conversations SET message_count = (
    SELECT count(*) FROM messages
    WHERE messages.conversation_id = conversations.id AND messages.role <> 'tool'
);
