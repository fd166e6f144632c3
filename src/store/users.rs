//! Users: created on first sight (a token issued for them, or a JWT naming them).

use super::conversations::ensure_activity_logs;
use super::{StoreError, UserId, UserTx, end, format_time, now, quote};
use crate::db::{Database, DbTime, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

/// Creates the user and their activity logs if missing, in a transaction of their own.
pub async fn ensure(db: &Database, user: &UserId) -> Result<(), StoreError> {
    let mut tx = UserTx::begin(db, user).await?;
    let ensured = ensure_in(&mut tx).await;
    end(tx, ensured).await
}

/// [`ensure`], within the user's transaction.
pub(super) async fn ensure_in(tx: &mut UserTx) -> Result<(), StoreError> {
    let (tx, user) = tx.split();
    let at = now();
    on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        diesel::insert_into(u::users)
            .values((u::id.eq(user.as_str()), u::created_at.eq(DbTime(at))))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?
    });
    ensure_activity_logs(tx, user).await
}

/// Whether the user exists (one indexed read: no need for a transaction).
pub async fn exists(db: &Database, user: &UserId) -> Result<bool, StoreError> {
    let mut tx = db.autocommit().await?;
    let found = exists_in(&mut tx, user).await;
    end(tx, found).await
}

async fn exists_in(tx: &mut Tx, user: &UserId) -> Result<bool, StoreError> {
    let found: Option<String> = on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        u::users
            .filter(u::id.eq(user.as_str()))
            .select(u::id)
            .first(conn)
            .await
            .optional()?
    });
    Ok(found.is_some())
}

/// Up to `limit` user ids after `after`, in order (`after` empty: from the first).
pub async fn page_ids(db: &Database, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
    let mut tx = db.autocommit().await?;
    let ids = page_ids_in(&mut tx, after, limit).await;
    end(tx, ids).await
}

async fn page_ids_in(tx: &mut Tx, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
    Ok(on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        u::users
            .filter(u::id.gt(after))
            .select(u::id)
            .order(u::id)
            .limit(limit)
            .load(conn)
            .await?
    }))
}

/// A user as `todo-mcp user list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserSummary {
    pub id: String,
    pub created_at: String,
    pub tasks: i32,
    /// Tokens neither revoked nor expired.
    pub active_tokens: i64,
}

/// Up to `limit` users after `after` (empty: from the first), in id order.
pub async fn list(db: &Database, after: &str, limit: i64) -> Result<Vec<UserSummary>, StoreError> {
    let mut tx = db.autocommit().await?;
    let listed = list_in(&mut tx, after, limit).await;
    end(tx, listed).await
}

async fn list_in(tx: &mut Tx, after: &str, limit: i64) -> Result<Vec<UserSummary>, StoreError> {
    let at = now();
    let rows: Vec<(String, DateTime<Utc>, i32)> = on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        u::users
            .filter(u::id.gt(after))
            .select((u::id, u::created_at, u::task_count))
            .order(u::id)
            .limit(limit)
            .load(conn)
            .await?
    });
    // Every listed user's active tokens in one grouped query, not one query per user.
    let ids: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
    let token_counts: Vec<(String, i64)> = on_backend!(tx, |conn| {
        use schema::api_tokens::dsl as k;
        k::api_tokens
            .filter(k::user_id.eq_any(&ids))
            .filter(k::revoked_at.is_null())
            .filter(k::expires_at.is_null().or(k::expires_at.gt(DbTime(at))))
            .group_by(k::user_id)
            .select((k::user_id, diesel::dsl::count_star()))
            .load(conn)
            .await?
    });
    let token_counts: std::collections::HashMap<String, i64> = token_counts.into_iter().collect();
    let users = rows
        .into_iter()
        .map(|(id, created_at, tasks)| UserSummary {
            created_at: format_time(created_at),
            active_tokens: token_counts.get(&id).copied().unwrap_or(0),
            id,
            tasks,
        })
        .collect();
    Ok(users)
}

/// What erasing a user removed: their row count in every table that holds their rows.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RemovedRows {
    pub user: String,
    pub tasks: i64,
    pub task_requests: i64,
    pub task_labels: i64,
    pub conversations: i64,
    pub messages: i64,
    pub agent_states: i64,
    pub turns: i64,
    pub api_tokens: i64,
    pub mcp_sessions: i64,
    /// The count of their failed calls' records this hour (one row, or none).
    pub failure_budgets: i64,
}

/// Erases `user`: every row of theirs, tokens and sessions included, in one transaction
/// (the user row's deletion cascades to the rest). With `dry_run`, only counts.
/// Returns what was (or would be) removed; not found if there is no such user.
pub async fn delete(
    db: &Database,
    user: &UserId,
    dry_run: bool,
) -> Result<RemovedRows, StoreError> {
    let mut tx = UserTx::begin(db, user).await?;
    let counted = delete_in(&mut tx, dry_run).await;
    // A dry run only counted: its commit writes nothing.
    end(tx, counted).await
}

async fn delete_in(tx: &mut UserTx, dry_run: bool) -> Result<RemovedRows, StoreError> {
    let (tx, user) = tx.split();
    let id = user.as_str();
    macro_rules! count {
        ($table:ident) => {
            on_backend!(tx, |conn| {
                use schema::$table::dsl as t;
                t::$table
                    .filter(t::user_id.eq(id))
                    .count()
                    .get_result::<i64>(conn)
                    .await?
            })
        };
    }
    let removed = RemovedRows {
        user: id.to_owned(),
        tasks: count!(tasks),
        task_requests: count!(task_requests),
        task_labels: count!(task_labels),
        conversations: count!(conversations),
        messages: count!(messages),
        agent_states: count!(agent_states),
        turns: count!(turns),
        api_tokens: count!(api_tokens),
        mcp_sessions: count!(mcp_sessions),
        failure_budgets: count!(failure_budgets),
    };
    if !dry_run {
        // Tokens and sessions have no foreign key to users (they are read before the
        // caller is known, so they may live apart from the user's shard: docs/scaling.md).
        on_backend!(tx, |conn| {
            use schema::api_tokens::dsl as k;
            diesel::delete(k::api_tokens.filter(k::user_id.eq(id)))
                .execute(conn)
                .await?
        });
        on_backend!(tx, |conn| {
            use schema::mcp_sessions::dsl as s;
            diesel::delete(s::mcp_sessions.filter(s::user_id.eq(id)))
                .execute(conn)
                .await?
        });
    }
    let deleted = on_backend!(tx, |conn| {
        use schema::users::dsl as u;
        let target = u::users.filter(u::id.eq(id));
        if dry_run {
            target.count().get_result::<i64>(conn).await? as usize
        } else {
            diesel::delete(target).execute(conn).await?
        }
    });
    if deleted == 0 {
        return Err(StoreError::NotFound {
            entity: "user",
            id: quote(id),
        });
    }
    Ok(removed)
}
