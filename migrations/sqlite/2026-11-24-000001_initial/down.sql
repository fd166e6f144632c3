DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE tasks;
DROP TABLE api_tokens;
DROP TABLE users;
