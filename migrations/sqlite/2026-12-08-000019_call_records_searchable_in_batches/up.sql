-- Call records go into messages_fts in batches instead of one by one. Every tool call
-- writes a record; indexing each on its own flushed a new FTS5 segment and its document
-- size in the call's commit: 3 of the 11 pages an add_task wrote, 3 of the 6 a read
-- call wrote. Records are searched only with include_call_records, which first indexes
-- what is not yet (db::Tx::index_call_records); the server also indexes them every second
-- (db::sqlite::spawn_checkpointer), so that one search never pays for a long backlog.
--
-- The rule the triggers keep: a message is in messages_fts if it is a conversation
-- message, or a call record whose id is at most messages_fts_records.through. Records
-- written with an id at or below it (an import keeps ids) are indexed at once.
CREATE TABLE messages_fts_records (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT INTO messages_fts_records (id, through) SELECT 1, coalesce(max(id), 0) FROM messages;

DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.kind = 'message' OR new.id <= (SELECT through FROM messages_fts_records) BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.kind = 'message' OR old.id <= (SELECT through FROM messages_fts_records) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.kind = 'message' OR old.id <= (SELECT through FROM messages_fts_records) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
