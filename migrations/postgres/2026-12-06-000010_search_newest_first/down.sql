DROP INDEX messages_user_id_id_idx;
DROP INDEX messages_search_idx;
ALTER TABLE messages DROP COLUMN search_vector;
CREATE INDEX messages_search_idx ON messages USING gin (to_tsvector('simple', content));
