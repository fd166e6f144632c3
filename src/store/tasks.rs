//! Tasks: a user's to-do items, with a due date, a priority, labels and subtasks.

use super::UserTx;
use super::cursor::CursorKey;
use super::repeat::Repeat;
use super::task_fields::{Due, Label, Priority, check_labels, no_due};
use super::{Quotas, StoreError, UserId, check_text, format_time, limits, now, page_size};
use crate::db::sql::{CachedDsl, PgExplain, SqliteExplain, coalesce, lower};
use crate::db::{Conn, DbTime, DbUuid, Tx};
use crate::on_backend;
use chrono::{DateTime, NaiveTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The columns of `tasks` a task shows, each defined here once: with its labels, the task
/// as tools return it ([`Task`]); with the columns tools do not show, a row ([`TaskRow`]),
/// which is also its export record.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Queryable, Selectable, Insertable,
)]
#[diesel(table_name = crate::db::schema::tasks)]
// `None` is bound as NULL rather than written as DEFAULT: the INSERT's text then never
// depends on the values, so its prepared statement is cached and reused.
#[diesel(treat_none_as_default_value = false)]
pub struct TaskColumns {
    /// The task's id (a UUID).
    pub id: DbUuid,
    pub title: String,
    /// Free-form details; null when none were given.
    pub description: Option<String>,
    /// When it is due, as given: a date (`2026-12-01`, all day) or a date-time with its
    /// offset (`2026-12-01T09:00:00+01:00`); null when it has no due date.
    pub due: Option<String>,
    pub priority: Priority,
    /// The parent task's id (a UUID) when this is a subtask; null otherwise.
    pub parent_task_id: Option<DbUuid>,
    /// How it repeats (RFC 5545 RRULE text, e.g. `FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=1`);
    /// null when it does not.
    pub repeat: Option<String>,
    /// How long it is expected to take, in minutes; null when not estimated.
    pub estimate_minutes: Option<i32>,
    pub completed: bool,
    /// RFC 3339, UTC.
    pub created_at: DbTime,
    /// RFC 3339, UTC.
    pub updated_at: DbTime,
    /// RFC 3339, UTC; null while the task is pending.
    pub completed_at: Option<DbTime>,
}

/// A row of `tasks`, every column under its own name: what the store writes and reads,
/// and what an export carries (`store::transfer`).
#[derive(Debug, Clone, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::tasks)]
#[diesel(treat_none_as_default_value = false)]
pub struct TaskRow {
    #[diesel(embed)]
    #[serde(flatten)]
    pub columns: TaskColumns,
    pub user_id: String,
    pub idempotency_key: Option<String>,
    /// What `due` sorts and filters by (see the migration).
    pub due_at: DbTime,
}

/// A row of `task_requests`: what a task was added with under an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::task_requests)]
#[diesel(treat_none_as_default_value = false)]
pub struct TaskRequestRow {
    pub task_id: DbUuid,
    pub user_id: String,
    /// SHA-256 of add_task's arguments as checked (base64 in an export).
    #[serde(with = "super::base64_bytes")]
    pub request_hash: Vec<u8>,
}

/// A row of `task_labels`.
#[derive(Debug, Clone, Serialize, Deserialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::db::schema::task_labels)]
#[diesel(treat_none_as_default_value = false)]
pub struct LabelRow {
    pub task_id: DbUuid,
    pub user_id: String,
    pub label: String,
    pub label_key: String,
    pub position: i16,
    /// Its task's `completed`, so that list_labels counts pending tasks from the label
    /// index alone. (Absent in exports before it: the import sets it from the task.)
    #[serde(default)]
    pub completed: bool,
}

/// A task as tools return it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Task {
    #[serde(flatten)]
    pub columns: TaskColumns,
    /// In the order given.
    pub labels: Vec<String>,
}

/// Cursor kinds, one per sort: each carries the last task's sort key and id.
const CURSOR_CREATED: &str = "t";
const CURSOR_DUE: &str = "td";
const CURSOR_PRIORITY: &str = "tp";

/// Which tasks `list` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    All,
    Pending,
    Completed,
}

/// The order `list` returns tasks in; ties go newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskSort {
    /// Newest first.
    #[default]
    Created,
    /// Soonest due first, tasks without a due date last.
    Due,
    /// Most urgent first.
    Priority,
}

