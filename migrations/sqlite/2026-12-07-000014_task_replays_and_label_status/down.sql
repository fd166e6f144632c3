DROP INDEX task_labels_user_id_label_key_idx;
CREATE INDEX task_labels_user_id_label_key_idx ON task_labels (user_id, label_key, label, task_id);
ALTER TABLE task_labels DROP COLUMN completed;
DROP TABLE task_requests;
