ALTER TABLE conversations DROP CONSTRAINT conversations_summary_through_message_fkey;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE tasks;
DROP TABLE api_tokens;
DROP TABLE users;
-- pg_trgm is left installed: other schemas in the database may use it.
