DROP INDEX messages_search_idx;
