//! Tasks: a user's to-do items.

use super::UserTx;
use super::cursor::CursorKey;
use super::{Quotas, StoreError, UserId, check_text, format_time, limits, now, page_size};
use crate::db::sql::{CachedDsl, coalesce, lower};
use crate::db::{DbTime, DbUuid, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
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
}

/// A task as tools return it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Task {
    /// The task's id (a UUID).
    pub id: String,
    pub title: String,
    /// Free-form details; null when none were given.
    pub description: Option<String>,
    pub completed: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// RFC 3339, UTC; null while the task is pending.
    pub completed_at: Option<String>,
}

impl From<TaskRow> for Task {
    fn from(row: TaskRow) -> Self {
        Task {
            id: row.id.0.to_string(),
            title: row.title,
            description: row.description,
            completed: row.completed,
            created_at: format_time(row.created_at),
            updated_at: format_time(row.updated_at),
            completed_at: row.completed_at.map(format_time),
        }
    }
}

const CURSOR_KIND: &str = "t";

/// Which tasks `list` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    All,
    Pending,
    Completed,
}

#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
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
    let id = DbUuid(uuid::Uuid::now_v7());
    let created_at = now();
    let inserted: Option<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        diesel::insert_into(t::tasks)
            .values((
                t::id.eq(id),
                t::user_id.eq(user.as_str()),
                t::title.eq(&title),
                t::description.eq(&description),
                t::completed.eq(false),
                t::idempotency_key.eq(&idempotency_key),
                t::created_at.eq(DbTime(created_at)),
                t::updated_at.eq(DbTime(created_at)),
            ))
            .on_conflict((t::user_id, t::idempotency_key))
            .do_nothing()
            .returning(TaskRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
    });
    if let Some(row) = inserted {
        let count = change_task_count(tx, user, 1).await?;
        if count > quotas.tasks_per_user {
            return Err(StoreError::QuotaExceeded(format!(
                "you already have {} tasks, the most this server keeps per user: delete \
                 some first",
                quotas.tasks_per_user
            )));
        }
        return Ok(row.into());
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
    existing
        .map(Task::from)
        .ok_or_else(|| StoreError::Conflict("the task for this idempotency_key was deleted".into()))
}

#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub status: StatusFilter,
    pub query: Option<&'a str>,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
}

/// A page of tasks, newest first, and the cursor of the next page (none at the end).
pub async fn list(
    tx: &mut UserTx,
    query: ListQuery<'_>,
    cursors: &CursorKey,
) -> Result<(Vec<Task>, Option<String>), StoreError> {
    let (tx, user) = tx.split();
    let limit = page_size("limit", query.limit)?;
    let after = query
        .cursor
        .map(|c| cursors.decode(CURSOR_KIND, user, "cursor", c))
        .transpose()?
        .map(DbUuid);
    let pattern = query
        .query
        .map(|q| check_text("query", q, limits::TITLE, false))
        .transpose()?
        .filter(|q| !q.is_empty())
        .map(|q| format!("%{}%", escape_like(&q.to_lowercase())));
    let mut rows: Vec<TaskRow> = on_backend!(tx, |conn| {
        use schema::tasks::dsl as t;
        let mut select = t::tasks.filter(t::user_id.eq(user.as_str())).into_boxed();
        match query.status {
            StatusFilter::All => {}
            StatusFilter::Pending => select = select.filter(t::completed.eq(false)),
            StatusFilter::Completed => select = select.filter(t::completed.eq(true)),
        }
        if let Some(after) = after {
            select = select.filter(t::id.lt(after));
        }
        if let Some(pattern) = &pattern {
            select = select.filter(
                lower(t::title.nullable())
                    .like(pattern)
                    .escape('\\')
                    .or(lower(t::description).like(pattern).escape('\\')),
            );
        }
        select
            .select(TaskRow::as_select())
            .order(t::id.desc())
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
    Ok((rows.into_iter().map(Task::from).collect(), next))
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Marks a task completed; a completed task is returned unchanged.
pub async fn complete(tx: &mut UserTx, id: uuid::Uuid) -> Result<Task, StoreError> {
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
        Some(row) => Ok(row.into()),
        None => find(tx, user, id).await,
    }
}

/// The changes `update` makes; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskChanges<'a> {
    pub title: Option<&'a str>,
    /// An empty description clears it.
    pub description: Option<&'a str>,
    pub completed: Option<bool>,
    /// Optimistic concurrency: change the task only if it was last updated at this time
    /// (its `updated_at` as last read), else fail with a conflict.
    pub expected_updated_at: Option<&'a str>,
}

pub async fn update(
    tx: &mut UserTx,
    id: uuid::Uuid,
    changes: TaskChanges<'_>,
) -> Result<Task, StoreError> {
    let (tx, user) = tx.split();
    if changes.title.is_none() && changes.description.is_none() && changes.completed.is_none() {
        return Err(StoreError::invalid(
            "title",
            "nothing to change: give at least one of title, description, completed",
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
        (Some(row), _) => Ok(row.into()),
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

/// Deletes a task for good.
pub async fn delete(tx: &mut UserTx, id: uuid::Uuid) -> Result<(), StoreError> {
    let (tx, user) = tx.split();
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
    change_task_count(tx, user, -1).await?;
    Ok(())
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
    row.map(Task::from)
        .ok_or_else(|| StoreError::not_found("task", id))
}
