-- search_messages: full-text search over message content, with the 'simple' configuration
-- (lower-cased words, no stemming, no stop words), as SQLite's FTS5 unicode61 tokenizer
-- does, so a query finds the same messages on both backends.
CREATE INDEX messages_search_idx ON messages USING gin (to_tsvector('simple', content));
