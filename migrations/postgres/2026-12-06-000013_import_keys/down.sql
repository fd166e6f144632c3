ALTER TABLE conversations
    ALTER CONSTRAINT conversations_summary_through_message_fkey NOT DEFERRABLE;
ALTER TABLE tasks ALTER CONSTRAINT tasks_parent_fkey NOT DEFERRABLE;
ALTER TABLE messages ALTER COLUMN id SET GENERATED ALWAYS;
