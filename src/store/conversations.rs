//! Conversations and their messages.
//!
//! Each user also has two activity-log conversations (see [`ActivityLog`]) that hold the
//! records of tool calls not tied to a conversation of the caller's choosing.

use super::UserTx;
use super::cursor::CursorKey;
use super::{Quotas, StoreError, UserId, check_text, format_time, limits, now, page_size};
use crate::db::sql::CachedDsl;
use crate::db::{Conn, DbJson, DbTime, DbUuid, JsonText, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const CURSOR_KIND: &str = "c";
const ACTIVE: &str = "active";
const ARCHIVED: &str = "archived";

/// What tools read of a row of `conversations`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::conversations)]
struct ConversationRow {
    id: DbUuid,
    title: Option<String>,
    status: String,
    summary: Option<String>,
    summary_through_message_id: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    archived_at: Option<DateTime<Utc>>,
}

/// A conversation as tools return it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Conversation {
    /// The conversation's id (a UUID).
    pub id: String,
    pub title: Option<String>,
    /// `active`, or `archived` (hidden from lists; history still readable).
    pub status: String,
    /// Long-term context: a summary of the conversation up to `summary_through_message_id`.
    pub summary: Option<String>,
    pub summary_through_message_id: Option<i64>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// RFC 3339, UTC; null unless archived.
    pub archived_at: Option<String>,
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Conversation {
            id: row.id.0.to_string(),
            title: row.title,
            status: row.status,
            summary: row.summary,
            summary_through_message_id: row.summary_through_message_id,
            created_at: format_time(row.created_at),
            updated_at: format_time(row.updated_at),
            archived_at: row.archived_at.map(format_time),
        }
    }
}

/// What tools read of a row of `messages`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::messages)]
struct MessageRow {
    id: i64,
    conversation_id: DbUuid,
    role: String,
    content: String,
    tool_calls: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    kind: String,
    agent_tool_calls: Option<serde_json::Value>,
    tool_call_id: Option<String>,
}

/// A message as tools return it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Message {
    /// Strictly increasing within the database: later messages have larger ids.
    pub id: i64,
    pub conversation_id: String,
    /// `message` (appended by the agent) or `call_record` (the server's record of a tool
    /// call made to it).
    pub kind: String,
    /// `user`, `assistant`, `system`, or `tool` (an agent's tool result, or a call record).
    pub role: String,
    pub content: String,
    /// On an assistant message: the tool calls its model made, `[{id, name, arguments}]`.
    /// On a call record: the tool called, its arguments, its result or error, its duration.
    pub tool_calls: Option<serde_json::Value>,
    /// On an agent's `tool` message: the id of the tool call it answers.
    pub tool_call_id: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Message {
            id: row.id,
            conversation_id: row.conversation_id.0.to_string(),
            kind: row.kind,
            role: row.role,
            content: row.content,
            tool_calls: row.tool_calls.or(row.agent_tool_calls),
            tool_call_id: row.tool_call_id,
            created_at: format_time(row.created_at),
        }
    }
}

/// The roles a caller may append. A `tool` message is the result of one of the agent's
/// tool calls (it names the call with `tool_call_id`); the server's own call records are
/// written only by the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }
}

/// A tool call of the agent's model, on an assistant message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentToolCall {
    /// The call's id as the model gave it; the `tool` message with the result names it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model gave them (an object, or OpenAI's JSON-encoded string).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// A message as an agent appends it (append_message, commit_turn).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// `user`, `assistant`, `system`, or `tool` (the result of one of the agent's tool
    /// calls: give `tool_call_id`).
    pub role: Role,
    /// The text, up to 100,000 characters. May be empty only on an assistant message
    /// with `tool_calls`.
    #[serde(default)]
    pub content: String,
    /// Assistant messages only: the tool calls the model made, `[{id, name, arguments}]`
    /// (at most 128).
    #[serde(default)]
    pub tool_calls: Option<Vec<AgentToolCall>>,
    /// `tool` messages only (and required there): the id of the call this result answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// The most tool calls one assistant message carries.
