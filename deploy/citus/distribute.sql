-- Distributes todo-mcp's tables on a Citus cluster, by user. Run once, on the coordinator,
-- after `todo-mcp migrate run` has created the tables there (later migrations then reach
-- the shards through Citus's DDL propagation). docs/scaling.md says when and why.
--
--   DATABASE_URL=postgres://…coordinator…/todo todo-mcp migrate run
--   psql postgres://…coordinator…/todo -v ON_ERROR_STOP=1 -f deploy/citus/distribute.sql
--
-- One transaction: it distributes everything or nothing.
BEGIN;
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Read before the caller is known, on every call, and written rarely: a copy on every node.
SELECT create_reference_table('api_tokens');
SELECT create_reference_table('server_secrets');

-- Everything a user owns lives on the shard of their users row.
SELECT create_distributed_table('users', 'id');
-- The one cycle (a conversation's summary names its last message) is put back once both
-- sides are distributed.
ALTER TABLE conversations DROP CONSTRAINT conversations_summary_through_message_fkey;
SELECT create_distributed_table('conversations', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('messages', 'user_id', colocate_with => 'users');
ALTER TABLE conversations ADD CONSTRAINT conversations_summary_through_message_fkey
    FOREIGN KEY (user_id, summary_through_message_id) REFERENCES messages (user_id, id)
    DEFERRABLE INITIALLY IMMEDIATE;
SELECT create_distributed_table('agent_states', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('turns', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('tasks', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('task_labels', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('task_requests', 'user_id', colocate_with => 'users');
SELECT create_distributed_table('failure_budgets', 'user_id', colocate_with => 'users');

-- Looked up by session id before the caller is known: sharded by that id, on its own.
SELECT create_distributed_table('mcp_sessions', 'id', colocate_with => 'none');

COMMIT;
