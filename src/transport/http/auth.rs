//! Bearer authentication of every MCP request: the user a request acts for comes from its
//! own `Authorization` header, checked before any tool runs.

use crate::auth::{AuthError, Authenticator};
use crate::db::Database;
use crate::store::{StoreError, UserId};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::reply::refusal;

/// Who may call.
#[derive(Clone)]
pub enum AuthMode {
    /// Bearer API tokens (and JWTs, if the authenticator has a secret).
    Tokens(Authenticator),
    /// A personal server: every request acts as the local user (loopback only).
    None,
}

impl AuthMode {
    pub fn describe(&self) -> &'static str {
        match self {
            AuthMode::Tokens(_) => "bearer tokens",
            AuthMode::None => "none (every request is the local user)",
        }
    }
}

#[derive(Clone)]
pub struct AuthState {
    db: Database,
    mode: AuthMode,
}

impl AuthState {
    pub fn new(db: Database, mode: AuthMode) -> Self {
        AuthState { db, mode }
    }
}

/// Puts the request's [`UserId`] in its extensions, or answers 401 (503 if the
/// database cannot be asked).
pub async fn authenticate(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match &state.mode {
        AuthMode::None => UserId::local(),
        AuthMode::Tokens(authenticator) => {
            let Some(token) = bearer_token(&request) else {
                return unauthorized(None, "send `Authorization: Bearer <token>`");
            };
            match authenticator.authenticate(&state.db, token).await {
                Ok(user) => user,
                Err(AuthError::Store(StoreError::Db(error))) => {
                    tracing::warn!(%error, "cannot check a bearer token");
                    return unavailable(&error.to_string());
                }
                Err(error) => return unauthorized(Some("invalid_token"), &error.to_string()),
            }
        }
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// RFC 6750: a challenge naming the realm, and the error only when a token was presented.
fn unauthorized(error: Option<&str>, description: &str) -> Response {
    let challenge = match error {
        Some(error) => format!(
            "Bearer realm=\"todo-mcp\", error=\"{error}\", error_description=\"{}\"",
            description.replace('"', "'")
        ),
        None => "Bearer realm=\"todo-mcp\"".to_owned(),
    };
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        -32001,
        &format!("unauthorized: {description}"),
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn unavailable(reason: &str) -> Response {
    let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, -32002, reason);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