/// add_task's arguments: the tool's input schema (these doc comments are the descriptions
/// a client shows). A column a task gets from its caller is a field here, checked into
/// [`TaskColumns`] by [`NewTask::check`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// What to do: 1 to 500 characters.
    pub title: String,
    /// Optional details, up to 10,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// When it is due: a date (`2026-12-01`, all day) or a date-time with an offset
    /// (`2026-12-01T09:00:00+01:00`, `Z` for UTC); the task keeps which one it was given.
    #[serde(default)]
    pub due: Option<String>,
    /// `low`, `normal` (default), `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Up to 20 labels, each 1 to 60 characters, no two the same but for case.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Makes this a subtask of another of the user's tasks (UUID), which must not itself be
    /// a subtask. Deleting the parent deletes its subtasks; completing it does not complete
    /// them.
    #[serde(default)]
    pub parent_task_id: Option<String>,
    /// Makes it repeat (it needs a due date): RFC 5545 RRULE text with FREQ=DAILY, WEEKLY,
    /// MONTHLY or YEARLY, INTERVAL, BYDAY (weekly) and BYMONTHDAY (monthly), e.g.
    /// `FREQ=MONTHLY;BYMONTHDAY=1` or `FREQ=WEEKLY;BYDAY=MO,TH`. Completing it creates the
    /// next occurrence.
    #[serde(default)]
    pub repeat: Option<String>,
    /// How long it is expected to take, in minutes: 1 to 100,000.
    #[serde(default)]
    pub estimate_minutes: Option<i32>,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    // (Read from the call's arguments by its record, `store::calls`.)
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Any string unique to this intended task (1 to 200 characters): a retry with the same
    /// key and the same arguments returns the task the first call created (`replayed`:
    /// true) and creates nothing; the same key with other arguments is a `conflict`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl NewTask {
    /// The task asked for, checked: its columns (a new id, created now) and its labels.
    fn check(&self) -> Result<(TaskColumns, Vec<Label>), StoreError> {
        let title = check_text("title", &self.title, limits::TITLE, true)?;
        let description = self
            .description
            .as_deref()
            .map(|d| check_text("description", d, limits::DESCRIPTION, false))
            .transpose()?
            .filter(|d| !d.is_empty());
        let due = self
            .due
            .as_deref()
            .map(|raw| Due::parse("due", raw))
            .transpose()?;
        let repeat = self.repeat.as_deref().map(Repeat::parse).transpose()?;
        check_repeat(repeat.as_ref(), due.as_ref())?;
        let labels = check_labels(self.labels.as_deref().unwrap_or_default())?;
        let parent = self
            .parent_task_id
            .as_deref()
            .map(|raw| super::parse_uuid("parent_task_id", raw))
            .transpose()?;
        let created_at = DbTime(now());
        let columns = TaskColumns {
            id: DbUuid(uuid::Uuid::now_v7()),
            title,
            description,
            due: due.map(|due| due.text()),
            priority: self.priority.unwrap_or_default(),
            parent_task_id: parent.map(DbUuid),
            repeat: repeat.as_ref().map(Repeat::text),
            estimate_minutes: self.estimate_minutes.map(check_estimate).transpose()?,
            completed: false,
            created_at,
            updated_at: created_at,
            completed_at: None,
        };
        Ok((columns, labels))
    }
}

/// SHA-256 of what a new task was asked to be: every column but those the server sets,
/// and its labels (serde_json's maps are sorted: canonical). Tells a retry from another
/// task under the same idempotency key.
fn request_hash(columns: &TaskColumns, labels: &[Label]) -> Vec<u8> {
    let mut asked = serde_json::to_value(columns).unwrap_or_default();
    if let Some(fields) = asked.as_object_mut() {
        for set_by_server in [
            "id",
            "completed",
            "created_at",
            "updated_at",
            "completed_at",
        ] {
            fields.remove(set_by_server);
        }
    }
    let labels: Vec<&str> = labels.iter().map(|label| label.text.as_str()).collect();
    let canonical = serde_json::json!({ "task": asked, "labels": labels });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

/// An estimate: 1 to 100,000 minutes (about ten weeks).
fn check_estimate(minutes: i32) -> Result<i32, StoreError> {
    if (1..=100_000).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(StoreError::invalid(
            "estimate_minutes",
            format!("{minutes} is outside 1 to 100000 minutes"),
        ))
    }
}

/// `due_at` for a due date as stored (see the migration).
fn due_at(due: Option<&str>) -> Result<DbTime, StoreError> {
    let due = due.map(|raw| Due::parse("due", raw)).transpose()?;
    Ok(DbTime(due.map_or_else(no_due, |due| due.instant())))
}

/// A repeating task needs a due date to repeat from, and a rule that occurs after it.
fn check_repeat(repeat: Option<&Repeat>, due: Option<&Due>) -> Result<(), StoreError> {
    match (repeat, due) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(StoreError::invalid(
            "repeat",
            "needs a due date to repeat from: give `due` too",
        )),
        (Some(repeat), Some(due)) => repeat.next(due).map(drop),
    }
}

/// What add_task did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Added {
    pub task: Task,
    /// true when this call reused an `idempotency_key` with the same arguments: `task` is
    /// the one the first call created (as it is now), and nothing new was created.
    pub replayed: bool,
}

/// Adds a task. An idempotency key this user used before creates nothing: with the same
/// arguments the call replays (the task the key created), with others it is a conflict.
pub async fn add(tx: &mut UserTx, new: &NewTask, quotas: &Quotas) -> Result<Added, StoreError> {
    let (tx, user) = tx.split();
    let (columns, labels) = new.check()?;
    let idempotency_key = new
        .idempotency_key
        .as_deref()
        .map(|k| check_text("idempotency_key", k, limits::IDEMPOTENCY_KEY, true))
        .transpose()?;
    if let Some(parent) = columns.parent_task_id {
        check_parent(tx, user, parent.0, None).await?;
    }
    let Some(key) = idempotency_key else {
        let task = insert(tx, user, columns, &labels, None, quotas).await?;
        return Ok(Added {
            task: task.ok_or_else(|| StoreError::Conflict("the new task's id was taken".into()))?,
            replayed: false,
        });
    };
    let hash = request_hash(&columns, &labels);
    if let Some(task) = insert(tx, user, columns, &labels, Some((&key, &hash)), quotas).await? {
        return Ok(Added {
            task,
            replayed: false,
        });
    }
    // The key was used before: replay what it created, if it was asked the same.
    let existing: Option<(TaskRow, Option<Vec<u8>>)> = on_backend!(tx, |conn| {
        use schema::task_requests::dsl as r;
        use schema::tasks::dsl as t;
        t::tasks
            .left_join(r::task_requests)
            .filter(t::user_id.eq(user.as_str()))
            .filter(t::idempotency_key.eq(&key))
            .select((TaskRow::as_select(), r::request_hash.nullable()))
            .first(conn)
            .await
            .optional()?
    });
    match existing {
        // A task from before requests were kept (`None`) replays whatever was asked.
        Some((row, stored)) if stored.as_ref().is_none_or(|stored| *stored == hash) => Ok(Added {
            task: with_labels(tx, user, vec![row]).await?.remove(0),
            replayed: true,
        }),
        Some(_) => Err(StoreError::Conflict(format!(
            "idempotency_key {} was used for another task: a retry must send the same title \
             and fields (or use a new key for a new task)",
            super::quote(&key)
        ))),
        None => Err(StoreError::Conflict(format!(
            "the task for idempotency_key {} was deleted",
            super::quote(&key)
        ))),
    }
}

