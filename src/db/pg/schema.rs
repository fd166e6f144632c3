//! PostgreSQL tables. The same tables and column names as src/db/sqlite/schema.rs; rows are read by
//! column name (`crate::table_row!`), so the order of the columns does not matter.
//!
//! Why two descriptions and not one: a column's SQL type differs between the backends
//! (`Uuid`/`Text`, `Timestamptz`/`TimestamptzSqlite`, `Jsonb`/`Json`), and diesel's types
//! are per backend, so each backend's queries are compiled against its own module (see
//! `crate::on_backend!`). tests/columns.rs checks that every column reads back as the
//! field of its name on both.

diesel::table! {
    users (id) {
        id -> Text,
        created_at -> Timestamptz,
        task_count -> Integer,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        user_id -> Text,
        name -> Nullable<Text>,
        token_hash -> Binary,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    tasks (id) {
        id -> Uuid,
        user_id -> Text,
        title -> Text,
        description -> Nullable<Text>,
        completed -> Bool,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    conversations (id) {
        id -> Uuid,
        user_id -> Text,
        title -> Nullable<Text>,
        status -> Text,
        summary -> Nullable<Text>,
        summary_through_message_id -> Nullable<BigInt>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        archived_at -> Nullable<Timestamptz>,
        message_count -> Integer,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        conversation_id -> Uuid,
        user_id -> Text,
        role -> Text,
        content -> Text,
        tool_calls -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    mcp_sessions (id) {
        id -> Text,
        user_id -> Text,
        state -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        secret -> Binary,
        created_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    api_tokens,
    tasks,
    conversations,
    messages,
    mcp_sessions,
    server_secrets
);
