-- Nothing to change on SQLite: an explicit message id is always accepted (AUTOINCREMENT
-- then continues above it), and `todo-mcp import` defers foreign keys with
-- `PRAGMA defer_foreign_keys`. (The version exists so both backends number alike.)
SELECT 1;