/// Writes a new task (counted against the quota), under an idempotency key and the hash
/// of its request when given; `None` when that key was used before.
async fn insert(
    tx: &mut Tx,
    user: &UserId,
    columns: TaskColumns,
    labels: &[Label],
    idempotency: Option<(&str, &[u8])>,
    quotas: &Quotas,
) -> Result<Option<Task>, StoreError> {
    let row = TaskRow {
        due_at: due_at(columns.due.as_deref())?,
        columns,
        user_id: user.as_str().to_owned(),
        idempotency_key: idempotency.map(|(key, _)| key.to_owned()),
    };
    let request = idempotency.map(|(_, hash)| TaskRequestRow {
        task_id: row.columns.id,
        user_id: row.user_id.clone(),
        request_hash: hash.to_vec(),
    });
    let Some(count) = insert_counted(tx, user, &row, request.as_ref()).await? else {
        return Ok(None);
    };
    if count > quotas.tasks_per_user {
        return Err(StoreError::QuotaExceeded(format!(
            "you already have {} tasks, the most this server keeps per user: delete some \
             first",
            quotas.tasks_per_user
        )));
    }
    insert_labels(tx, user, row.columns.id, false, labels).await?;
    let labels = labels.iter().map(|label| label.text.clone()).collect();
    Ok(Some(Task {
        columns: row.columns,
        labels,
    }))
}

/// Completing a repeating task creates its next occurrence: the same fields, the next due
/// date. `None` for a task that does not repeat.
async fn roll_over(
    tx: &mut Tx,
    user: &UserId,
    done: &Task,
    quotas: &Quotas,
) -> Result<Option<Task>, StoreError> {
    let (Some(rule), Some(due)) = (&done.columns.repeat, &done.columns.due) else {
        return Ok(None);
    };
    let next = Repeat::parse(rule)?.next(&Due::parse("due", due)?)?;
    let created_at = DbTime(now());
    let columns = TaskColumns {
        id: DbUuid(uuid::Uuid::now_v7()),
        due: Some(next.text()),
        completed: false,
        created_at,
        updated_at: created_at,
        completed_at: None,
        ..done.columns.clone()
    };
    let labels = done
        .labels
        .iter()
        .map(|label| Label::new("labels", label))
        .collect::<Result<Vec<_>, _>>()?;
    insert(tx, user, columns, &labels, None, quotas).await
}

/// A task as a change left it and, when the change completed a repeating task, the next
/// occurrence it created.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Completion {
    pub task: Task,
    /// The next occurrence of a repeating task this call completed (same fields, the next
    /// due date); null otherwise.
    pub next_task: Option<Task>,
}