const MAX_TOOL_CALLS: usize = 128;
/// The longest tool call id or tool name.
const TOOL_FIELD_CHARS: usize = 200;

/// Checks a message before anything is written: content as [`check_content`] says (empty
/// only beside tool calls), tool calls only on assistant messages, a `tool_call_id` on
/// exactly the `tool` messages, and the whole within the byte quota.
pub(super) fn check_message(message: &NewMessage, quotas: &Quotas) -> Result<(), StoreError> {
    let calls = message.tool_calls.as_deref().unwrap_or_default();
    let bare_calls =
        message.role == Role::Assistant && !calls.is_empty() && message.content.is_empty();
    if !bare_calls {
        check_content(&message.content, quotas)?;
    }
    if !calls.is_empty() && message.role != Role::Assistant {
        return Err(StoreError::invalid(
            "tool_calls",
            "only assistant messages carry tool calls",
        ));
    }
    if calls.len() > MAX_TOOL_CALLS {
        return Err(StoreError::invalid(
            "tool_calls",
            format!(
                "{} calls; a message carries at most {MAX_TOOL_CALLS}",
                calls.len()
            ),
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for (index, call) in calls.iter().enumerate() {
        for (what, value) in [("id", &call.id), ("name", &call.name)] {
            let field_error = |reason: String| {
                StoreError::invalid("tool_calls", format!("[{index}].{what} {reason}"))
            };
            check_text("tool_calls", value, TOOL_FIELD_CHARS, true).map_err(
                |error| match error {
                    StoreError::Invalid { reason, .. } => field_error(reason),
                    other => other,
                },
            )?;
        }
        if !ids.insert(call.id.as_str()) {
            return Err(StoreError::invalid(
                "tool_calls",
                format!("[{index}].id {} is given twice", super::quote(&call.id)),
            ));
        }
    }
    match (message.role, message.tool_call_id.as_deref()) {
        (Role::Tool, None) => {
            return Err(StoreError::invalid(
                "tool_call_id",
                "a tool message answers one of the agent's tool calls: name it",
            ));
        }
        (Role::Tool, Some(id)) => {
            check_text("tool_call_id", id, TOOL_FIELD_CHARS, true)?;
        }
        (_, Some(_)) => {
            return Err(StoreError::invalid(
                "tool_call_id",
                "only tool messages answer a tool call",
            ));
        }
        (_, None) => {}
    }
    let calls_bytes = message.tool_calls.as_ref().map_or(0, |calls| {
        serde_json::to_vec(calls).map_or(0, |json| json.len())
    });
    let bytes = message.content.len() + calls_bytes;
    if bytes > quotas.message_bytes {
        return Err(StoreError::QuotaExceeded(format!(
            "the message is {bytes} bytes with its tool calls; this server takes at most {} \
             bytes per message",
            quotas.message_bytes
        )));
    }
    Ok(())
}

/// The per-user conversations that hold tool-call records.
///
/// `Calls` holds the record of every call made without a `conversation_id`. Reading a
/// conversation's history is recorded in `Calls`, except reading `Calls` itself, which is
/// recorded in `Reads` (and reading `Reads` in `Calls`): so no read makes the history it
/// reads grow. Their ids are derived from the user id, so finding them costs no query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityLog {
    Calls,
    Reads,
}

impl ActivityLog {
    /// A UUIDv8 whose first 48 bits (where UUIDv7 keeps its timestamp) are zero, the rest a
    /// hash of the user and log: the logs sort before every conversation the user starts,
    /// so "newest first" lists them last, as the oldest (they are made with the user).
    pub fn id(self, user: &UserId) -> uuid::Uuid {
        let name = match self {
            ActivityLog::Calls => format!("todo-mcp activity log calls:{user}"),
            ActivityLog::Reads => format!("todo-mcp activity log reads:{user}"),
        };
        let digest = Sha256::digest(name.as_bytes());
        let mut bytes = [0u8; 16];
        bytes[6..].copy_from_slice(&digest[..10]);
        uuid::Uuid::new_v8(bytes)
    }

    pub fn title(self) -> &'static str {
        match self {
            ActivityLog::Calls => "Tool activity",
            ActivityLog::Reads => "Tool activity: reads of the activity log",
        }
    }

    /// Where to record a read of conversation `read`: never in `read` itself.
    pub fn for_reading(user: &UserId, read: uuid::Uuid) -> uuid::Uuid {
        if read == ActivityLog::Calls.id(user) {
            ActivityLog::Reads.id(user)
        } else {
            ActivityLog::Calls.id(user)
        }
    }
}

/// Creates the user's activity logs if missing.
pub(super) async fn ensure_activity_logs(tx: &mut Tx, user: &UserId) -> Result<(), StoreError> {
    let at = now();
    for log in [ActivityLog::Calls, ActivityLog::Reads] {
        on_backend!(tx, |conn| {
            use schema::conversations::dsl as c;
            diesel::insert_into(c::conversations)
                .values((
                    c::id.eq(DbUuid(log.id(user))),
                    c::user_id.eq(user.as_str()),
                    c::title.eq(log.title()),
                    c::status.eq(ACTIVE),
                    c::created_at.eq(DbTime(at)),
                    c::updated_at.eq(DbTime(at)),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?
        });
    }
    Ok(())
}

pub async fn start(tx: &mut UserTx, title: Option<&str>) -> Result<Conversation, StoreError> {
    let (tx, user) = tx.split();
    let title = title
        .map(|t| check_text("title", t, limits::CONVERSATION_TITLE, false))
        .transpose()?
        .filter(|t| !t.is_empty());
    let at = now();
    let row: ConversationRow = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::insert_into(c::conversations)
            .values((
                c::id.eq(DbUuid(uuid::Uuid::now_v7())),
                c::user_id.eq(user.as_str()),
                c::title.eq(&title),
                c::status.eq(ACTIVE),
                c::created_at.eq(DbTime(at)),
                c::updated_at.eq(DbTime(at)),
            ))
            .returning(ConversationRow::as_returning())
            .get_result(conn)
            .await?
    });
    Ok(row.into())
}

/// A page of conversations, newest first; archived ones only if asked for.
pub async fn list(
    tx: &mut UserTx,
    include_archived: bool,
    limit: Option<i64>,
    page_cursor: Option<&str>,
    cursors: &CursorKey,
) -> Result<(Vec<Conversation>, Option<String>), StoreError> {
    let (tx, user) = tx.split();
    let limit = page_size("limit", limit)?;
    let after = page_cursor
        .map(|c| cursors.decode(CURSOR_KIND, user, "cursor", c))
        .transpose()?
        .map(DbUuid);
    let mut rows: Vec<ConversationRow> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        let mut select = c::conversations
            .filter(c::user_id.eq(user.as_str()))
            .into_boxed();
        if !include_archived {
            select = select.filter(c::status.eq(ACTIVE));
        }
        if let Some(after) = after {
            select = select.filter(c::id.lt(after));
        }
        select
            .select(ConversationRow::as_select())
            .order(c::id.desc())
            .limit(limit + 1)
            .load(conn)
            .await?
    });
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more
        .then(|| {
            rows.last()
                .map(|row| cursors.encode(CURSOR_KIND, user, row.id.0))
        })
        .flatten();
    Ok((rows.into_iter().map(Conversation::from).collect(), next))
}

