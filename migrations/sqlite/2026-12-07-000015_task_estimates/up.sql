-- See migrations/postgres.
ALTER TABLE tasks ADD COLUMN estimate_minutes INTEGER
    CHECK (estimate_minutes BETWEEN 1 AND 100000);
