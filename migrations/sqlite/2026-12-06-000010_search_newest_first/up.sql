-- PostgreSQL's 000010 stores each message's words for search, which SQLite's FTS5 index
-- (000009) already does. Here: FTS5 merges its index segments less often. Every call
-- writes a call record, so every call adds a segment; with FTS5's default (merge once 4
-- segments of a level exist) one call in a hundred paid a few milliseconds of merging,
-- which showed as the p99 of reads (measured in the commit that added this).
INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', 16);