/// The conversation, if it is the user's.
pub async fn get(tx: &mut UserTx, id: uuid::Uuid) -> Result<Conversation, StoreError> {
    let (tx, user) = tx.split();
    find(tx, user, id).await
}

/// The query for conversation `$id` of `$user`.
macro_rules! conversation_select {
    ($user:expr, $id:expr) => {{
        use $crate::db::schema::conversations::dsl as c;
        c::conversations
            .filter(c::id.eq(DbUuid($id)))
            .filter(c::user_id.eq($user.as_str()))
            .select(ConversationRow::as_select())
    }};
}

/// The query for a page of conversation `$id`'s messages, newest first, from before
/// message `$before` (if any), call records included only when `$records`.
macro_rules! page_select {
    ($user:expr, $id:expr, $before:expr, $records:expr) => {{
        use $crate::db::schema::messages::dsl as m;
        let mut select = m::messages
            .filter(m::conversation_id.eq(DbUuid($id)))
            .filter(m::user_id.eq($user.as_str()))
            .filter(m::hidden_at.is_null())
            .into_boxed();
        if let Some(before) = $before {
            select = select.filter(m::id.lt(before));
        }
        if !$records {
            select = select.filter(m::kind.eq(KIND_MESSAGE));
        }
        select.select(MessageRow::as_select()).order(m::id.desc())
    }};
}

