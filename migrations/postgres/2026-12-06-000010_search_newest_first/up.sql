-- search_messages ranks the newest matches, a window at a time (see store::search).
-- Each message's words are stored, so neither the match nor the ranking re-reads the text,
-- and ANALYZE keeps statistics of words: a common word's matches are then read newest
-- first through (user_id, id), stopping at the window, and a rare word's through the GIN
-- index.
DROP INDEX messages_search_idx;
ALTER TABLE messages
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
CREATE INDEX messages_search_idx ON messages USING gin (search_vector);
CREATE INDEX messages_user_id_id_idx ON messages (user_id, id);
