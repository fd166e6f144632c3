-- The budget for failed calls' records (--max-failure-records-per-hour): how many records a
-- user's failed calls have left in the clock hour `hour` (hours since 1970). Past the budget
-- a failed call is counted in the metrics instead of recorded, so refused calls cannot grow
-- the database without bound. In the database, so every replica counts alike; a table of
-- its own, so counting never waits on the user's row (which add_task locks).
CREATE TABLE failure_budgets (
    user_id text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hour    bigint NOT NULL,
    records integer NOT NULL CHECK (records >= 0)
);
ALTER TABLE failure_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE failure_budgets FORCE ROW LEVEL SECURITY;
CREATE POLICY failure_budgets_of_current_user ON failure_budgets
    USING (user_id = current_setting('todo.user_id', true))
    WITH CHECK (user_id = current_setting('todo.user_id', true));
