-- The older schema holds none of these: labels, due dates, priorities and parents go;
-- subtasks stay, as tasks of their own.
DROP TABLE task_labels;
DROP INDEX tasks_parent_task_id_id_idx;
DROP INDEX tasks_user_id_priority_id_idx;
DROP INDEX tasks_user_id_due_at_id_idx;
ALTER TABLE tasks DROP CONSTRAINT tasks_parent_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_id_user_id_key;
ALTER TABLE tasks
    DROP COLUMN parent_task_id,
    DROP COLUMN priority,
    DROP COLUMN due_at,
    DROP COLUMN due;