/// A parent must be another of the user's tasks and not itself a subtask; a task that
/// becomes a subtask (`child`) must have none of its own. One level of subtasks.
async fn check_parent(
    tx: &mut Tx,
    user: &UserId,
    parent: uuid::Uuid,
    child: Option<uuid::Uuid>,
) -> Result<(), StoreError> {
    if child == Some(parent) {
        return Err(StoreError::invalid(
            "parent_task_id",
            "is the task itself: a task cannot be its own parent",
        ));
    }
    let grandparent: Option<Option<DbUuid>> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        t::tasks
            .filter(t::id.eq(DbUuid(parent)))
            .filter(t::user_id.eq(user.as_str()))
            .select(t::parent_task_id)
            .first(conn)
            .await
            .optional()?
    });
    match grandparent {
        None => Err(StoreError::invalid(
            "parent_task_id",
            format!("{parent} is not one of your tasks"),
        )),
        Some(Some(_)) => Err(StoreError::invalid(
            "parent_task_id",
            format!("{parent} is itself a subtask: subtasks go one level deep"),
        )),
        Some(None) => {
            let Some(child) = child else { return Ok(()) };
            let subtasks: i64 = on_backend!(tx, |conn| {
                use schema::tasks::dsl as t;
                t::tasks
                    .filter(t::parent_task_id.eq(DbUuid(child)))
                    .count()
                    .get_result(conn)
                    .await?
            });
            if subtasks > 0 {
                return Err(StoreError::invalid(
                    "parent_task_id",
                    format!(
                        "task {child} has subtasks of its own ({subtasks}): subtasks go one \
                         level deep"
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// Writes a task's labels, in order; `completed` is the task's.
async fn insert_labels(
    tx: &mut Tx,
    user: &UserId,
    task: DbUuid,
    completed: bool,
    labels: &[Label],
) -> Result<(), StoreError> {
    // One statement a label: diesel-async's SQLite connection has no multi-row insert,
    // and a task has at most 20.
    for (label, position) in labels.iter().zip(0i16..) {
        let row = LabelRow {
            task_id: task,
            user_id: user.as_str().to_owned(),
            label: label.text.clone(),
            label_key: label.key.clone(),
            position,
            completed,
        };
        on_backend!(tx, |conn| {
            diesel::insert_into(schema::task_labels::table)
                .values(&row)
                .execute(conn)
                .await?
        });
    }
    Ok(())
}

/// Keeps the label rows' copy of a task's completed state (see [`LabelRow::completed`]).
async fn mark_labels(
    tx: &mut Tx,
    user: &UserId,
    id: DbUuid,
    task: &Task,
) -> Result<(), StoreError> {
    if task.labels.is_empty() {
        return Ok(());
    }
    let completed = task.columns.completed;
    on_backend!(tx, |conn| {
        use schema::task_labels::dsl as l;
        diesel::update(
            l::task_labels
                .filter(l::user_id.eq(user.as_str()))
                .filter(l::task_id.eq(id)),
        )
        .set(l::completed.eq(completed))
        .execute(conn)
        .await?
    });
    Ok(())
}

/// The user's tasks with their labels, in the rows' order.
async fn with_labels(
    tx: &mut Tx,
    user: &UserId,
    rows: Vec<TaskRow>,
) -> Result<Vec<Task>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<DbUuid> = rows.iter().map(|row| row.columns.id).collect();
    let labels: Vec<(DbUuid, String)> = on_backend!(tx, |conn| {
        use schema::task_labels::dsl as l;
        l::task_labels
            .filter(l::user_id.eq(user.as_str()))
            .filter(l::task_id.eq_any(&ids))
            .order((l::task_id, l::position))
            .select((l::task_id, l::label))
            .load(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine = labels
                .iter()
                .filter(|(task, _)| *task == row.columns.id)
                .map(|(_, label)| label.clone())
                .collect();
            Task {
                columns: row.columns,
                labels: mine,
            }
        })
        .collect())
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ListQuery<'a> {
    pub status: StatusFilter,
    pub query: Option<&'a str>,
    /// Due before this date or date-time (a date: its start, UTC).
    pub due_before: Option<&'a str>,
    /// Due at or after this date or date-time.
    pub due_after: Option<&'a str>,
    /// Only pending tasks whose due moment has passed (an all-day task: its day, in UTC).
    pub overdue: bool,
    pub label: Option<&'a str>,
    pub priority: Option<Priority>,
    pub parent_task_id: Option<uuid::Uuid>,
    pub sort: TaskSort,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
}

/// Where the next page starts: after this task, in the sort's order.
#[derive(Debug, Clone, Copy)]
enum After {
    Created(DbUuid),
    Due(DateTime<Utc>, DbUuid),
    Priority(i16, DbUuid),
}

impl After {
    fn of(sort: TaskSort, row: &TaskRow) -> After {
        match sort {
            TaskSort::Created => After::Created(row.columns.id),
            TaskSort::Due => After::Due(row.due_at.0, row.columns.id),
            TaskSort::Priority => After::Priority(row.columns.priority.level(), row.columns.id),
        }
    }

    fn encode(self, cursors: &CursorKey, user: &UserId) -> String {
        match self {
            After::Created(id) => cursors.encode(CURSOR_CREATED, user, id.0),
            After::Due(at, id) => {
                let mut key = at.timestamp_micros().to_be_bytes().to_vec();
                key.extend_from_slice(id.0.as_bytes());
                cursors.encode_key(CURSOR_DUE, user, &key)
            }
            After::Priority(level, id) => {
                let mut key = level.to_be_bytes().to_vec();
                key.extend_from_slice(id.0.as_bytes());
                cursors.encode_key(CURSOR_PRIORITY, user, &key)
            }
        }
    }

    fn decode(
        sort: TaskSort,
        cursors: &CursorKey,
        user: &UserId,
        raw: &str,
    ) -> Result<After, StoreError> {
        let id = |bytes: &[u8]| {
            uuid::Uuid::from_slice(bytes)
                .map(DbUuid)
                .map_err(|_| StoreError::invalid("cursor", "is not a cursor this list returned"))
        };
        Ok(match sort {
            TaskSort::Created => After::Created(DbUuid(cursors.decode(
                CURSOR_CREATED,
                user,
                "cursor",
                raw,
            )?)),
            TaskSort::Due => {
                let key = cursors.decode_key::<24>(CURSOR_DUE, user, "cursor", raw)?;
                let mut micros = [0u8; 8];
                micros.copy_from_slice(&key[..8]);
                let at = DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or_else(
                    || StoreError::invalid("cursor", "is not a cursor this list returned"),
                )?;
                After::Due(at, id(&key[8..])?)
            }
            TaskSort::Priority => {
                let key = cursors.decode_key::<18>(CURSOR_PRIORITY, user, "cursor", raw)?;
                After::Priority(i16::from_be_bytes([key[0], key[1]]), id(&key[2..])?)
            }
        })
    }
}

/// A list_tasks query, checked: what [`list`] runs and [`plan`] explains.
struct Page {
    query: ListQuery<'static>,
    limit: i64,
    after: Option<After>,
    pattern: Option<String>,
    due_before: Option<DbTime>,
    due_after: Option<DbTime>,
    label: Option<Label>,
    now: DbTime,
    today: DbTime,
}

impl Page {
    fn new(query: ListQuery<'_>, cursors: &CursorKey, user: &UserId) -> Result<Page, StoreError> {
        let limit = page_size("limit", query.limit)?;
        let after = query
            .cursor
            .map(|raw| After::decode(query.sort, cursors, user, raw))
            .transpose()?;
        let pattern = query
            .query
            .map(|q| check_text("query", q, limits::TITLE, false))
            .transpose()?
            .filter(|q| !q.is_empty())
            .map(|q| format!("%{}%", escape_like(&q.to_lowercase())));
        // A bound on `due_at`: a date-time's instant, a date's start in UTC.
        let bound = |field, raw: Option<&str>| {
            raw.map(|raw| Due::parse(field, raw).map(|due| DbTime(due.instant())))
                .transpose()
        };
        let due_before = bound("due_before", query.due_before)?;
        let due_after = bound("due_after", query.due_after)?;
        let label = query
            .label
            .map(|raw| Label::new("label", raw))
            .transpose()?;
        let at = now();
        Ok(Page {
            // The text arguments are checked into the fields above; the rest is copied.
            query: ListQuery {
                query: None,
                due_before: None,
                due_after: None,
                label: None,
                cursor: None,
                ..query
            },
            limit,
            after,
            pattern,
            due_before,
            due_after,
            label,
            now: DbTime(at),
            today: DbTime(at.date_naive().and_time(NaiveTime::MIN).and_utc()),
        })
    }
}

/// The boxed SELECT of a [`Page`] of the user's tasks, for the backend of the enclosing
/// [`on_backend!`] (a macro: the query's type differs by backend).
macro_rules! page_select {
    ($page:expr, $user:expr) => {{
        use $crate::db::schema::task_labels::dsl as l;
        use $crate::db::schema::tasks::dsl as t;
        let page: &Page = $page;
        let mut select = t::tasks.filter(t::user_id.eq($user.as_str())).into_boxed();
        match page.query.status {
            StatusFilter::All => {}
            StatusFilter::Pending => select = select.filter(t::completed.eq(false)),
            StatusFilter::Completed => select = select.filter(t::completed.eq(true)),
        }
        if let Some(pattern) = &page.pattern {
            select = select.filter(
                lower(t::title.nullable())
                    .like(pattern)
                    .escape('\\')
                    .or(lower(t::description).like(pattern).escape('\\')),
            );
        }
        if let Some(before) = page.due_before {
            select = select.filter(t::due_at.lt(before));
        }
        if let Some(after) = page.due_after {
            select = select
                .filter(t::due_at.ge(after))
                .filter(t::due.is_not_null());
        }
        if page.query.overdue {
            // Past its moment; an all-day task (a due of 10 characters) past its day.
            select = select
                .filter(t::completed.eq(false))
                .filter(t::due_at.lt(page.now))
                .filter(t::due_at.lt(page.today).or(t::due.not_like("____-__-__")));
        }
        if let Some(label) = &page.label {
            select = select.filter(
                t::id.eq_any(
                    l::task_labels
                        .filter(l::user_id.eq($user.as_str()))
                        .filter(l::label_key.eq(&label.key))
                        .select(l::task_id),
                ),
            );
        }
        if let Some(priority) = page.query.priority {
            select = select.filter(t::priority.eq(priority.level()));
        }
        if let Some(parent) = page.query.parent_task_id {
            select = select.filter(t::parent_task_id.eq(DbUuid(parent)));
        }
        // Keyset pages: a range of the sort's index, its first key bounding the scan.
        select = match page.after {
            None => select,
            Some(After::Created(id)) => select.filter(t::id.lt(id)),
            Some(After::Due(due_at, id)) => select
                .filter(t::due_at.ge(DbTime(due_at)))
                .filter(t::due_at.gt(DbTime(due_at)).or(t::id.lt(id))),
            Some(After::Priority(level, id)) => select
                .filter(t::priority.le(level))
                .filter(t::priority.lt(level).or(t::id.lt(id))),
        };
        select = match page.query.sort {
            TaskSort::Created => select.order(t::id.desc()),
            TaskSort::Due => select.order((t::due_at.asc(), t::id.desc())),
            TaskSort::Priority => select.order((t::priority.desc(), t::id.desc())),
        };
        select.select(TaskRow::as_select()).limit(page.limit + 1)
    }};
}

/// A page of tasks in the sort's order, and the cursor of the next page (none at the end).
pub async fn list(
    tx: &mut UserTx,
    query: ListQuery<'_>,
    cursors: &CursorKey,
) -> Result<(Vec<Task>, Option<String>), StoreError> {
    let (tx, user) = tx.split();
    let page = Page::new(query, cursors, user)?;
    let mut rows: Vec<TaskRow> =
        on_backend!(tx, |conn| page_select!(&page, user).load(conn).await?);
    let more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let next = more
        .then(|| {
            rows.last()
                .map(|row| After::of(page.query.sort, row).encode(cursors, user))
        })
        .flatten();
    Ok((with_labels(tx, user, rows).await?, next))
}

/// The plan the backend picks for a list_tasks page, a line each (PostgreSQL's `EXPLAIN`,
/// SQLite's `EXPLAIN QUERY PLAN`): which index serves which filter and sort, for the tests
/// and the bench to show.
pub async fn plan(
    tx: &mut UserTx,
    query: ListQuery<'_>,
    cursors: &CursorKey,
) -> Result<Vec<String>, StoreError> {
    let (tx, user) = tx.split();
    let page = Page::new(query, cursors, user)?;
    Ok(match &mut tx.conn {
        Conn::Postgres(pooled) => {
            let mut session = crate::db::pg::Session::new(pooled, &mut tx.state);
            PgExplain(page_select!(&page, user))
                .load::<String>(&mut session)
                .await?
        }
        Conn::Sqlite(pooled) => SqliteExplain(page_select!(&page, user))
            .load::<(i32, i32, i32, String)>(&mut **pooled)
            .await?
            .into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect(),
    })
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Marks a task completed; a completed task is returned unchanged. Its subtasks stay as
/// they are; a repeating task's next occurrence is created.
pub async fn complete(
    tx: &mut UserTx,
    id: uuid::Uuid,
    quotas: &Quotas,
) -> Result<Completion, StoreError> {
    let (tx, user) = tx.split();
    let at = now();
    let updated: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        diesel::update(
            t::tasks
                .filter(t::id.eq(DbUuid(id)))
                .filter(t::user_id.eq(user.as_str()))
                .filter(t::completed.eq(false)),
        )
        .set((
            t::completed.eq(true),
            t::completed_at.eq(Some(DbTime(at))),
            t::updated_at.eq(DbTime(at)),
        ))
        .returning(TaskRow::as_returning())
        .cached()
        .get_result(conn)
        .await
        .optional()?
    });
    match updated {
        Some(row) => {
            let id = row.columns.id;
            let task = with_labels(tx, user, vec![row]).await?.remove(0);
            mark_labels(tx, user, id, &task).await?;
            let next_task = roll_over(tx, user, &task, quotas).await?;
            Ok(Completion { task, next_task })
        }
        None => Ok(Completion {
            task: find(tx, user, id).await?,
            next_task: None,
        }),
    }
}

/// update_task's arguments: the tool's input schema. A field left out keeps the task's
/// value; for `due`, `parent_task_id` and `repeat`, null clears it (`Some(None)`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskChanges {
    /// The task's id (UUID).
    pub task_id: String,
    /// New title, 1 to 500 characters.
    #[serde(default)]
    pub title: Option<String>,
    /// New description, up to 10,000 characters; an empty string clears it.
    #[serde(default)]
    pub description: Option<String>,
    /// Mark completed (true) or pending again (false).
    #[serde(default)]
    pub completed: Option<bool>,
    /// New due date or date-time (as add_task takes it); null clears it.
    #[serde(default, deserialize_with = "super::null_clears")]
    #[schemars(extend("x-null-clears" = true))]
    pub due: Option<Option<String>>,
    /// New priority: `low`, `normal`, `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The task's labels, all of them (replacing the ones it had); [] clears them.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Make it a subtask of this task (UUID); null makes it a task of its own.
    #[serde(default, deserialize_with = "super::null_clears")]
    #[schemars(extend("x-null-clears" = true))]
    pub parent_task_id: Option<Option<String>>,
    /// New repeating rule (as add_task takes it); null stops it repeating.
    #[serde(default, deserialize_with = "super::null_clears")]
    #[schemars(extend("x-null-clears" = true))]
    pub repeat: Option<Option<String>>,
    /// New estimate in minutes (1 to 100,000); null clears it.
    #[serde(default, deserialize_with = "super::null_clears")]
    #[schemars(extend("x-null-clears" = true))]
    pub estimate_minutes: Option<Option<i32>>,
    /// The task's `updated_at` as you last read it: the update then happens only if nobody
    /// changed the task since, and fails with a conflict otherwise.
    #[serde(default)]
    pub expected_updated_at: Option<String>,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    // (Read from the call's arguments by its record, `store::calls`.)
    #[serde(default)]
    pub conversation_id: Option<String>,
}

impl TaskChanges {
    /// The fields that say what to change (every one but the task, the precondition and
    /// where the call is recorded), from the schema, so that a new one is named too.
    fn change_fields() -> Vec<String> {
        let schema = schemars::schema_for!(TaskChanges);
        schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|properties| {
                properties
                    .keys()
                    .filter(|name| {
                        !["task_id", "expected_updated_at", "conversation_id"]
                            .contains(&name.as_str())
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether it changes nothing. (Destructured, so that a new field cannot be missed.)
    fn is_empty(&self) -> bool {
        let TaskChanges {
            task_id: _,
            title,
            description,
            completed,
            due,
            priority,
            labels,
            parent_task_id,
            repeat,
            estimate_minutes,
            expected_updated_at: _,
            conversation_id: _,
        } = self;
        title.is_none()
            && description.is_none()
            && completed.is_none()
            && due.is_none()
            && priority.is_none()
            && labels.is_none()
            && parent_task_id.is_none()
            && repeat.is_none()
            && estimate_minutes.is_none()
    }
}

pub async fn update(
    tx: &mut UserTx,
    id: uuid::Uuid,
    changes: &TaskChanges,
    quotas: &Quotas,
) -> Result<Completion, StoreError> {
    let (tx, user) = tx.split();
    if changes.is_empty() {
        return Err(StoreError::NothingRequested(format!(
            "nothing to change: besides task_id, give at least one of {}",
            TaskChanges::change_fields().join(", ")
        )));
    }
    let title = changes
        .title
        .as_deref()
        .map(|t| check_text("title", t, limits::TITLE, true))
        .transpose()?;
    let description = changes
        .description
        .as_deref()
        .map(|d| check_text("description", d, limits::DESCRIPTION, false))
        .transpose()?
        .map(|d| Some(d).filter(|d| !d.is_empty()));
    let new_due = changes
        .due
        .as_ref()
        .map(|due| due.as_deref().map(|raw| Due::parse("due", raw)).transpose())
        .transpose()?;
    let due = new_due.map(|due| {
        (
            due.map(|due| due.text()),
            DbTime(due.map_or_else(no_due, |due| due.instant())),
        )
    });
    let labels = changes.labels.as_deref().map(check_labels).transpose()?;
    let estimate_minutes = changes
        .estimate_minutes
        .map(|estimate| estimate.map(check_estimate).transpose())
        .transpose()?;
    let new_repeat = changes
        .repeat
        .as_ref()
        .map(|repeat| repeat.as_deref().map(Repeat::parse).transpose())
        .transpose()?;
    let repeat = new_repeat
        .as_ref()
        .map(|repeat| repeat.as_ref().map(Repeat::text));
    let expected = changes
        .expected_updated_at
        .as_deref()
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    StoreError::invalid(
                        "expected_updated_at",
                        format!(
                            "{} is not an RFC 3339 time (use the task's updated_at)",
                            super::quote(raw)
                        ),
                    )
                })
        })
        .transpose()?;
    let parent_task_id = changes
        .parent_task_id
        .as_ref()
        .map(|parent| {
            parent
                .as_deref()
                .map(|raw| super::parse_uuid("parent_task_id", raw))
                .transpose()
        })
        .transpose()?;
    if let Some(Some(parent)) = parent_task_id {
        check_parent(tx, user, parent, Some(id)).await?;
    }
    if new_due.is_some() || new_repeat.is_some() {
        // What the task will be: it must still repeat from a due date.
        let current = find(tx, user, id).await?;
        let due = match new_due {
            Some(due) => due,
            None => current
                .columns
                .due
                .as_deref()
                .map(|d| Due::parse("due", d))
                .transpose()?,
        };
        let rule = match new_repeat {
            Some(rule) => rule,
            None => current
                .columns
                .repeat
                .as_deref()
                .map(Repeat::parse)
                .transpose()?,
        };
        check_repeat(rule.as_ref(), due.as_ref())?;
    }
    let at = now();
    let updated: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        // `updated_at` equals the expected time, when one is given.
        let unchanged_since_read =
            coalesce(expected.map(DbTime), t::updated_at.nullable()).eq(t::updated_at.nullable());
        let target = t::tasks
            .filter(t::id.eq(DbUuid(id)))
            .filter(t::user_id.eq(user.as_str()))
            .filter(unchanged_since_read);
        let fields = (
            title.as_ref().map(|v| t::title.eq(v)),
            description.as_ref().map(|v| t::description.eq(v)),
            due.as_ref().map(|(text, _)| t::due.eq(text)),
            due.as_ref().map(|(_, at)| t::due_at.eq(at)),
            changes.priority.map(|p| t::priority.eq(p.level())),
            parent_task_id.map(|parent| t::parent_task_id.eq(parent.map(DbUuid))),
            repeat.as_ref().map(|v| t::repeat.eq(v)),
            estimate_minutes.map(|v| t::estimate_minutes.eq(v)),
            t::updated_at.eq(DbTime(at)),
        );
        let statement = diesel::update(target);
        match changes.completed {
            None => statement
                .set(fields)
                .returning(TaskRow::as_returning())
                .cached()
                .get_result(conn)
                .await
                .optional()?,
            // Keeps the first completion time of a task that is already completed.
            Some(true) => statement
                .set((
                    fields,
                    t::completed.eq(true),
                    t::completed_at.eq(coalesce(t::completed_at, Some(DbTime(at)))),
                ))
                .returning(TaskRow::as_returning())
                .cached()
                .get_result(conn)
                .await
                .optional()?,
            Some(false) => statement
                .set((
                    fields,
                    t::completed.eq(false),
                    t::completed_at.eq(None::<DbTime>),
                ))
                .returning(TaskRow::as_returning())
                .cached()
                .get_result(conn)
                .await
                .optional()?,
        }
    });
    match (updated, expected) {
        (Some(row), _) => {
            let just_completed = row.columns.completed_at == Some(DbTime(at));
            let id = row.columns.id;
            let completed = row.columns.completed;
            if let Some(labels) = &labels {
                on_backend!(tx, |conn| {
                    use schema::task_labels::dsl as l;
                    diesel::delete(
                        l::task_labels
                            .filter(l::user_id.eq(user.as_str()))
                            .filter(l::task_id.eq(id)),
                    )
                    .execute(conn)
                    .await?
                });
                insert_labels(tx, user, id, completed, labels).await?;
            }
            let task = with_labels(tx, user, vec![row]).await?.remove(0);
            if labels.is_none() && changes.completed.is_some() {
                mark_labels(tx, user, id, &task).await?;
            }
            let next_task = if just_completed {
                roll_over(tx, user, &task, quotas).await?
            } else {
                None
            };
            Ok(Completion { task, next_task })
        }
        (None, None) => Err(StoreError::not_found("task", id)),
        (None, Some(expected)) => {
            let current = find(tx, user, id).await?;
            Err(StoreError::Conflict(format!(
                "task {id} was updated at {}, not at expected_updated_at {}: read it again \
                 and retry",
                current.columns.updated_at.text(),
                format_time(expected)
            )))
        }
    }
}

/// Deletes a task for good, and its subtasks with it; returns how many subtasks went.
pub async fn delete(tx: &mut UserTx, id: uuid::Uuid) -> Result<i64, StoreError> {
    let (tx, user) = tx.split();
    // The subtasks first, counted: the foreign key's cascade would remove them unseen.
    let subtasks: usize = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        diesel::delete(
            t::tasks
                .filter(t::user_id.eq(user.as_str()))
                .filter(t::parent_task_id.eq(DbUuid(id))),
        )
        .execute(conn)
        .await?
    });
    let deleted: usize = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        diesel::delete(
            t::tasks
                .filter(t::id.eq(DbUuid(id)))
                .filter(t::user_id.eq(user.as_str())),
        )
        .execute(conn)
        .await?
    });
    if deleted == 0 {
        return Err(StoreError::not_found("task", id));
    }
    let subtasks = i32::try_from(subtasks).unwrap_or(i32::MAX);
    change_task_count(tx, user, -1 - subtasks).await?;
    Ok(i64::from(subtasks))
}

