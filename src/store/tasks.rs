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
use schemars::JsonSchema;
use serde::Serialize;

/// What tools read of a row of `tasks`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::tasks)]
struct TaskRow {
    id: DbUuid,
    title: String,
    description: Option<String>,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    due: Option<String>,
    due_at: DateTime<Utc>,
    priority: i16,
    parent_task_id: Option<DbUuid>,
    repeat: Option<String>,
}

/// A task as tools return it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Task {
    /// The task's id (a UUID).
    pub id: String,
    pub title: String,
    /// Free-form details; null when none were given.
    pub description: Option<String>,
    /// When it is due, as given: a date (`2026-12-01`, all day) or a date-time with its
    /// offset (`2026-12-01T09:00:00+01:00`); null when it has no due date.
    pub due: Option<String>,
    pub priority: Priority,
    /// In the order given.
    pub labels: Vec<String>,
    /// The parent task's id (a UUID) when this is a subtask; null otherwise.
    pub parent_task_id: Option<String>,
    /// How it repeats (RFC 5545 RRULE text, e.g. `FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=1`);
    /// null when it does not.
    pub repeat: Option<String>,
    pub completed: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// RFC 3339, UTC; null while the task is pending.
    pub completed_at: Option<String>,
}

impl Task {
    fn new(row: TaskRow, labels: Vec<String>) -> Self {
        Task {
            id: row.id.0.to_string(),
            title: row.title,
            description: row.description,
            due: row.due,
            priority: Priority::from_level(row.priority),
            labels,
            parent_task_id: row.parent_task_id.map(|id| id.0.to_string()),
            repeat: row.repeat,
            completed: row.completed,
            created_at: format_time(row.created_at),
            updated_at: format_time(row.updated_at),
            completed_at: row.completed_at.map(format_time),
        }
    }
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

#[derive(Debug, Clone, Copy, Default)]
pub struct NewTask<'a> {
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub due: Option<&'a str>,
    pub priority: Option<Priority>,
    pub labels: Option<&'a [String]>,
    pub parent_task_id: Option<uuid::Uuid>,
    pub repeat: Option<&'a str>,
}

