//! Streamable HTTP sessions (`http --sessions`), kept in the database so that any
//! replica can serve any session, and bound to the user who opened them.

use super::{StoreError, UserId, now};
use crate::db::Tx;
use crate::db::sql::CachedDsl;
use crate::on_backend;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::Value;

/// Saves (or replaces) a session's state, owned by `user`.
pub async fn save(tx: &mut Tx, id: &str, user: &UserId, state: &Value) -> Result<(), StoreError> {
    let at = now();
    on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::insert_into(s::mcp_sessions)
            .values((
                s::id.eq(id),
                s::user_id.eq(user.as_str()),
                s::state.eq(state),
                s::created_at.eq(at),
                s::updated_at.eq(at),
            ))
            .on_conflict(s::id)
            .do_update()
            .set((s::state.eq(state), s::updated_at.eq(at)))
            .cached()
            .execute(conn)
            .await?
    });
    Ok(())
}

/// The session's state, if it exists.
pub async fn load(tx: &mut Tx, id: &str) -> Result<Option<Value>, StoreError> {
    Ok(on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        s::mcp_sessions
            .filter(s::id.eq(id))
            .select(s::state)
            .first(conn)
            .await
            .optional()?
    }))
}

/// Who opened the session, if it exists.
pub async fn owner(tx: &mut Tx, id: &str) -> Result<Option<UserId>, StoreError> {
    let owner: Option<String> = on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        s::mcp_sessions
            .filter(s::id.eq(id))
            .select(s::user_id)
            .first(conn)
            .await
            .optional()?
    });
    owner.map(|user| UserId::parse(&user)).transpose()
}

pub async fn delete(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    on_backend!(tx, |conn| {
        use schema::mcp_sessions::dsl as s;
        diesel::delete(s::mcp_sessions.filter(s::id.eq(id)))
            .execute(conn)
            .await?
    });
    Ok(())
}
