//! Export and import: every row of a user, as JSON Lines, between any two databases.
//!
//! The format is one JSON object per line, each with a `record` field naming its kind: a
//! `header` first, then for each user a `user` record followed by that user's rows
//! (`task`, `task_request`, `task_label`, `conversation`, `message`, `agent_state`, `turn`). A row record
//! carries every column of its table under the column's name, so an import writes back
//! exactly what was exported: ids, timestamps, message ids (their order) and idempotency
//! keys. Tokens and MCP sessions are not exported: credentials are issued anew against
//! the new database.
//!
//! Both directions stream: an export reads each table in pages by its key, and an import
//! writes each record as it reads it, so memory stays flat for any size. Each user is
//! exported from one snapshot (a read-only transaction that blocks no writer) and imported
//! in one write transaction: a failed import leaves that user as before, and users already
//! imported stay. A row already present (same key) is left as it is, so importing the same
//! file twice changes nothing.

use super::tasks::{LabelRow, TaskRequestRow, TaskRow};
use super::{EndsTransaction, StoreError, UserId, UserTx, end};
use crate::db::{Conn, Database, DbJson, DbTime, DbUuid, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// The `format` a header names; an import refuses any other.
pub const FORMAT: &str = "todo-mcp-export";
/// The format's version: raised when a record changes in a way an older import would
/// misread.
pub const FORMAT_VERSION: u32 = 1;
/// Rows read per query while exporting (public for the test that crosses page boundaries).
pub const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("line {line}: {reason}")]
    Format { line: u64, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<crate::db::DbError> for TransferError {
    fn from(error: crate::db::DbError) -> Self {
        TransferError::Store(StoreError::Db(error))
    }
}

impl EndsTransaction for TransferError {
    fn db_error(&mut self) -> Option<&mut crate::db::DbError> {
        match self {
            TransferError::Store(error) => error.db_error(),
            _ => None,
        }
    }
}

impl From<diesel::result::Error> for TransferError {
    fn from(error: diesel::result::Error) -> Self {
        TransferError::Store(StoreError::from(error))
    }
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    User(UserRecord),
    Task(TaskRow),
    TaskRequest(TaskRequestRow),
    TaskLabel(LabelRow),
    Conversation(ConversationRecord),
    Message(MessageRecord),
    AgentState(AgentStateRecord),
    Turn(TurnRecord),
}

impl Record {
    /// The record kind, as its `record` field names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Header(_) => "header",
            Record::User(_) => "user",
            Record::Task(_) => "task",
            Record::TaskRequest(_) => "task_request",
            Record::TaskLabel(_) => "task_label",
            Record::Conversation(_) => "conversation",
            Record::Message(_) => "message",
            Record::AgentState(_) => "agent_state",
            Record::Turn(_) => "turn",
        }
    }

    /// The user a row record belongs to (none for the header).
    fn user_id(&self) -> Option<&str> {
        match self {
            Record::Header(_) => None,
            Record::User(r) => Some(&r.id),
            Record::Task(r) => Some(&r.user_id),
            Record::TaskRequest(r) => Some(&r.user_id),
            Record::TaskLabel(r) => Some(&r.user_id),
            Record::Conversation(r) => Some(&r.user_id),
            Record::Message(r) => Some(&r.user_id),
            Record::AgentState(r) => Some(&r.user_id),
            Record::Turn(r) => Some(&r.user_id),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    /// The program and version that wrote it (`todo-mcp 0.1.0`).
    pub generator: String,
    /// The backend it was read from (`sqlite`, `postgresql`).
    pub source: String,
}

// One struct per table, every column under its own name. `tests/it/transfer.rs` checks each
// against the table's columns, so a column added to the schema cannot be left out.

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::users)]
// `None` is bound as NULL rather than written as DEFAULT: the INSERT's text then never
// depends on the values, so its prepared statement is cached and reused.
#[diesel(treat_none_as_default_value = false)]
pub struct UserRecord {
    pub id: String,
    pub created_at: DbTime,
    pub task_count: i32,
}

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::conversations)]
#[diesel(treat_none_as_default_value = false)]
pub struct ConversationRecord {
    pub id: DbUuid,
    pub user_id: String,
    pub title: Option<String>,
    pub status: String,
    pub summary: Option<String>,
    pub summary_through_message_id: Option<i64>,
    pub created_at: DbTime,
    pub updated_at: DbTime,
    pub archived_at: Option<DbTime>,
    pub message_count: i32,
}

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::messages)]
#[diesel(treat_none_as_default_value = false)]
pub struct MessageRecord {
    pub id: i64,
    pub conversation_id: DbUuid,
    pub user_id: String,
    pub role: String,
    pub content: String,
    pub tool_calls: Option<DbJson>,
    pub created_at: DbTime,
    pub kind: String,
    pub agent_tool_calls: Option<DbJson>,
    pub tool_call_id: Option<String>,
    pub hidden_at: Option<DbTime>,
}

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::agent_states)]
#[diesel(treat_none_as_default_value = false)]
pub struct AgentStateRecord {
    pub conversation_id: DbUuid,
    pub user_id: String,
    pub version: i32,
    pub state: DbJson,
    pub created_at: DbTime,
}

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::turns)]
#[diesel(treat_none_as_default_value = false)]
pub struct TurnRecord {
    pub user_id: String,
    pub idempotency_key: String,
    pub conversation_id: DbUuid,
    /// Base64 (standard alphabet): a hash of the turn's request, to tell a retry from
    /// a different turn under the same key.
    #[serde(with = "super::base64_bytes")]
    pub request_hash: Vec<u8>,
    pub result: DbJson,
    pub created_at: DbTime,
}

