//! Optional Streamable HTTP sessions (`--sessions`) for clients that want an
//! `Mcp-Session-Id`. Their state (the client's initialize parameters) lives in the database,
//! so a replica that never saw a session restores it from there; each session belongs to
//! the user who opened it, and anyone else is told it does not exist.

use crate::store::scopes::Caller;
use crate::store::sessions::Sessions;
use crate::store::{StoreError, UserId};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::reply::{INVALID_REQUEST, STORAGE_UNAVAILABLE, refusal};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

tokio::task_local! {
    /// The user of the request being served: rmcp saves a new session from within the
    /// initialize request's own task, where this names its owner.
    static REQUEST_USER: UserId;
}

const SESSION_HEADER: &str = "mcp-session-id";

pub struct DbSessionStore {
    sessions: Sessions,
}

impl DbSessionStore {
    pub fn new(sessions: Sessions) -> Self {
        DbSessionStore { sessions }
    }
}

fn store_error(error: impl Into<StoreError>) -> SessionStoreError {
    Box::new(error.into())
}

#[async_trait::async_trait]
impl SessionStore for DbSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.sessions.load(session_id).await.map_err(store_error)? {
            Some(state) => Ok(Some(serde_json::from_value(state)?)),
            None => Ok(None),
        }
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let user = REQUEST_USER
            .try_with(UserId::clone)
            .map_err(|_| "a session was saved outside an authenticated request")?;
        let state = serde_json::to_value(state)?;
        self.sessions
            .save(session_id, &user, &state)
            .await
            .map_err(store_error)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.sessions.delete(session_id).await.map_err(store_error)
    }
}

/// A request naming a session must come from its owner: an unknown, ended, expired or
/// another user's session gets 404, as the protocol asks for ended sessions. Runs after
/// authentication.
pub async fn check_session_owner(
    State(sessions): State<Sessions>,
    request: Request,
    next: Next,
) -> Response {
    let Some(user) = request.extensions().get::<Caller>().map(|c| c.user.clone()) else {
        return refusal(StatusCode::UNAUTHORIZED, -32001, "unauthenticated");
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = session {
        match sessions.owner(&session).await {
            Ok(Some(owner)) if owner == user => {}
            Ok(_) => {
                return refusal(StatusCode::NOT_FOUND, INVALID_REQUEST, "Session not found");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot look up a session");
                return refusal(StatusCode::SERVICE_UNAVAILABLE, -32002, STORAGE_UNAVAILABLE);
            }
        }
    }
    REQUEST_USER.scope(user, next.run(request)).await
}
