-- See migrations/postgres (SQLite cannot add the table constraint; the store keeps it).
ALTER TABLE tasks ADD COLUMN repeat TEXT CHECK (length(repeat) BETWEEN 1 AND 200);