/// The conversation, if it is the user's.
pub(super) async fn find(
    tx: &mut Tx,
    user: &UserId,
    id: uuid::Uuid,
) -> Result<Conversation, StoreError> {
    let row: Option<ConversationRow> = on_backend!(tx, |conn| {
        conversation_select!(user, id)
            .first(conn)
            .await
            .optional()?
    });
    row.map(Conversation::from)
        .ok_or_else(|| StoreError::not_found("conversation", id))
}

/// Appends a message. The conversation's row is updated first, which locks it, so
/// appends to one conversation commit one at a time and in id order.
pub async fn append_message(
    tx: &mut UserTx,
    conversation: uuid::Uuid,
    message: &NewMessage,
    quotas: &Quotas,
) -> Result<Message, StoreError> {
    let (tx, user) = tx.split();
    check_message(message, quotas)?;
    make_room(tx, user, conversation, 1, quotas).await?;
    insert_message(tx, user, conversation, message).await
}

/// Counts `added` messages about to be appended, locking the conversation: refused past
/// the quota or in an archived conversation (the caller's rollback undoes the count).
pub(super) async fn make_room(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    added: i32,
    quotas: &Quotas,
) -> Result<(), StoreError> {
    let (status, appended) = count_appends(tx, user, conversation, added).await?;
    if appended > quotas.messages_per_conversation {
        return Err(StoreError::QuotaExceeded(format!(
            "conversation {conversation} would then hold {appended} messages; this server \
             keeps at most {} messages in one conversation: summarize it and start a new \
             one, or clear_conversation",
            quotas.messages_per_conversation
        )));
    }
    if status == ARCHIVED {
        return Err(StoreError::Conflict(format!(
            "conversation {conversation} is archived: unarchive_conversation it, or start a \
             new one, to continue"
        )));
    }
    Ok(())
}

/// Locks the conversation's row for a write that is not an append (an agent state, say),
/// bumping its `updated_at`; an archived conversation takes no writes.
pub(super) async fn lock_for_write(
    tx: &mut Tx,
    user: &UserId,
    id: uuid::Uuid,
) -> Result<(), StoreError> {
    let at = now();
    let status: Option<String> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str())),
        )
        .set(c::updated_at.eq(DbTime(at)))
        .returning(c::status)
        .get_result(conn)
        .await
        .optional()?
    });
    match status.as_deref() {
        None => Err(StoreError::not_found("conversation", id)),
        Some(ARCHIVED) => Err(StoreError::Conflict(format!(
            "conversation {id} is archived: unarchive_conversation it to continue"
        ))),
        Some(_) => Ok(()),
    }
}

