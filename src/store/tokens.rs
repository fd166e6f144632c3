//! API tokens: 256-bit random secrets, of which only a SHA-256 is stored.

use super::scopes::{Caller, Scopes};
use super::{StoreError, UserId, UserTx, check_text, end, format_time, limits, now};
use crate::db::{Database, DbTime, DbUuid, Scope, Tx};
use crate::on_backend;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Marks our tokens, so they are told from JWTs and recognisable in a secret scanner.
const PREFIX: &str = "tmcp_";

/// A newly issued token: the secret is shown once and never stored.
pub struct IssuedToken {
    pub id: uuid::Uuid,
    pub secret: String,
}

/// A token as `token list` shows it (never its secret or hash).
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    /// What the token may do, as OAuth scopes (`todo:read todo:write`).
    pub scopes: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::api_tokens)]
struct TokenRow {
    id: DbUuid,
    user_id: String,
    name: Option<String>,
    token_hash: Vec<u8>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// The token's restriction, as OAuth scope text; NULL for a token with every scope
    /// (tokens issued before scopes existed included).
    scopes: Option<String>,
}

impl TokenRow {
    fn scopes(&self) -> Scopes {
        self.scopes
            .as_deref()
            .map_or(Scopes::FULL, Scopes::from_oauth)
    }
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        let scopes = row.scopes().to_oauth();
        TokenInfo {
            scopes,
            id: row.id.0.to_string(),
            user_id: row.user_id,
            name: row.name,
            created_at: format_time(row.created_at),
            expires_at: row.expires_at.map(format_time),
            revoked_at: row.revoked_at.map(format_time),
        }
    }
}

/// What a presented secret turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(Caller),
    Unknown,
    Expired,
    Revoked,
}

pub fn looks_like_api_token(secret: &str) -> bool {
    secret.starts_with(PREFIX)
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Issues a token for the user (who is created if new), allowed `scopes`, in a
/// transaction of its own.
pub async fn create(
    db: &Database,
    user: &UserId,
    name: Option<&str>,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedToken, StoreError> {
    if scopes == Scopes::NONE {
        return Err(StoreError::invalid(
            "scope",
            "a token needs at least one scope",
        ));
    }
    let name = name
        .map(|n| check_text("name", n, limits::TOKEN_NAME, false))
        .transpose()?
        .filter(|n| !n.is_empty());
    // Issuing creates the user and their activity logs: user rows, so the user's scope.
    let mut tx = UserTx::begin(db, user).await?;
    let issued = async {
        super::users::ensure_in(&mut tx).await?;
        insert(&mut tx, name, scopes, expires_at).await
    }
    .await;
    end(tx, issued).await
}

async fn insert(
    tx: &mut UserTx,
    name: Option<String>,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedToken, StoreError> {
    let (tx, user) = tx.split();
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let id = uuid::Uuid::now_v7();
    let token_hash = hash(&secret);
    let at = now();
    on_backend!(tx, |conn| {
        use schema::api_tokens::dsl as k;
        diesel::insert_into(k::api_tokens)
            .values((
                k::id.eq(DbUuid(id)),
                k::user_id.eq(user.as_str()),
                k::name.eq(&name),
                k::token_hash.eq(&token_hash),
                k::created_at.eq(DbTime(at)),
                k::expires_at.eq(expires_at.map(DbTime)),
                k::scopes.eq((!scopes.is_full()).then(|| scopes.to_oauth())),
            ))
            .execute(conn)
            .await?
    });
    Ok(IssuedToken { id, secret })
}

/// A user's tokens, oldest first.
pub async fn list(db: &Database, user: &UserId) -> Result<Vec<TokenInfo>, StoreError> {
    let mut tx = db.begin(Scope::System).await?;
    let listed = list_in(&mut tx, user).await;
    end(tx, listed).await
}

async fn list_in(tx: &mut Tx, user: &UserId) -> Result<Vec<TokenInfo>, StoreError> {
    let rows: Vec<TokenRow> = on_backend!(tx, |conn| {
        use schema::api_tokens::dsl as k;
        k::api_tokens
            .filter(k::user_id.eq(user.as_str()))
            .select(TokenRow::as_select())
            .order(k::created_at.asc())
            .load(conn)
            .await?
    });
    Ok(rows.into_iter().map(TokenInfo::from).collect())
}

/// Revokes a token by id; revoking a revoked token keeps its first revocation time.
pub async fn revoke(db: &Database, id: uuid::Uuid) -> Result<TokenInfo, StoreError> {
    let mut tx = db.begin(Scope::System).await?;
    let revoked = revoke_in(&mut tx, id).await;
    end(tx, revoked).await
}

async fn revoke_in(tx: &mut Tx, id: uuid::Uuid) -> Result<TokenInfo, StoreError> {
    let at = now();
    let row: Option<TokenRow> = on_backend!(tx, |conn| {
        use schema::api_tokens::dsl as k;
        diesel::update(k::api_tokens.filter(k::id.eq(DbUuid(id))))
            .set(k::revoked_at.eq(crate::db::sql::coalesce(k::revoked_at, Some(DbTime(at)))))
            .returning(TokenRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
    });
    row.map(TokenInfo::from)
        .ok_or_else(|| StoreError::not_found("token", id))
}

/// Looks the secret up by its hash. Checked on every use, so a revocation takes effect
/// on the next call. One read, outside a transaction where the connection allows it.
pub async fn check(db: &Database, secret: &str) -> Result<TokenCheck, StoreError> {
    let mut tx = db.autocommit().await?;
    let checked = check_in(&mut tx, secret).await;
    end(tx, checked).await
}

async fn check_in(tx: &mut Tx, secret: &str) -> Result<TokenCheck, StoreError> {
    let presented = hash(secret);
    let row: Option<TokenRow> = on_backend!(tx, |conn| {
        use schema::api_tokens::dsl as k;
        k::api_tokens
            .filter(k::token_hash.eq(&presented))
            .select(TokenRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    let Some(row) = row else {
        return Ok(TokenCheck::Unknown);
    };
    // The index found it by hash; compare again in constant time so that no code path
    // branches on a partial match of secret material.
    if !bool::from(row.token_hash.ct_eq(&presented)) {
        return Ok(TokenCheck::Unknown);
    }
    if row.revoked_at.is_some() {
        return Ok(TokenCheck::Revoked);
    }
    if row.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Ok(TokenCheck::Expired);
    }
    Ok(TokenCheck::Valid(Caller {
        user: UserId::parse(&row.user_id)?,
        scopes: row.scopes(),
    }))
}