/// How many records of each kind were written, or inserted and found already present.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<&'static str, u64>);

impl Counts {
    fn add(&mut self, kind: &'static str) {
        self.add_n(kind, 1);
    }

    fn add_n(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry(kind).or_default() += n;
        }
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, n)| format!("{n} {k}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Writes `user`'s rows, or every user's, to `out` as JSON Lines; returns what it wrote.
pub async fn export(
    db: &Database,
    only: Option<&UserId>,
    out: &mut impl Write,
) -> Result<Counts, TransferError> {
    let header = Record::Header(Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        exported_at: super::now(),
        generator: concat!("todo-mcp ", env!("CARGO_PKG_VERSION")).into(),
        source: db.backend_name().into(),
    });
    write_record(out, &header)?;
    let mut counts = Counts::default();
    match only {
        Some(user) => {
            if !super::users::exists(db, user).await? {
                return Err(StoreError::NotFound {
                    entity: "user",
                    id: super::quote(user.as_str()),
                }
                .into());
            }
            export_user(db, user, out, &mut counts).await?;
        }
        None => {
            // Users a page at a time (user ids are not secret: the users table is outside
            // row-level security), each exported in a transaction of its own.
            let mut after = String::new();
            loop {
                let ids = super::users::page_ids(db, &after, PAGE).await?;
                for id in &ids {
                    export_user(db, &UserId::parse(id)?, out, &mut counts).await?;
                }
                match ids.last() {
                    Some(last) if ids.len() as i64 == PAGE => after = last.clone(),
                    _ => break,
                }
            }
        }
    }
    out.flush()?;
    Ok(counts)
}

fn write_record(out: &mut impl Write, record: &Record) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

async fn export_user(
    db: &Database,
    user: &UserId,
    out: &mut impl Write,
    counts: &mut Counts,
) -> Result<(), TransferError> {
    let mut tx = UserTx::begin_snapshot(db, user).await?;
    let written = export_user_in(&mut tx, out, counts).await;
    end(tx, written).await
}

/// Writes `rows` as records, counting them.
fn emit<R>(
    out: &mut impl Write,
    counts: &mut Counts,
    rows: Vec<R>,
    wrap: fn(R) -> Record,
) -> Result<(), TransferError> {
    for row in rows {
        let record = wrap(row);
        write_record(out, &record)?;
        counts.add(record.kind());
    }
    Ok(())
}

/// Writes a table's rows a keyset page at a time, so memory stays flat for any size:
/// `load` gets the key of the previous page's last row (`None` for the first page) and
/// returns up to [`PAGE`] rows after it, in key order; a short page is the last.
async fn export_pages<R, K>(
    out: &mut impl Write,
    counts: &mut Counts,
    wrap: fn(R) -> Record,
    key_of: fn(&R) -> K,
    mut load: impl AsyncFnMut(Option<K>) -> Result<Vec<R>, TransferError>,
) -> Result<(), TransferError> {
    let mut after = None;
    loop {
        let rows = load(after.take()).await?;
        let full = rows.len() as i64 == PAGE;
        after = rows.last().map(key_of);
        emit(out, counts, rows, wrap)?;
        if !full {
            return Ok(());
        }
    }
}

