//! The tables, for both backends. Columns whose SQL type differs between PostgreSQL and
//! SQLite have a type of ours that maps to each (`Id`: uuid or text, `Instant`:
//! timestamptz or text, `JsonDoc`: jsonb or text; see `db::types`), so this one description
//! serves both. Rows are read by column name (`#[derive(Selectable)]`), so the order of the
//! columns here does not matter; tests/it/columns.rs checks every column reads back as the
//! field of its name on both backends.

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    users (id) {
        id -> Text,
        created_at -> Instant,
        task_count -> Integer,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    api_tokens (id) {
        id -> Id,
        user_id -> Text,
        name -> Nullable<Text>,
        token_hash -> Binary,
        created_at -> Instant,
        expires_at -> Nullable<Instant>,
        revoked_at -> Nullable<Instant>,
        scopes -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    tasks (id) {
        id -> Id,
        user_id -> Text,
        title -> Text,
        description -> Nullable<Text>,
        completed -> Bool,
        idempotency_key -> Nullable<Text>,
        created_at -> Instant,
        updated_at -> Instant,
        completed_at -> Nullable<Instant>,
        due -> Nullable<Text>,
        due_at -> Instant,
        priority -> SmallInt,
        parent_task_id -> Nullable<Id>,
        repeat -> Nullable<Text>,
        estimate_minutes -> Nullable<Integer>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    task_labels (task_id, label_key) {
        task_id -> Id,
        user_id -> Text,
        label -> Text,
        label_key -> Text,
        position -> SmallInt,
        completed -> Bool,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    conversations (id) {
        id -> Id,
        user_id -> Text,
        title -> Nullable<Text>,
        status -> Text,
        summary -> Nullable<Text>,
        summary_through_message_id -> Nullable<BigInt>,
        created_at -> Instant,
        updated_at -> Instant,
        archived_at -> Nullable<Instant>,
        message_count -> Integer,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    messages (id) {
        id -> BigInt,
        conversation_id -> Id,
        user_id -> Text,
        role -> Text,
        content -> Text,
        tool_calls -> Nullable<JsonDoc>,
        created_at -> Instant,
        kind -> Text,
        agent_tool_calls -> Nullable<JsonDoc>,
        tool_call_id -> Nullable<Text>,
        hidden_at -> Nullable<Instant>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    mcp_sessions (id) {
        id -> Text,
        user_id -> Text,
        state -> JsonDoc,
        created_at -> Instant,
        updated_at -> Instant,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    server_secrets (name) {
        name -> Text,
        secret -> Binary,
        created_at -> Instant,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    agent_states (conversation_id, version) {
        conversation_id -> Id,
        user_id -> Text,
        version -> Integer,
        state -> JsonDoc,
        created_at -> Instant,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    turns (user_id, idempotency_key) {
        user_id -> Text,
        idempotency_key -> Text,
        conversation_id -> Id,
        request_hash -> Binary,
        result -> JsonDoc,
        created_at -> Instant,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql_types_by_backend::*;

    task_requests (task_id) {
        task_id -> Id,
        user_id -> Text,
        request_hash -> Binary,
    }
}

diesel::joinable!(task_requests -> tasks (task_id));

diesel::table! {
    failure_budgets (user_id) {
        user_id -> Text,
        hour -> BigInt,
        records -> Integer,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    failure_budgets,
    task_requests,
    agent_states,
    turns,
    users,
    api_tokens,
    tasks,
    task_labels,
    conversations,
    messages,
    mcp_sessions,
    server_secrets
);
