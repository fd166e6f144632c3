//! Streamable HTTP sessions (`http --sessions`), kept in the database so that any
//! replica can serve any session, bound to the user who opened them, and ended after an
//! idle lifetime: on use (an expired session reads as absent, and is deleted) and by a
//! sweep whenever a new session is saved.

use super::{StoreError, UserId, end, now};
use crate::db::sql::CachedDsl;
use crate::db::{Database, DbJson, DbTime, Scope, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::Value;
use std::time::Duration;

/// The sessions of one server, with their idle lifetime. Each method is one transaction.
#[derive(Clone)]
pub struct Sessions {
    db: Database,
    idle: chrono::Duration,
}

impl Sessions {
    /// Sessions unused for `idle` are ended.
    pub fn new(db: Database, idle: Duration) -> Self {
        let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX);
        Sessions { db, idle }
    }

    /// A session's `updated_at` is refreshed on use at most this often, so that a busy
    /// session does not cost a write per request.
    fn refresh_after(&self) -> chrono::Duration {
        (self.idle / 4).min(chrono::Duration::seconds(60))
    }

    fn cutoff(&self) -> DateTime<Utc> {
        now()
            .checked_sub_signed(self.idle)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Saves (or replaces) a session's state, owned by `user`; ends the expired ones.
    pub async fn save(&self, id: &str, user: &UserId, state: &Value) -> Result<(), StoreError> {
        let mut tx = self.db.begin(Scope::System).await?;
        let saved = async {
            sweep(&mut tx, self.cutoff()).await?;
            save(&mut tx, id, user, state).await
        }
        .await;
        end(tx, saved).await
    }

    /// The session's state, unless it does not exist or has expired.
    pub async fn load(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let mut tx = self.db.begin(Scope::System).await?;
        let found = find(&mut tx, id).await;
        let found = end(tx, found).await?;
        Ok(found
            .filter(|session| session.updated_at >= self.cutoff())
            .map(|session| session.state))
    }

    /// Who opened the session, unless it does not exist or has expired (then it is
    /// deleted). Marks the session used.
    pub async fn owner(&self, id: &str) -> Result<Option<UserId>, StoreError> {
        let mut tx = self.db.begin(Scope::System).await?;
        let owner = async {
            let Some(session) = find(&mut tx, id).await? else {
                return Ok(None);
            };
            let at = now();
            if session.updated_at < self.cutoff() {
                delete(&mut tx, id).await?;
                return Ok(None);
            }
            if session.updated_at < at - self.refresh_after() {
                touch(&mut tx, id, at).await?;
            }
            UserId::parse(&session.user_id).map(Some)
        }
        .await;
        end(tx, owner).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin(Scope::System).await?;
        let deleted = delete(&mut tx, id).await;
        end(tx, deleted).await
    }
}

struct Session {
    user_id: String,
    state: Value,
    updated_at: DateTime<Utc>,
}

async fn find(tx: &mut Tx, id: &str) -> Result<Option<Session>, StoreError> {
    let row: Option<(String, Value, DateTime<Utc>)> = on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        s::mcp_sessions
            .filter(s::id.eq(id))
            .select((s::user_id, s::state, s::updated_at))
            .first(conn)
            .await
            .optional()?
    });
    Ok(row.map(|(user_id, state, updated_at)| Session {
        user_id,
        state,
        updated_at,
    }))
}

async fn save(tx: &mut Tx, id: &str, user: &UserId, state: &Value) -> Result<(), StoreError> {
    let at = now();
    on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::insert_into(s::mcp_sessions)
            .values((
                s::id.eq(id),
                s::user_id.eq(user.as_str()),
                s::state.eq(DbJson(state)),
                s::created_at.eq(DbTime(at)),
                s::updated_at.eq(DbTime(at)),
            ))
            .on_conflict(s::id)
            .do_update()
            .set((s::state.eq(DbJson(state)), s::updated_at.eq(DbTime(at))))
            .cached()
            .execute(conn)
            .await?
    });
    Ok(())
}

async fn touch(tx: &mut Tx, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::update(s::mcp_sessions.filter(s::id.eq(id)))
            .set(s::updated_at.eq(DbTime(at)))
            .cached()
            .execute(conn)
            .await?
    });
    Ok(())
}

async fn delete(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::delete(s::mcp_sessions.filter(s::id.eq(id)))
            .execute(conn)
            .await?
    });
    Ok(())
}

async fn sweep(tx: &mut Tx, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
    let swept = on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::delete(s::mcp_sessions.filter(s::updated_at.lt(DbTime(cutoff))))
            .execute(conn)
            .await?
    });
    if swept > 0 {
        tracing::info!(swept, "ended idle sessions");
    }
    Ok(swept)
}