async fn export_user_in(
    utx: &mut UserTx,
    out: &mut impl Write,
    counts: &mut Counts,
) -> Result<(), TransferError> {
    let (tx, user) = utx.split();
    let user = user.as_str();
    let row: UserRecord = on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        u::users
            .filter(u::id.eq(user))
            .select(UserRecord::as_select())
            .first(conn)
            .await?
    });
    emit(out, counts, vec![row], Record::User)?;

    // Parents before their subtasks, so an import that checks at once would take them too.
    for subtasks in [false, true] {
        export_pages(
            out,
            counts,
            Record::Task,
            |task: &TaskRow| task.columns.id,
            async |after| {
                Ok(on_backend!(tx, |conn| {
                    use schema::tasks::dsl as t;
                    let mut query = t::tasks
                        .filter(t::user_id.eq(user))
                        .select(TaskRow::as_select())
                        .order(t::id)
                        .limit(PAGE)
                        .into_boxed();
                    query = if subtasks {
                        query.filter(t::parent_task_id.is_not_null())
                    } else {
                        query.filter(t::parent_task_id.is_null())
                    };
                    if let Some(after) = after {
                        query = query.filter(t::id.gt(after));
                    }
                    query.load(conn).await?
                }))
            },
        )
        .await?;
    }

    export_pages(
        out,
        counts,
        Record::TaskRequest,
        |request: &TaskRequestRow| request.task_id,
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::task_requests::dsl as r;
                let mut query = r::task_requests
                    .filter(r::user_id.eq(user))
                    .select(TaskRequestRow::as_select())
                    .order(r::task_id)
                    .limit(PAGE)
                    .into_boxed();
                if let Some(after) = after {
                    query = query.filter(r::task_id.gt(after));
                }
                query.load(conn).await?
            }))
        },
    )
    .await?;

    export_pages(
        out,
        counts,
        Record::TaskLabel,
        |label: &LabelRow| (label.task_id, label.label_key.clone()),
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::task_labels::dsl as l;
                let mut query = l::task_labels
                    .filter(l::user_id.eq(user))
                    .select(LabelRow::as_select())
                    .order((l::task_id, l::label_key))
                    .limit(PAGE)
                    .into_boxed();
                if let Some((task, key)) = after {
                    query = query.filter(
                        l::task_id
                            .gt(task)
                            .or(l::task_id.eq(task).and(l::label_key.gt(key))),
                    );
                }
                query.load(conn).await?
            }))
        },
    )
    .await?;

    export_pages(
        out,
        counts,
        Record::Conversation,
        |conversation: &ConversationRecord| conversation.id,
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::conversations::dsl as c;
                let mut query = c::conversations
                    .filter(c::user_id.eq(user))
                    .select(ConversationRecord::as_select())
                    .order(c::id)
                    .limit(PAGE)
                    .into_boxed();
                if let Some(after) = after {
                    query = query.filter(c::id.gt(after));
                }
                query.load(conn).await?
            }))
        },
    )
    .await?;

    // In id order: the order messages were appended in, across all conversations.
    export_pages(
        out,
        counts,
        Record::Message,
        |message: &MessageRecord| message.id,
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::messages::dsl as m;
                m::messages
                    .filter(m::user_id.eq(user))
                    .filter(m::id.gt(after.unwrap_or(0)))
                    .select(MessageRecord::as_select())
                    .order(m::id)
                    .limit(PAGE)
                    .load(conn)
                    .await?
            }))
        },
    )
    .await?;

    export_pages(
        out,
        counts,
        Record::AgentState,
        |state: &AgentStateRecord| (state.conversation_id, state.version),
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::agent_states::dsl as s;
                let mut query = s::agent_states
                    .filter(s::user_id.eq(user))
                    .select(AgentStateRecord::as_select())
                    .order((s::conversation_id, s::version))
                    .limit(PAGE)
                    .into_boxed();
                if let Some((conversation, version)) = after {
                    query = query.filter(
                        s::conversation_id.gt(conversation).or(s::conversation_id
                            .eq(conversation)
                            .and(s::version.gt(version))),
                    );
                }
                query.load(conn).await?
            }))
        },
    )
    .await?;

    export_pages(
        out,
        counts,
        Record::Turn,
        |turn: &TurnRecord| turn.idempotency_key.clone(),
        async |after| {
            Ok(on_backend!(tx, |conn| {
                use schema::turns::dsl as r;
                let mut query = r::turns
                    .filter(r::user_id.eq(user))
                    .select(TurnRecord::as_select())
                    .order(r::idempotency_key)
                    .limit(PAGE)
                    .into_boxed();
                if let Some(after) = after {
                    query = query.filter(r::idempotency_key.gt(after));
                }
                query.load(conn).await?
            }))
        },
    )
    .await
}

