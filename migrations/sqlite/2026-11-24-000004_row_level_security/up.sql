-- SQLite has no row-level security: one file, one process's users, and the user_id
-- filter in every query. This version exists so both backends share version numbers.
SELECT 1;
