//! Secrets every replica shares, kept in the database: made by the first server that
//! needs one, read by the others.

use super::cursor::CursorKey;
use super::{StoreError, end, now};
use crate::db::{Database, DbTime, Scope};
use crate::on_backend;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;

/// The key list cursors are signed with.
pub async fn cursor_key(db: &Database) -> Result<CursorKey, StoreError> {
    let secret = shared_secret(db, "cursor").await?;
    CursorKey::from_secret(&secret)
        .map_err(|e| StoreError::Conflict(format!("the stored cursor key is unusable: {e}")))
}

/// The secret named `name`, made (256 random bits) if no server has made it yet.
async fn shared_secret(db: &Database, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut candidate = vec![0u8; 32];
    rand::rng().fill_bytes(&mut candidate);
    let at = now();
    let mut tx = db.begin(Scope::System).await?;
    let secret: Result<Vec<u8>, StoreError> = async {
        Ok(on_backend!(tx, |conn| {
            use schema::server_secrets::dsl as s;
            // Two servers starting together: one insert wins, both read the same row.
            diesel::insert_into(s::server_secrets)
                .values((
                    s::name.eq(name),
                    s::secret.eq(&candidate),
                    s::created_at.eq(DbTime(at)),
                ))
                .on_conflict(s::name)
                .do_nothing()
                .execute(conn)
                .await?;
            s::server_secrets
                .filter(s::name.eq(name))
                .select(s::secret)
                .first(conn)
                .await?
        }))
    }
    .await;
    end(tx, secret).await
}