/// What an import did: records inserted, and records whose row was already there.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Imported {
    pub users: Vec<String>,
    pub inserted: Counts,
    pub already_present: Counts,
}

/// Reads an export from `input` and writes its rows into `db`, one transaction per user.
/// `on_user` hears of each user once committed (for progress on a long import).
pub async fn import(
    db: &Database,
    input: impl BufRead,
    mut on_user: impl FnMut(&str),
) -> Result<Imported, TransferError> {
    let mut imported = Imported::default();
    let mut current: Option<UserImport> = None;
    let mut saw_header = false;
    for (index, line) in input.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let format_error = |reason: String| TransferError::Format {
            line: line_no,
            reason,
        };
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| format_error(format!("not a record of a todo-mcp export: {e}")))?;
        let result = match record {
            Record::Header(header) => {
                if saw_header || line_no != 1 {
                    Err(format_error("a header after the first line".into()))
                } else if header.format != FORMAT || header.version != FORMAT_VERSION {
                    Err(format_error(format!(
                        "format {} version {} is not one this todo-mcp reads ({FORMAT} \
                         version {FORMAT_VERSION})",
                        super::quote(&header.format),
                        header.version
                    )))
                } else {
                    saw_header = true;
                    Ok(())
                }
            }
            _ if !saw_header => Err(format_error(format!(
                "the first line must be the export's header (`\"record\":\"header\"`), not a \
                 {} record",
                record.kind()
            ))),
            Record::User(user) => {
                if let Some(done) = current.take() {
                    done.close(&mut imported, &mut on_user).await?;
                }
                match UserImport::open(db, user, &mut imported).await {
                    Ok(next) => {
                        current = Some(next);
                        Ok(())
                    }
                    Err(TransferError::Store(StoreError::Invalid { reason, .. })) => {
                        Err(format_error(format!("bad user id: {reason}")))
                    }
                    Err(other) => return Err(other),
                }
            }
            row => match current.as_mut() {
                None => Err(format_error(format!(
                    "a {} record before any user record",
                    row.kind()
                ))),
                Some(user) if row.user_id() != Some(user.user.as_str()) => {
                    Err(format_error(format!(
                        "a {} record of user {} within user {}'s records",
                        row.kind(),
                        super::quote(row.user_id().unwrap_or_default()),
                        super::quote(user.user.as_str())
                    )))
                }
                Some(user) => user.insert(row, &mut imported).await.map_err(|e| match e {
                    TransferError::Store(StoreError::Conflict(reason)) => format_error(reason),
                    other => other,
                }),
            },
        };
        if let Err(error) = result {
            return match current.take() {
                Some(open) => end(open.tx, Err(error)).await,
                None => Err(error),
            };
        }
    }
    if !saw_header {
        return Err(TransferError::Format {
            line: 0,
            reason: "the input is empty: no export header".into(),
        });
    }
    if let Some(done) = current.take() {
        done.close(&mut imported, &mut on_user).await?;
    }
    Ok(imported)
}

/// One user's import in progress: its open transaction.
struct UserImport {
    tx: UserTx,
    user: UserId,
    /// The highest message id imported, for PostgreSQL's id sequence.
    max_message_id: i64,
    /// Messages read and not yet inserted.
    messages: Vec<MessageRecord>,
}