/// The statement adding `$by` to `$user`'s task count (locking their row, so concurrent
/// adds count one at a time) and returning the new count, for either backend.
macro_rules! task_count_update {
    ($user:expr, $by:expr) => {{
        use $crate::db::schema::users::dsl as u;
        diesel::update(u::users.filter(u::id.eq($user.as_str())))
            .set(u::task_count.eq(u::task_count + $by))
            .returning(u::task_count)
            .cached()
    }};
}

/// Inserts a task row and counts it against its user's task count, keeping its request
/// (for idempotent replays) when it has a key: the user's new count, or `None` when the
/// key was used before (nothing was written). On PostgreSQL the insert and the count go
/// out together, in one round trip. Under a key, the count (and the request) act only if
/// the task row is there; without one the insert can only miss on an id taken already,
/// which fails the call, so the count needs no such check.
async fn insert_counted(
    tx: &mut Tx,
    user: &UserId,
    row: &TaskRow,
    request: Option<&TaskRequestRow>,
) -> Result<Option<i32>, StoreError> {
    use crate::db::schema::tasks::dsl as t;
    let (inserted, count) = match &mut tx.conn {
        Conn::Postgres(pooled) => {
            let insert = diesel::insert_into(t::tasks)
                .values(row)
                .on_conflict((t::user_id, t::idempotency_key))
                .do_nothing();
            #[derive(QueryableByName)]
            struct Counted {
                #[diesel(sql_type = diesel::sql_types::Integer)]
                task_count: i32,
            }
            let mut session = crate::db::pg::Session::new(pooled, &mut tx.state);
            session
                .pipelined(|conn| {
                    let (mut first, mut second) = (conn, conn);
                    async move {
                        let inserted = insert.execute(&mut first);
                        let counted = async {
                            match request {
                                // The request is kept, and the task counted, only if the
                                // insert (just before, in this transaction) wrote the row.
                                Some(request) => diesel::sql_query(
                                    "WITH request AS (\
                                       INSERT INTO task_requests (task_id, user_id, request_hash) \
                                       SELECT $1, $2, $3 WHERE EXISTS \
                                         (SELECT 1 FROM tasks WHERE user_id = $2 AND id = $1) \
                                       RETURNING 1) \
                                     UPDATE users SET task_count = task_count + 1 \
                                     WHERE id = $2 AND EXISTS (SELECT 1 FROM request) \
                                     RETURNING task_count",
                                )
                                .bind::<crate::db::sql_types_by_backend::Id, _>(request.task_id)
                                .bind::<Text, _>(&request.user_id)
                                .bind::<diesel::sql_types::Binary, _>(&request.request_hash)
                                .cached()
                                .get_result::<Counted>(&mut second)
                                .await
                                .map(|counted| counted.task_count)
                                .optional(),
                                None => task_count_update!(user, 1)
                                    .get_result::<i32>(&mut second)
                                    .await
                                    .optional(),
                            }
                        };
                        let (inserted, counted) = futures_util::join!(inserted, counted);
                        Ok((inserted?, counted?))
                    }
                    .boxed()
                })
                .await?
        }
        Conn::Sqlite(pooled) => {
            let conn = &mut **pooled;
            // SQLite's unique index on the key is partial (tasks without a key have no
            // entry in it), which a conflict target would have to repeat: no target here,
            // so a taken id misses as a reused key does (and `add` says which).
            let insert = diesel::insert_into(t::tasks)
                .values(row)
                .on_conflict_do_nothing();
            if insert.execute(conn).await? == 0 {
                return Ok(None);
            }
            if let Some(request) = request {
                diesel::insert_into(crate::db::schema::task_requests::table)
                    .values(request)
                    .execute(conn)
                    .await?;
            }
            (
                1,
                task_count_update!(user, 1)
                    .get_result(conn)
                    .await
                    .optional()?,
            )
        }
    };
    match (inserted, count) {
        (0, _) => Ok(None),
        (_, Some(count)) => Ok(Some(count)),
        (_, None) => Err(StoreError::not_found("user", user)),
    }
}

