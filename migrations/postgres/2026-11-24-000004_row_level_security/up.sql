-- Defense in depth for isolation: every query already filters by user_id, and row-level
-- security makes PostgreSQL filter again, by the user each transaction names with
-- `SET LOCAL todo.user_id` (see `Database::begin`). A query that forgot its filter sees
-- only that user's rows; a transaction that names no user sees none.
--
-- FORCE applies the policies to the tables' owner too (the role the server usually runs
-- as, e.g. Neon's `neondb_owner`); only superusers and BYPASSRLS roles are exempt.
-- Foreign-key checks and cascades are not subject to policies, so they still work.
-- api_tokens, users and mcp_sessions stay unpoliced: they are read to find out who the
-- caller is, before any user is known.

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_of_current_user ON tasks
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY conversations_of_current_user ON conversations
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY messages_of_current_user ON messages
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));
