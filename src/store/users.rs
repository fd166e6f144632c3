//! Users: created on first sight (a token issued for them, or a JWT naming them).

use super::conversations::ensure_activity_logs;
use super::{StoreError, UserId, UserTx, now, settle};
use crate::db::{Database, DbTime, Tx};
use crate::on_backend;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// Creates the user and their activity logs if missing, in a transaction of their own.
pub async fn ensure(db: &Database, user: &UserId) -> Result<(), StoreError> {
    let mut tx = UserTx::begin(db, user).await?;
    let ensured = ensure_in(&mut tx).await;
    settle(tx.tx, ensured).await
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
    settle(tx, found).await
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