/// Adjusts the user's task count (locking their row, so concurrent adds count one at a
/// time) and returns the new count.
async fn change_task_count(tx: &mut Tx, user: &UserId, by: i32) -> Result<i32, StoreError> {
    let count: Option<i32> = on_backend!(tx, |conn| {
        task_count_update!(user, by)
            .get_result(conn)
            .await
            .optional()?
    });
    count.ok_or_else(|| StoreError::not_found("user", user))
}

pub async fn get(tx: &mut UserTx, id: uuid::Uuid) -> Result<Task, StoreError> {
    let (tx, user) = tx.split();
    find(tx, user, id).await
}

/// The task, if it is the user's.
async fn find(tx: &mut Tx, user: &UserId, id: uuid::Uuid) -> Result<Task, StoreError> {
    let row: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        t::tasks
            .filter(t::id.eq(DbUuid(id)))
            .filter(t::user_id.eq(user.as_str()))
            .select(TaskRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    match row {
        Some(row) => Ok(with_labels(tx, user, vec![row]).await?.remove(0)),
        None => Err(StoreError::not_found("task", id)),
    }
}

/// A label on the user's tasks, and how many carry it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct LabelCount {
    /// As the tasks spell it (the first spelling, alphabetically, when they differ in case).
    pub label: String,
    /// Tasks with this label.
    pub tasks: i64,
    /// Of those, the ones not completed.
    pub pending: i64,
}

/// Every label on the user's tasks, alphabetically (case-insensitive), with counts: from
/// the label index alone (user_id, label_key, label, task_id, completed), no task read.
pub async fn labels(tx: &mut UserTx) -> Result<Vec<LabelCount>, StoreError> {
    let (tx, user) = tx.split();
    let rows: Vec<(String, Option<String>, i64, i64)> = on_backend!(tx, |conn| {
        use diesel::dsl::{count_star, min, sql};
        use schema::task_labels::dsl as l;
        l::task_labels
            .filter(l::user_id.eq(user.as_str()))
            .group_by(l::label_key)
            .select((
                l::label_key,
                min(l::label),
                count_star(),
                sql::<BigInt>("count(*) FILTER (WHERE NOT completed)"),
            ))
            .order(l::label_key)
            .load(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(key, label, tasks, pending)| LabelCount {
            label: label.unwrap_or(key),
            tasks,
            pending,
        })
        .collect())
}
