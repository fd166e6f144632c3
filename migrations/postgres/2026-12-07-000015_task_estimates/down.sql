ALTER TABLE tasks DROP COLUMN estimate_minutes;