/// A message's content as append_message and commit_turn take it: not empty, no NUL
/// bytes, within the length limit and the byte quota.
pub(super) fn check_content(content: &str, quotas: &Quotas) -> Result<(), StoreError> {
    if content.contains('\0') {
        return Err(StoreError::invalid("content", "must not contain NUL bytes"));
    }
    let length = content.chars().count();
    if length > limits::MESSAGE_CONTENT {
        return Err(StoreError::invalid(
            "content",
            format!(
                "is {length} characters; the limit is {}",
                limits::MESSAGE_CONTENT
            ),
        ));
    }
    if content.trim().is_empty() {
        return Err(StoreError::invalid("content", "must not be empty"));
    }
    if content.len() > quotas.message_bytes {
        return Err(StoreError::QuotaExceeded(format!(
            "the message is {} bytes; this server takes at most {} bytes per message",
            content.len(),
            quotas.message_bytes
        )));
    }
    Ok(())
}

/// Counts `added` more appended messages and bumps `updated_at`, locking the row (a quota
/// overrun is undone with the caller's rollback); returns the status and the new count.
pub(super) async fn count_appends(
    tx: &mut Tx,
    user: &UserId,
    id: uuid::Uuid,
    added: i32,
) -> Result<(String, i32), StoreError> {
    let at = now();
    let counted: Option<(String, i32)> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str())),
        )
        .set((
            c::updated_at.eq(DbTime(at)),
            c::message_count.eq(c::message_count + added),
        ))
        .returning((c::status, c::message_count))
        .cached()
        .get_result(conn)
        .await
        .optional()?
    });
    counted.ok_or_else(|| StoreError::not_found("conversation", id))
}

/// Inserts an agent's message; callers have checked it ([`check_message`]) and that the
/// conversation is the user's (the composite foreign key enforces it regardless).
pub(super) async fn insert_message(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    message: &NewMessage,
) -> Result<Message, StoreError> {
    let calls = message
        .tool_calls
        .as_ref()
        .filter(|calls| !calls.is_empty())
        .map(|calls| serde_json::to_value(calls).unwrap_or_default());
    let row: MessageRow = on_backend!(tx, |conn| {
        use schema::messages::dsl as m;
        diesel::insert_into(m::messages)
            .values((
                m::conversation_id.eq(DbUuid(conversation)),
                m::user_id.eq(user.as_str()),
                m::role.eq(message.role.as_str()),
                m::content.eq(&message.content),
                m::created_at.eq(DbTime(now())),
                m::kind.eq(KIND_MESSAGE),
                m::agent_tool_calls.eq(calls.as_ref().map(DbJson)),
                m::tool_call_id.eq(message.tool_call_id.as_deref()),
            ))
            .returning(MessageRow::as_returning())
            .get_result(conn)
            .await?
    });
    Ok(row.into())
}

/// Inserts the server's record of a tool call.
pub(super) async fn insert_record(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    content: &str,
    record: &JsonText,
) -> Result<(), StoreError> {
    // Executed, with nothing returned: the call's COMMIT may ride with it
    // (`Tx::commit_with_next_statement`).
    on_backend!(tx, |conn| {
        use schema::messages::dsl as m;
        diesel::insert_into(m::messages)
            .values((
                m::conversation_id.eq(DbUuid(conversation)),
                m::user_id.eq(user.as_str()),
                m::role.eq("tool"),
                m::content.eq(content),
                m::tool_calls.eq(record),
                m::created_at.eq(DbTime(now())),
                m::kind.eq(KIND_CALL_RECORD),
            ))
            .execute(conn)
            .await?
    });
    Ok(())
}

const KIND_MESSAGE: &str = "message";
const KIND_CALL_RECORD: &str = "call_record";

/// A conversation, its summary, and a page of its messages, oldest first.
pub struct History {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
    /// Pass as `before` to read the page before this one; none at the start.
    pub next_cursor: Option<i64>,
}

