-- See migrations/postgres: subtasks stay, as tasks of their own.
DROP TABLE task_labels;
DROP INDEX tasks_parent_task_id_id_idx;
DROP INDEX tasks_user_id_priority_id_idx;
DROP INDEX tasks_user_id_due_at_id_idx;
ALTER TABLE tasks DROP COLUMN parent_task_id;
ALTER TABLE tasks DROP COLUMN priority;
ALTER TABLE tasks DROP COLUMN due_at;
ALTER TABLE tasks DROP COLUMN due;
