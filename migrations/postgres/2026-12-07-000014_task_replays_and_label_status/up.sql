-- add_task's idempotency: a retry with the same key and the same arguments replays the
-- task, a reuse with other arguments is a conflict. `request_hash` is SHA-256 of the
-- arguments a task was added with under an idempotency key (as add_task checked them).
-- A keyed task without a row here (added before this version) replays whatever the
-- arguments. A table of its own: only keyed adds pay for it, and list reads never do.
CREATE TABLE task_requests (
    task_id      uuid PRIMARY KEY,
    user_id      text NOT NULL,
    request_hash bytea NOT NULL CHECK (octet_length(request_hash) = 32),
    CONSTRAINT task_requests_task_fkey FOREIGN KEY (task_id, user_id)
        REFERENCES tasks (id, user_id) ON DELETE CASCADE
);
ALTER TABLE task_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY task_requests_of_current_user ON task_requests
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));

-- list_labels counts pending tasks per label from the label index alone: each label row
-- carries its task's completed state, kept by the store wherever a task's state changes.
ALTER TABLE task_labels ADD COLUMN completed boolean NOT NULL DEFAULT false;
-- FORCE'd row-level security would hide every row from this backfill (no user is set):
-- lifted for the one statement, as the table's owner may.
ALTER TABLE task_labels NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY;
UPDATE task_labels l SET completed = true
    FROM tasks t WHERE t.id = l.task_id AND t.completed;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
ALTER TABLE task_labels FORCE ROW LEVEL SECURITY;
DROP INDEX task_labels_user_id_label_key_idx;
CREATE INDEX task_labels_user_id_label_key_idx
    ON task_labels (user_id, label_key, label, task_id, completed);
