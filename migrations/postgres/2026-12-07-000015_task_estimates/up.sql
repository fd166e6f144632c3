-- How long a task is expected to take, in minutes, as its caller estimated it; NULL when
-- no estimate was given.
ALTER TABLE tasks ADD COLUMN estimate_minutes integer
    CHECK (estimate_minutes BETWEEN 1 AND 100000);
