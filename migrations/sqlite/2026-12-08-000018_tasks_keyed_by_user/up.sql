-- tasks keyed by (user_id, id), as on PostgreSQL since 000017, and stored in that key's
-- order (WITHOUT ROWID): the table, its old primary key on id and the (user_id, id) index
-- were three b-trees that every insert wrote a page of; now they are one. The idempotency
-- key's unique index keeps no entry for the tasks that have no key (most of them). An
-- add_task writes 3 pages fewer of the 14 it wrote.
--
-- Everything that refers to a task now refers to it by (user_id, id). Rows above about
-- 1 KB (long descriptions) spill into overflow pages in a WITHOUT ROWID table; tasks are
-- mostly far smaller.
--
-- SQLite cannot change a table's key in place: the three tables are built anew beside the
-- old ones, filled, and swapped. Foreign keys are checked at COMMIT (subtasks may be
-- copied before their parents); the old children go before the old tasks so that
-- dropping tasks cascades into nothing; renaming a new table rewrites the references to
-- it.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE tasks_keyed (
    id               TEXT NOT NULL CHECK (length(id) = 36),
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description      TEXT CHECK (length(description) <= 10000),
    completed        BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    idempotency_key  TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    completed_at     TEXT,
    due              TEXT CHECK (length(due) BETWEEN 10 AND 40),
    due_at           TEXT NOT NULL DEFAULT '9999-12-31 23:59:59+00:00',
    priority         INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    parent_task_id   TEXT CHECK (parent_task_id <> id),
    repeat           TEXT CHECK (length(repeat) BETWEEN 1 AND 200),
    estimate_minutes INTEGER CHECK (estimate_minutes BETWEEN 1 AND 100000),
    CHECK (completed = (completed_at IS NOT NULL)),
    PRIMARY KEY (user_id, id),
    FOREIGN KEY (user_id, parent_task_id) REFERENCES tasks_keyed (user_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO tasks_keyed (id, user_id, title, description, completed, idempotency_key,
                         created_at, updated_at, completed_at, due, due_at, priority,
                         parent_task_id, repeat, estimate_minutes)
SELECT id, user_id, title, description, completed, idempotency_key, created_at, updated_at,
       completed_at, due, due_at, priority, parent_task_id, repeat, estimate_minutes
FROM tasks;

CREATE TABLE task_labels_keyed (
    task_id   TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    label     TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 60),
    label_key TEXT NOT NULL CHECK (length(label_key) BETWEEN 1 AND 240),
    position  INTEGER NOT NULL CHECK (position BETWEEN 0 AND 19),
    completed BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    PRIMARY KEY (task_id, label_key),
    FOREIGN KEY (user_id, task_id) REFERENCES tasks_keyed (user_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO task_labels_keyed (task_id, user_id, label, label_key, position, completed)
SELECT task_id, user_id, label, label_key, position, completed FROM task_labels;

CREATE TABLE task_requests_keyed (
    task_id      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
    FOREIGN KEY (user_id, task_id) REFERENCES tasks_keyed (user_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO task_requests_keyed (task_id, user_id, request_hash)
SELECT task_id, user_id, request_hash FROM task_requests;

DROP TABLE task_labels;
DROP TABLE task_requests;
DROP TABLE tasks;
ALTER TABLE tasks_keyed RENAME TO tasks;
ALTER TABLE task_labels_keyed RENAME TO task_labels;
ALTER TABLE task_requests_keyed RENAME TO task_requests;

-- A task's key is unique per user only among the tasks that have one.
CREATE UNIQUE INDEX tasks_user_id_idempotency_key_idx ON tasks (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_user_id_completed_id_idx ON tasks (user_id, completed, id DESC);
CREATE INDEX tasks_user_id_due_at_id_idx ON tasks (user_id, due_at, id DESC);
CREATE INDEX tasks_user_id_priority_id_idx ON tasks (user_id, priority DESC, id DESC);
CREATE INDEX tasks_parent_task_id_id_idx ON tasks (parent_task_id, id DESC)
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX task_labels_user_id_label_key_idx
    ON task_labels (user_id, label_key, label, task_id, completed);
