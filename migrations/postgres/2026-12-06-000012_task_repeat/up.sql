-- A repeating task's rule (RFC 5545 RRULE text, as store::repeat writes it); completing
-- the task creates the next occurrence. A repeating task has a due date to repeat from.
ALTER TABLE tasks
    ADD COLUMN repeat text CHECK (char_length(repeat) BETWEEN 1 AND 200),
    ADD CONSTRAINT tasks_repeat_has_due CHECK (repeat IS NULL OR due IS NOT NULL);
