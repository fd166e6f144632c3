-- Tasks people keep; see migrations/postgres for each column. `due_at` is text here, as
-- diesel writes a UTC time ('YYYY-MM-DD HH:MM:SS[.f]+00:00'), which sorts as the time does.
-- (SQLite cannot add the table constraints tying due to due_at and a parent to its
-- user; the store keeps them.)
ALTER TABLE tasks ADD COLUMN due TEXT CHECK (length(due) BETWEEN 10 AND 40);
ALTER TABLE tasks ADD COLUMN due_at TEXT NOT NULL DEFAULT '9999-12-31 23:59:59+00:00';
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3);
ALTER TABLE tasks ADD COLUMN parent_task_id TEXT REFERENCES tasks (id) ON DELETE CASCADE
    CHECK (parent_task_id <> id);

CREATE INDEX tasks_user_id_due_at_id_idx ON tasks (user_id, due_at, id DESC);
CREATE INDEX tasks_user_id_priority_id_idx ON tasks (user_id, priority DESC, id DESC);
CREATE INDEX tasks_parent_task_id_id_idx ON tasks (parent_task_id, id DESC)
    WHERE parent_task_id IS NOT NULL;

CREATE TABLE task_labels (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    label     TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 60),
    label_key TEXT NOT NULL CHECK (length(label_key) BETWEEN 1 AND 240),
    position  INTEGER NOT NULL CHECK (position BETWEEN 0 AND 19),
    PRIMARY KEY (task_id, label_key)
) WITHOUT ROWID;
-- list_tasks' label filter and list_labels read this index alone.
CREATE INDEX task_labels_user_id_label_key_idx ON task_labels (user_id, label_key, label, task_id);
