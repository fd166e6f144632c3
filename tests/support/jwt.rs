//! JWTs signed by hand, for the tests of `TODO_MCP_JWT_SECRET` bearer tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// `claims` signed with `algorithm` and the shared `secret`.
pub fn sign(claims: &Value, algorithm: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encoding a test JWT")
}

/// `claims` signed with HS256, the algorithm the server expects.
pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    sign(claims, Algorithm::HS256, secret)
}