/// Messages inserted per statement: one round trip for many rows (11 parameters a row,
/// well under PostgreSQL's limit on parameters).
const MESSAGE_BATCH: usize = 500;

impl UserImport {
    async fn open(
        db: &Database,
        record: UserRecord,
        imported: &mut Imported,
    ) -> Result<Self, TransferError> {
        let user = UserId::parse(&record.id)?;
        let mut tx = UserTx::begin(db, &user).await?;
        let begun = Self::open_in(&mut tx, &record).await;
        match begun {
            Ok(inserted) => {
                let counts = if inserted {
                    &mut imported.inserted
                } else {
                    &mut imported.already_present
                };
                counts.add("user");
                Ok(UserImport {
                    tx,
                    user,
                    max_message_id: 0,
                    messages: Vec::with_capacity(MESSAGE_BATCH),
                })
            }
            Err(error) => end(tx, Err(error)).await,
        }
    }

    async fn open_in(tx: &mut UserTx, record: &UserRecord) -> Result<bool, TransferError> {
        let tx = &mut tx.tx;
        // References within the user's rows may point forward (a subtask to a parent
        // that comes later, a summary to a message): check them at commit.
        let defer = if tx.is_postgres() {
            "SET CONSTRAINTS ALL DEFERRED"
        } else {
            "PRAGMA defer_foreign_keys = ON"
        };
        on_backend!(tx, |conn| diesel::sql_query(defer).execute(conn).await?);
        let inserted = on_backend!(tx, |conn| {
            use schema::users::dsl as u;
            diesel::insert_into(u::users)
                .values(record)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?
        });
        Ok(inserted == 1)
    }

