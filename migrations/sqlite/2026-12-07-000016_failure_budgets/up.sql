-- See migrations/postgres.
CREATE TABLE failure_budgets (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour    BIGINT NOT NULL,
    records INTEGER NOT NULL CHECK (records >= 0)
);
