//! Who is calling: the user named by a bearer credential, an API token or a JWT.

use crate::db::Database;
use crate::store::tokens::{self, TokenCheck};
use crate::store::{StoreError, UserId, users};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token is a JWT, but TODO_MCP_JWT_SECRET is not set, so JWTs are not accepted")]
    JwtDisabled,
    #[error("cannot check the token: {0}")]
    Store(#[from] StoreError),
}

/// Checks credentials: API tokens against the database, JWTs (HS256) against a secret.
#[derive(Clone)]
pub struct Authenticator {
    jwt_key: Option<DecodingKey>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    /// `jwt_secret` enables HS256 JWTs whose `sub` is the user id; `exp` is required.
    pub fn new(jwt_secret: Option<&str>) -> Self {
        Authenticator {
            jwt_key: jwt_secret
                .filter(|s| !s.is_empty())
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
        }
    }

    /// The user the credential names. A JWT's user is created on first sight.
    pub async fn authenticate(&self, db: &Database, credential: &str) -> Result<UserId, AuthError> {
        let credential = credential.trim();
        if tokens::looks_like_api_token(credential) {
            return match tokens::check(db, credential).await? {
                TokenCheck::Valid(user) => Ok(user),
                TokenCheck::Unknown => Err(AuthError::Invalid),
                TokenCheck::Expired => Err(AuthError::Expired),
                TokenCheck::Revoked => Err(AuthError::Revoked),
            };
        }
        if credential.split('.').count() != 3 {
            return Err(AuthError::Invalid);
        }
        let key = self.jwt_key.as_ref().ok_or(AuthError::JwtDisabled)?;
        let user = decode_jwt(key, credential)?;
        // Every request of a JWT user comes here: read first, create only on first sight.
        if !users::exists(db, &user).await? {
            users::ensure(db, &user).await?;
        }
        Ok(user)
    }
}

fn decode_jwt(key: &DecodingKey, token: &str) -> Result<UserId, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 30;
    let data =
        jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
    UserId::parse(&data.claims.sub).map_err(|_| AuthError::Invalid)
}
