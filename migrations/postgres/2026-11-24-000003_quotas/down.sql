ALTER TABLE conversations DROP COLUMN message_count;
ALTER TABLE users DROP COLUMN task_count;