/// A task's fields, checked, ready to write.
struct Fields {
    title: String,
    description: Option<String>,
    due: Option<Due>,
    priority: Priority,
    labels: Vec<Label>,
    parent: Option<uuid::Uuid>,
    repeat: Option<Repeat>,
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

/// Adds a task. With an idempotency key already used by this user, creates nothing and
/// returns the task that key created first.
pub async fn add(tx: &mut UserTx, new: NewTask<'_>, quotas: &Quotas) -> Result<Task, StoreError> {
    let (tx, user) = tx.split();
    let title = check_text("title", new.title, limits::TITLE, true)?;
    let description = new
        .description
        .map(|d| check_text("description", d, limits::DESCRIPTION, false))
        .transpose()?
        .filter(|d| !d.is_empty());
    let idempotency_key = new
        .idempotency_key
        .map(|k| check_text("idempotency_key", k, limits::IDEMPOTENCY_KEY, true))
        .transpose()?;
    let due = new.due.map(|raw| Due::parse("due", raw)).transpose()?;
    let repeat = new.repeat.map(Repeat::parse).transpose()?;
    check_repeat(repeat.as_ref(), due.as_ref())?;
    let fields = Fields {
        title,
        description,
        due,
        priority: new.priority.unwrap_or_default(),
        labels: check_labels(new.labels.unwrap_or_default())?,
        parent: new.parent_task_id,
        repeat,
    };
    if let Some(parent) = fields.parent {
        check_parent(tx, user, parent, None).await?;
    }
    if let Some(task) = insert(tx, user, &fields, idempotency_key.as_deref(), quotas).await? {
        return Ok(task);
    }
    // The key was used before: return what it created.
    let key = idempotency_key.unwrap_or_default();
    let existing: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        t::tasks
            .filter(t::user_id.eq(user.as_str()))
            .filter(t::idempotency_key.eq(&key))
            .select(TaskRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    match existing {
        Some(row) => Ok(with_labels(tx, vec![row]).await?.remove(0)),
        None => Err(StoreError::Conflict(
            "the task for this idempotency_key was deleted".into(),
        )),
    }
}

/// Writes a new task (counted against the quota); `None` when its idempotency key was
/// used before.
async fn insert(
    tx: &mut Tx,
    user: &UserId,
    fields: &Fields,
    idempotency_key: Option<&str>,
    quotas: &Quotas,
) -> Result<Option<Task>, StoreError> {
    let id = DbUuid(uuid::Uuid::now_v7());
    let created_at = now();
    let inserted: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        diesel::insert_into(t::tasks)
            .values((
                t::id.eq(id),
                t::user_id.eq(user.as_str()),
                t::title.eq(&fields.title),
                t::description.eq(&fields.description),
                t::completed.eq(false),
                t::idempotency_key.eq(idempotency_key),
                t::created_at.eq(DbTime(created_at)),
                t::updated_at.eq(DbTime(created_at)),
                t::due.eq(fields.due.map(|due| due.text())),
                t::due_at.eq(DbTime(fields.due.map_or_else(no_due, |due| due.instant()))),
                t::priority.eq(fields.priority.level()),
                t::parent_task_id.eq(fields.parent.map(DbUuid)),
                t::repeat.eq(fields.repeat.as_ref().map(Repeat::text)),
            ))
            .on_conflict((t::user_id, t::idempotency_key))
            .do_nothing()
            .returning(TaskRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
    });
    let Some(row) = inserted else {
        return Ok(None);
    };
    let count = change_task_count(tx, user, 1).await?;
    if count > quotas.tasks_per_user {
        return Err(StoreError::QuotaExceeded(format!(
            "you already have {} tasks, the most this server keeps per user: delete some \
             first",
            quotas.tasks_per_user
        )));
    }
    insert_labels(tx, user, row.id, &fields.labels).await?;
    let labels = fields
        .labels
        .iter()
        .map(|label| label.text.clone())
        .collect();
    Ok(Some(Task::new(row, labels)))
}

/// Completing a repeating task creates its next occurrence: the same fields, the next due
/// date. `None` for a task that does not repeat.
async fn roll_over(
    tx: &mut Tx,
    user: &UserId,
    done: &Task,
    quotas: &Quotas,
) -> Result<Option<Task>, StoreError> {
    let (Some(rule), Some(due)) = (&done.repeat, &done.due) else {
        return Ok(None);
    };
    let repeat = Repeat::parse(rule)?;
    let next = repeat.next(&Due::parse("due", due)?)?;
    let fields = Fields {
        title: done.title.clone(),
        description: done.description.clone(),
        due: Some(next),
        priority: done.priority,
        labels: done
            .labels
            .iter()
            .map(|label| Label::new("labels", label))
            .collect::<Result<_, _>>()?,
        parent: done
            .parent_task_id
            .as_deref()
            .map(|id| super::parse_uuid("parent_task_id", id))
            .transpose()?,
        repeat: Some(repeat),
    };
    insert(tx, user, &fields, None, quotas).await
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

#[derive(Insertable)]
#[diesel(table_name = crate::db::schema::task_labels)]
struct LabelRow<'a> {
    task_id: DbUuid,
    user_id: &'a str,
    label: &'a str,
    label_key: &'a str,
    position: i16,
}

async fn insert_labels(
    tx: &mut Tx,
    user: &UserId,
    task: DbUuid,
    labels: &[Label],
) -> Result<(), StoreError> {
    if labels.is_empty() {
        return Ok(());
    }
    let rows: Vec<LabelRow> = labels
        .iter()
        .zip(0i16..)
        .map(|(label, position)| LabelRow {
            task_id: task,
            user_id: user.as_str(),
            label: &label.text,
            label_key: &label.key,
            position,
        })
        .collect();
    // One statement a label: diesel-async's SQLite connection has no multi-row insert,
    // and a task has at most 20.
    for row in &rows {
        on_backend!(tx, |conn| {
            diesel::insert_into(schema::task_labels::table)
                .values(row)
                .execute(conn)
                .await?
        });
    }
    Ok(())
}

/// Tasks with their labels, in the rows' order.
async fn with_labels(tx: &mut Tx, rows: Vec<TaskRow>) -> Result<Vec<Task>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<DbUuid> = rows.iter().map(|row| row.id).collect();
    let labels: Vec<(DbUuid, String)> = on_backend!(tx, |conn| {
        use schema::task_labels::dsl as l;
        l::task_labels
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
                .filter(|(task, _)| *task == row.id)
                .map(|(_, label)| label.clone())
                .collect();
            Task::new(row, mine)
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
            TaskSort::Created => After::Created(row.id),
            TaskSort::Due => After::Due(row.due_at, row.id),
            TaskSort::Priority => After::Priority(row.priority, row.id),
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
    Ok((with_labels(tx, rows).await?, next))
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
            let task = with_labels(tx, vec![row]).await?.remove(0);
            let next_task = roll_over(tx, user, &task, quotas).await?;
            Ok(Completion { task, next_task })
        }
        None => Ok(Completion {
            task: find(tx, user, id).await?,
            next_task: None,
        }),
    }
}

/// The changes `update` makes; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskChanges<'a> {
    pub title: Option<&'a str>,
    /// An empty description clears it.
    pub description: Option<&'a str>,
    pub completed: Option<bool>,
    /// `Some(None)` clears the due date.
    pub due: Option<Option<&'a str>>,
    pub priority: Option<Priority>,
    /// All the task's labels; an empty list clears them.
    pub labels: Option<&'a [String]>,
    /// `Some(None)` makes a subtask a task of its own.
    pub parent_task_id: Option<Option<uuid::Uuid>>,
    /// `Some(None)` stops it repeating.
    pub repeat: Option<Option<&'a str>>,
    /// Optimistic concurrency: change the task only if it was last updated at this time
    /// (its `updated_at` as last read), else fail with a conflict.
    pub expected_updated_at: Option<&'a str>,
}

