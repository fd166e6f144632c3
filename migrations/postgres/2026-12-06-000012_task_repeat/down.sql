-- The older schema has no repeating tasks: the rules go, each occurrence stays a task.
ALTER TABLE tasks DROP COLUMN repeat;