    async fn insert(
        &mut self,
        record: Record,
        imported: &mut Imported,
    ) -> Result<(), TransferError> {
        // Messages, the bulk of an export, go in batches; anything else goes in after the
        // messages before it.
        let record = match record {
            Record::Message(message) => {
                self.messages.push(message);
                if self.messages.len() >= MESSAGE_BATCH {
                    self.flush_messages(imported).await?;
                }
                return Ok(());
            }
            other => other,
        };
        self.flush_messages(imported).await?;
        let kind = record.kind();
        let tx = &mut self.tx.tx;
        let inserted = match &record {
            Record::Header(_) | Record::User(_) => unreachable!("handled by import"),
            Record::Task(r) => on_backend!(tx, |conn| {
                use schema::tasks::dsl as t;
                diesel::insert_into(t::tasks)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
            Record::TaskRequest(r) => on_backend!(tx, |conn| {
                diesel::insert_into(schema::task_requests::table)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
            Record::TaskLabel(r) => on_backend!(tx, |conn| {
                use schema::task_labels::dsl as l;
                diesel::insert_into(l::task_labels)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
            Record::Conversation(r) => on_backend!(tx, |conn| {
                use schema::conversations::dsl as c;
                diesel::insert_into(c::conversations)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
            Record::Message(_) => unreachable!("batched by insert"),
            Record::AgentState(r) => on_backend!(tx, |conn| {
                use schema::agent_states::dsl as s;
                diesel::insert_into(s::agent_states)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
            Record::Turn(r) => on_backend!(tx, |conn| {
                use schema::turns::dsl as r_;
                diesel::insert_into(r_::turns)
                    .values(r)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            }),
        };
        let counts = if inserted == 1 {
            &mut imported.inserted
        } else {
            &mut imported.already_present
        };
        counts.add(kind);
        Ok(())
    }

    /// Inserts the messages read so far. A message id already present must be this user's
    /// same message (a second import). On SQLite ids are global, so another user's row,
    /// invisible here, may hold it; PostgreSQL keys messages by (user_id, id), so each
    /// user's ids are their own.
    async fn flush_messages(&mut self, imported: &mut Imported) -> Result<(), TransferError> {
        if self.messages.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.messages);
        let (tx, user) = self.tx.split();
        let user = user.as_str();
        // One multi-row INSERT on PostgreSQL, a round trip saved per row; on SQLite, which
        // has no round trips (and diesel no multi-row upsert for it), a row at a time.
        let inserted = match &mut tx.conn {
            Conn::Postgres(pooled) => {
                use crate::db::schema::messages::dsl as m;
                let mut session = crate::db::pg::Session::new(pooled, &mut tx.state);
                diesel::insert_into(m::messages)
                    .values(&batch)
                    .on_conflict_do_nothing()
                    .execute(&mut session)
                    .await?
            }
            Conn::Sqlite(pooled) => {
                use crate::db::schema::messages::dsl as m;
                let mut inserted = 0;
                for r in &batch {
                    inserted += diesel::insert_into(m::messages)
                        .values(r)
                        .on_conflict_do_nothing()
                        .execute(&mut **pooled)
                        .await?;
                }
                inserted
            }
        };
        if inserted < batch.len() {
            let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
            let present: Vec<(i64, DbUuid)> = on_backend!(tx, |conn| {
                use schema::messages::dsl as m;
                m::messages
                    .filter(m::id.eq_any(&ids))
                    .filter(m::user_id.eq(user))
                    .select((m::id, m::conversation_id))
                    .load(conn)
                    .await?
            });
            let present: std::collections::HashMap<i64, DbUuid> = present.into_iter().collect();
            if let Some(taken) = batch
                .iter()
                .find(|r| present.get(&r.id) != Some(&r.conversation_id))
            {
                return Err(StoreError::Conflict(format!(
                    "message id {} is already taken in this database by another \
                     conversation: import into a database whose messages do not overlap \
                     this export's",
                    taken.id
                ))
                .into());
            }
        }
        let max = batch.iter().map(|r| r.id).max().unwrap_or(0);
        self.max_message_id = self.max_message_id.max(max);
        imported.inserted.add_n("message", inserted as u64);
        imported
            .already_present
            .add_n("message", (batch.len() - inserted) as u64);
        Ok(())
    }

    /// Settles the counters the rows imply and commits.
    async fn close(
        mut self,
        imported: &mut Imported,
        on_user: &mut impl FnMut(&str),
    ) -> Result<(), TransferError> {
        let finished = match self.flush_messages(imported).await {
            Ok(()) => self.close_in().await,
            Err(error) => Err(error),
        };
        end(self.tx, finished).await?;
        on_user(self.user.as_str());
        imported.users.push(self.user.as_str().to_owned());
        Ok(())
    }

    async fn close_in(&mut self) -> Result<(), TransferError> {
        let (tx, user) = self.tx.split();
        let user = user.as_str();
        // The user row's task count is what the quota checks: count what is there now.
        on_backend!(tx, |conn| {
            use schema::tasks::dsl as t;
            use schema::users::dsl as u;
            let tasks: i64 = t::tasks
                .filter(t::user_id.eq(user))
                .count()
                .get_result(conn)
                .await?;
            diesel::update(u::users.filter(u::id.eq(user)))
                .set(u::task_count.eq(i32::try_from(tasks).unwrap_or(i32::MAX)))
                .execute(conn)
                .await?
        });
        // Each label row carries its task's state (an export older than that column
        // carries none): set it from the tasks.
        for completed in [false, true] {
            on_backend!(tx, |conn| {
                use schema::task_labels::dsl as l;
                use schema::tasks::dsl as t;
                let tasks = t::tasks
                    .filter(t::user_id.eq(user))
                    .filter(t::completed.eq(completed))
                    .select(t::id);
                diesel::update(
                    l::task_labels
                        .filter(l::user_id.eq(user))
                        .filter(l::completed.ne(completed))
                        .filter(l::task_id.eq_any(tasks)),
                )
                .set(l::completed.eq(completed))
                .execute(conn)
                .await?
            });
        }
        if tx.is_postgres() && self.max_message_id > 0 {
            advance_message_ids(tx, self.max_message_id).await?;
        }
        Ok(())
    }
}

/// PostgreSQL: moves the message id sequence past `max`, so new messages get higher ids
/// than the imported ones (never back: `nextval` first takes the next one atomically).
async fn advance_message_ids(tx: &mut Tx, max: i64) -> Result<(), TransferError> {
    on_backend!(tx, |conn| {
        diesel::sql_query(
            "SELECT setval(pg_get_serial_sequence('messages', 'id'), $1) \
             WHERE $1 >= nextval(pg_get_serial_sequence('messages', 'id'))",
        )
        .bind::<diesel::sql_types::BigInt, _>(max)
        .execute(conn)
        .await?
    });
    Ok(())
}