impl TaskChanges<'_> {
    fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.completed.is_none()
            && self.due.is_none()
            && self.priority.is_none()
            && self.labels.is_none()
            && self.parent_task_id.is_none()
            && self.repeat.is_none()
    }
}

pub async fn update(
    tx: &mut UserTx,
    id: uuid::Uuid,
    changes: TaskChanges<'_>,
    quotas: &Quotas,
) -> Result<Completion, StoreError> {
    let (tx, user) = tx.split();
    if changes.is_empty() {
        return Err(StoreError::NothingRequested(
            "nothing to change: besides task_id, give at least one of title, description, \
             completed, due, priority, labels, parent_task_id, repeat"
                .into(),
        ));
    }
    let title = changes
        .title
        .map(|t| check_text("title", t, limits::TITLE, true))
        .transpose()?;
    let description = changes
        .description
        .map(|d| check_text("description", d, limits::DESCRIPTION, false))
        .transpose()?
        .map(|d| Some(d).filter(|d| !d.is_empty()));
    let new_due = changes
        .due
        .map(|due| due.map(|raw| Due::parse("due", raw)).transpose())
        .transpose()?;
    let due = new_due.map(|due| {
        (
            due.map(|due| due.text()),
            DbTime(due.map_or_else(no_due, |due| due.instant())),
        )
    });
    let labels = changes.labels.map(check_labels).transpose()?;
    let new_repeat = changes
        .repeat
        .map(|repeat| repeat.map(Repeat::parse).transpose())
        .transpose()?;
    let repeat = new_repeat
        .as_ref()
        .map(|repeat| repeat.as_ref().map(Repeat::text));
    let expected = changes
        .expected_updated_at
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
    if let Some(Some(parent)) = changes.parent_task_id {
        check_parent(tx, user, parent, Some(id)).await?;
    }
    if new_due.is_some() || new_repeat.is_some() {
        // What the task will be: it must still repeat from a due date.
        let current = find(tx, user, id).await?;
        let due = match new_due {
            Some(due) => due,
            None => current
                .due
                .as_deref()
                .map(|d| Due::parse("due", d))
                .transpose()?,
        };
        let rule = match new_repeat {
            Some(rule) => rule,
            None => current.repeat.as_deref().map(Repeat::parse).transpose()?,
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
            changes
                .parent_task_id
                .map(|parent| t::parent_task_id.eq(parent.map(DbUuid))),
            repeat.as_ref().map(|v| t::repeat.eq(v)),
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
            let just_completed = row.completed_at == Some(at);
            if let Some(labels) = &labels {
                on_backend!(tx, |conn| {
                    use schema::task_labels::dsl as l;
                    diesel::delete(l::task_labels.filter(l::task_id.eq(row.id)))
                        .execute(conn)
                        .await?
                });
                insert_labels(tx, user, row.id, labels).await?;
            }
            let task = with_labels(tx, vec![row]).await?.remove(0);
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
                current.updated_at,
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

/// Adjusts the user's task count (locking their row, so concurrent adds count one at a
/// time) and returns the new count.
async fn change_task_count(tx: &mut Tx, user: &UserId, by: i32) -> Result<i32, StoreError> {
    let count: Option<i32> = on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        diesel::update(u::users.filter(u::id.eq(user.as_str())))
            .set(u::task_count.eq(u::task_count + by))
            .returning(u::task_count)
            .cached()
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
        Some(row) => Ok(with_labels(tx, vec![row]).await?.remove(0)),
        None => Err(StoreError::not_found("task", id)),
    }
}

/// A label on the user's tasks, and how many carry it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, QueryableByName)]
pub struct LabelCount {
    /// As the tasks spell it (the first spelling, alphabetically, when they differ in case).
    #[diesel(sql_type = Text)]
    pub label: String,
    /// Tasks with this label.
    #[diesel(sql_type = BigInt)]
    pub tasks: i64,
}

/// Every label on the user's tasks, alphabetically (case-insensitive), with counts: from
/// the label index alone (user_id, label_key, …), no task read.
pub async fn labels(tx: &mut UserTx) -> Result<Vec<LabelCount>, StoreError> {
    let (tx, user) = tx.split();
    let rows: Vec<(String, String, i64)> = on_backend!(tx, |conn| {
        use diesel::dsl::{count_star, min};
        use schema::task_labels::dsl as l;
        l::task_labels
            .filter(l::user_id.eq(user.as_str()))
            .group_by(l::label_key)
            .select((l::label_key, min(l::label), count_star()))
            .order(l::label_key)
            .load::<(String, Option<String>, i64)>(conn)
            .await?
            .into_iter()
            .map(|(key, label, tasks)| (key.clone(), label.unwrap_or(key), tasks))
            .collect()
    });
    Ok(rows
        .into_iter()
        .map(|(_, label, tasks)| LabelCount { label, tasks })
        .collect())
}
