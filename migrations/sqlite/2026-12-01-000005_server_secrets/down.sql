DROP INDEX mcp_sessions_updated_at_idx;
DROP TABLE server_secrets;
