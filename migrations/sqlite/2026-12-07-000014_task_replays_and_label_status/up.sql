-- See migrations/postgres for both.
CREATE TABLE task_requests (
    task_id      TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32)
) WITHOUT ROWID;

ALTER TABLE task_labels ADD COLUMN completed BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1));
UPDATE task_labels SET completed = 1
    WHERE task_id IN (SELECT id FROM tasks WHERE completed);
DROP INDEX task_labels_user_id_label_key_idx;
CREATE INDEX task_labels_user_id_label_key_idx
    ON task_labels (user_id, label_key, label, task_id, completed);