pub async fn history(
    tx: &mut UserTx,
    id: uuid::Uuid,
    limit: Option<i64>,
    before: Option<i64>,
    include_call_records: bool,
) -> Result<History, StoreError> {
    let (tx, user) = tx.split();
    let limit = page_size("limit", limit)?;
    if let Some(before) = before.filter(|b| *b < 1) {
        return Err(StoreError::invalid(
            "before",
            format!("{before} is not a message id (ids start at 1)"),
        ));
    }
    // The conversation and its page are read together on PostgreSQL: one round trip.
    let (conversation, mut rows): (Option<ConversationRow>, Vec<MessageRow>) = match &mut tx.conn {
        Conn::Postgres(pooled) => {
            let mut session = crate::db::pg::Session::new(pooled, &mut tx.state);
            session
                .pipelined(|conn| {
                    let (mut first, mut second) = (conn, conn);
                    async move {
                        let (conversation, rows) = futures_util::join!(
                            conversation_select!(user, id).first(&mut first),
                            page_select!(user, id, before, include_call_records)
                                .limit(limit + 1)
                                .load(&mut second)
                        );
                        Ok((conversation.optional()?, rows?))
                    }
                    .boxed()
                })
                .await?
        }
        Conn::Sqlite(pooled) => {
            let conn = &mut **pooled;
            let conversation = conversation_select!(user, id)
                .first(conn)
                .await
                .optional()?;
            let rows = page_select!(user, id, before, include_call_records)
                .limit(limit + 1)
                .load(conn)
                .await?;
            (conversation, rows)
        }
    };
    let conversation = conversation
        .map(Conversation::from)
        .ok_or_else(|| StoreError::not_found("conversation", id))?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    let next_cursor = more
        .then(|| <[MessageRow]>::first(&rows).map(|row| row.id))
        .flatten();
    Ok(History {
        conversation,
        messages: rows.into_iter().map(Message::from).collect(),
        next_cursor,
    })
}

pub async fn set_summary(
    tx: &mut UserTx,
    id: uuid::Uuid,
    summary: &str,
    through_message_id: Option<i64>,
) -> Result<Conversation, StoreError> {
    let (tx, user) = tx.split();
    let summary = check_text("summary", summary, limits::SUMMARY, false)?;
    if let Some(message) = through_message_id {
        let found: Option<i64> = on_backend!(tx, |conn| {
            use schema::messages::dsl as m;
            m::messages
                .filter(m::id.eq(message))
                .filter(m::conversation_id.eq(DbUuid(id)))
                .filter(m::user_id.eq(user.as_str()))
                .select(m::id)
                .first(conn)
                .await
                .optional()?
        });
        if found.is_none() {
            // Tell apart "no such conversation" from "no such message in it".
            find(tx, user, id).await?;
            return Err(StoreError::invalid(
                "through_message_id",
                format!("message {message} is not in conversation {id}"),
            ));
        }
    }
    let at = now();
    let row: Option<ConversationRow> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str())),
        )
        .set((
            c::summary.eq(Some(&summary).filter(|s| !s.is_empty())),
            c::summary_through_message_id.eq(through_message_id),
            c::updated_at.eq(DbTime(at)),
        ))
        .returning(ConversationRow::as_returning())
        .cached()
        .get_result(conn)
        .await
        .optional()?
    });
    row.map(Conversation::from)
        .ok_or_else(|| StoreError::not_found("conversation", id))
}

/// Archives (soft-deletes) a conversation; an archived one is returned unchanged.
pub async fn archive(tx: &mut UserTx, id: uuid::Uuid) -> Result<Conversation, StoreError> {
    let (tx, user) = tx.split();
    let at = now();
    let row: Option<ConversationRow> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str()))
                .filter(c::status.eq(ACTIVE)),
        )
        .set((
            c::status.eq(ARCHIVED),
            c::archived_at.eq(Some(DbTime(at))),
            c::updated_at.eq(DbTime(at)),
        ))
        .returning(ConversationRow::as_returning())
        .cached()
        .get_result(conn)
        .await
        .optional()?
    });
    match row {
        Some(row) => Ok(row.into()),
        None => find(tx, user, id).await,
    }
}

