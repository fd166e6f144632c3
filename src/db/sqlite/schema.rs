//! SQLite tables. The same tables and column names as src/db/pg/schema.rs; rows are read by
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
        created_at -> TimestamptzSqlite,
        task_count -> Integer,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_id -> Text,
        name -> Nullable<Text>,
        token_hash -> Binary,
        created_at -> TimestamptzSqlite,
        expires_at -> Nullable<TimestamptzSqlite>,
        revoked_at -> Nullable<TimestamptzSqlite>,
    }
}

diesel::table! {
    tasks (id) {
        id -> Text,
        user_id -> Text,
        title -> Text,
        description -> Nullable<Text>,
        completed -> Bool,
        idempotency_key -> Nullable<Text>,
        created_at -> TimestamptzSqlite,
        updated_at -> TimestamptzSqlite,
        completed_at -> Nullable<TimestamptzSqlite>,
    }
}

diesel::table! {
    conversations (id) {
        id -> Text,
        user_id -> Text,
        title -> Nullable<Text>,
        status -> Text,
        summary -> Nullable<Text>,
        summary_through_message_id -> Nullable<BigInt>,
        created_at -> TimestamptzSqlite,
        updated_at -> TimestamptzSqlite,
        archived_at -> Nullable<TimestamptzSqlite>,
        message_count -> Integer,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        conversation_id -> Text,
        user_id -> Text,
        role -> Text,
        content -> Text,
        tool_calls -> Nullable<Json>,
        created_at -> TimestamptzSqlite,
    }
}

diesel::table! {
    mcp_sessions (id) {
        id -> Text,
        user_id -> Text,
        state -> Json,
        created_at -> TimestamptzSqlite,
        updated_at -> TimestamptzSqlite,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        secret -> Binary,
        created_at -> TimestamptzSqlite,
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
