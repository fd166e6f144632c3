-- Back to tasks keyed by id alone, in a rowid table, with references to tasks (id). Fails
-- (and changes nothing) if two users' tasks share an id, which the new key allowed.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE tasks_by_id (
    id              TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title           TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description     TEXT CHECK (length(description) <= 10000),
    completed       BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    idempotency_key TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    completed_at    TEXT,
    due             TEXT CHECK (length(due) BETWEEN 10 AND 40),
    due_at          TEXT NOT NULL DEFAULT '9999-12-31 23:59:59+00:00',
    priority        INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    parent_task_id  TEXT REFERENCES tasks_by_id (id) ON DELETE CASCADE
        CHECK (parent_task_id <> id),
    repeat          TEXT CHECK (length(repeat) BETWEEN 1 AND 200),
    estimate_minutes INTEGER CHECK (estimate_minutes BETWEEN 1 AND 100000),
    CHECK (completed = (completed_at IS NOT NULL)),
    UNIQUE (user_id, idempotency_key)
);
INSERT INTO tasks_by_id (id, user_id, title, description, completed, idempotency_key,
                         created_at, updated_at, completed_at, due, due_at, priority,
                         parent_task_id, repeat, estimate_minutes)
SELECT id, user_id, title, description, completed, idempotency_key, created_at, updated_at,
       completed_at, due, due_at, priority, parent_task_id, repeat, estimate_minutes
FROM tasks;

CREATE TABLE task_labels_by_id (
    task_id   TEXT NOT NULL REFERENCES tasks_by_id (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    label     TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 60),
    label_key TEXT NOT NULL CHECK (length(label_key) BETWEEN 1 AND 240),
    position  INTEGER NOT NULL CHECK (position BETWEEN 0 AND 19),
    completed BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    PRIMARY KEY (task_id, label_key)
) WITHOUT ROWID;
INSERT INTO task_labels_by_id (task_id, user_id, label, label_key, position, completed)
SELECT task_id, user_id, label, label_key, position, completed FROM task_labels;

CREATE TABLE task_requests_by_id (
    task_id      TEXT PRIMARY KEY REFERENCES tasks_by_id (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32)
) WITHOUT ROWID;
INSERT INTO task_requests_by_id (task_id, user_id, request_hash)
SELECT task_id, user_id, request_hash FROM task_requests;

DROP TABLE task_labels;
DROP TABLE task_requests;
DROP TABLE tasks;
ALTER TABLE tasks_by_id RENAME TO tasks;
ALTER TABLE task_labels_by_id RENAME TO task_labels;
ALTER TABLE task_requests_by_id RENAME TO task_requests;

CREATE INDEX tasks_user_id_id_idx ON tasks (user_id, id DESC);
CREATE INDEX tasks_user_id_completed_id_idx ON tasks (user_id, completed, id DESC);
CREATE INDEX tasks_user_id_due_at_id_idx ON tasks (user_id, due_at, id DESC);
CREATE INDEX tasks_user_id_priority_id_idx ON tasks (user_id, priority DESC, id DESC);
CREATE INDEX tasks_parent_task_id_id_idx ON tasks (parent_task_id, id DESC)
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX task_labels_user_id_label_key_idx
    ON task_labels (user_id, label_key, label, task_id, completed);