/// Makes an archived conversation active again; an active one is returned unchanged.
pub async fn unarchive(tx: &mut UserTx, id: uuid::Uuid) -> Result<Conversation, StoreError> {
    let (tx, user) = tx.split();
    let at = now();
    let row: Option<ConversationRow> = on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str()))
                .filter(c::status.eq(ARCHIVED)),
        )
        .set((
            c::status.eq(ACTIVE),
            c::archived_at.eq(None::<DbTime>),
            c::updated_at.eq(DbTime(at)),
        ))
        .returning(ConversationRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
    });
    match row {
        Some(row) => Ok(row.into()),
        None => find(tx, user, id).await,
    }
}

/// Hides the latest message the agent appended (not a call record) and returns it: gone
/// from the history and the quota, still in the table (the audit trail). None when the
/// conversation has no such message.
pub async fn pop_message(tx: &mut UserTx, id: uuid::Uuid) -> Result<Option<Message>, StoreError> {
    let (tx, user) = tx.split();
    lock_for_write(tx, user, id).await?;
    let latest: Option<MessageRow> = on_backend!(tx, |conn| {
        use schema::messages::dsl as m;
        m::messages
            .filter(m::conversation_id.eq(DbUuid(id)))
            .filter(m::user_id.eq(user.as_str()))
            .filter(m::kind.eq(KIND_MESSAGE))
            .filter(m::hidden_at.is_null())
            .order(m::id.desc())
            .select(MessageRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    let Some(latest) = latest else {
        return Ok(None);
    };
    hide(tx, user, id, Some(latest.id)).await?;
    Ok(Some(latest.into()))
}

/// Hides every message the agent appended (not the call records); returns how many.
pub async fn clear(tx: &mut UserTx, id: uuid::Uuid) -> Result<usize, StoreError> {
    let (tx, user) = tx.split();
    lock_for_write(tx, user, id).await?;
    hide(tx, user, id, None).await
}

/// Hides message `only`, or every visible message of the agent's, and takes them off the
/// conversation's count.
async fn hide(
    tx: &mut Tx,
    user: &UserId,
    id: uuid::Uuid,
    only: Option<i64>,
) -> Result<usize, StoreError> {
    let at = now();
    let hidden = on_backend!(tx, |conn| {
        use schema::messages::dsl as m;
        let mut target = diesel::update(m::messages)
            .filter(m::conversation_id.eq(DbUuid(id)))
            .filter(m::user_id.eq(user.as_str()))
            .filter(m::kind.eq(KIND_MESSAGE))
            .filter(m::hidden_at.is_null())
            .into_boxed();
        if let Some(only) = only {
            target = target.filter(m::id.eq(only));
        }
        target
            .set(m::hidden_at.eq(Some(DbTime(at))))
            .execute(conn)
            .await?
    });
    let removed = i32::try_from(hidden).unwrap_or(i32::MAX);
    on_backend!(tx, |conn| {
        use schema::conversations::dsl as c;
        diesel::update(
            c::conversations
                .filter(c::id.eq(DbUuid(id)))
                .filter(c::user_id.eq(user.as_str())),
        )
        .set(c::message_count.eq(c::message_count - removed))
        .execute(conn)
        .await?
    });
    Ok(hidden)
}

/// The user's messages with these ids (in no particular order).
pub(super) async fn messages_by_id(
    tx: &mut Tx,
    user: &UserId,
    ids: &[i64],
) -> Result<Vec<Message>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<MessageRow> = on_backend!(tx, |conn| {
        use schema::messages::dsl as m;
        m::messages
            .filter(m::id.eq_any(ids))
            .filter(m::user_id.eq(user.as_str()))
            .select(MessageRow::as_select())
            .load(conn)
            .await?
    });
    Ok(rows.into_iter().map(Message::from).collect())
}
