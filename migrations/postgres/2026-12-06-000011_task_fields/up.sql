-- Tasks people keep: a due date or date-time, a priority, one level of subtasks, labels.
ALTER TABLE tasks
    -- As given: a date (`2026-12-01`, all day) or a date-time with its offset
    -- (`2026-12-01T09:00:00+01:00`); NULL when the task has none.
    ADD COLUMN due text CHECK (char_length(due) BETWEEN 10 AND 40),
    -- What `due` sorts and filters by: the date-time's instant, or an all-day date's
    -- start in UTC; 9999-12-31 23:59:59 UTC when there is no due date, so that "soonest
    -- first, undated last" and its keyset pages are one range of one index.
    ADD COLUMN due_at timestamptz NOT NULL DEFAULT '9999-12-31 23:59:59+00',
    -- 0 low, 1 normal, 2 high, 3 urgent: "most urgent first" is the index's order.
    ADD COLUMN priority smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    -- A subtask's parent: another task of the same user, itself not a subtask (the store
    -- checks the depth). Deleting the parent deletes its subtasks.
    ADD COLUMN parent_task_id uuid CHECK (parent_task_id <> id),
    ADD CONSTRAINT tasks_due_at_matches CHECK ((due IS NULL) = (due_at = '9999-12-31 23:59:59+00'));
ALTER TABLE tasks ADD CONSTRAINT tasks_id_user_id_key UNIQUE (id, user_id);
ALTER TABLE tasks ADD CONSTRAINT tasks_parent_fkey FOREIGN KEY (parent_task_id, user_id)
    REFERENCES tasks (id, user_id) ON DELETE CASCADE;

-- list_tasks' sorts; keyset pages are ranges of these. A status filter reads the same
-- index and skips the other status (an index per status too cost every add_task two more
-- index pages to write, ~20% of its time on SQLite).
CREATE INDEX tasks_user_id_due_at_id_idx ON tasks (user_id, due_at, id DESC);
CREATE INDEX tasks_user_id_priority_id_idx ON tasks (user_id, priority DESC, id DESC);
-- A parent's subtasks (list_tasks' parent_task_id, and the cascade).
CREATE INDEX tasks_parent_task_id_id_idx ON tasks (parent_task_id, id DESC)
    WHERE parent_task_id IS NOT NULL;

-- A task's labels, in the order given; `label_key` is the label case-folded: unique per
-- task, and what list_tasks' `label` and list_labels match and group by.
CREATE TABLE task_labels (
    task_id   uuid NOT NULL,
    user_id   text NOT NULL,
    label     text NOT NULL CHECK (char_length(label) BETWEEN 1 AND 60),
    label_key text NOT NULL CHECK (char_length(label_key) BETWEEN 1 AND 240),
    position  smallint NOT NULL CHECK (position BETWEEN 0 AND 19),
    PRIMARY KEY (task_id, label_key),
    CONSTRAINT task_labels_task_fkey FOREIGN KEY (task_id, user_id)
        REFERENCES tasks (id, user_id) ON DELETE CASCADE
);
-- list_tasks' label filter and list_labels read this index alone.
CREATE INDEX task_labels_user_id_label_key_idx ON task_labels (user_id, label_key, label, task_id);

ALTER TABLE task_labels ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_labels FORCE ROW LEVEL SECURITY;
CREATE POLICY task_labels_of_current_user ON task_labels
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));
