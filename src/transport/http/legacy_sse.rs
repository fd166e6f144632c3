//! The legacy HTTP+SSE transport (protocol 2024-11-05), which older clients and bridges
//! still use and rmcp 3 no longer ships: `GET /sse` opens an event stream whose first
//! event names `/message?sessionId=…`; the client POSTs its JSON-RPC messages there and
//! reads the answers from the stream.
//!
//! A session is its open stream: it lives on the replica holding that connection (load
//! balancers route it by session id or keep it sticky), and ends when the stream closes.
//! Each POST is authenticated on its own, and must come from the user who opened the
//! stream: anyone else is told the session does not exist.

use crate::store::UserId;
use crate::store::scopes::Caller;
use crate::tools::TodoServer;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;

use super::reply::{jsonrpc_error, refusal_response};
use crate::transport::jsonrpc;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

/// Messages queued per session in each direction before senders wait.
const CHANNEL_CAPACITY: usize = 64;

struct Session {
    user: UserId,
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
}

#[derive(Clone)]
pub struct LegacySse {
    /// Every session serves a copy of this server, bound to the session's user.
    server: TodoServer,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Ends every stream (after the calls under way have finished: see `http::serve`).
    shutdown: CancellationToken,
}

#[derive(Deserialize)]
struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

impl LegacySse {
    pub fn new(server: TodoServer, shutdown: CancellationToken) -> Self {
        LegacySse {
            server,
            sessions: Arc::default(),
            shutdown,
        }
    }

    pub fn routes(self) -> Router {
        Router::new()
            .route("/sse", get(open_stream))
            .route("/message", post(post_message))
            .with_state(self)
    }

    fn session_user(&self, id: &str) -> Option<(UserId, mpsc::Sender<ClientJsonRpcMessage>)> {
        let sessions = self.sessions.lock().ok()?;
        sessions
            .get(id)
            .map(|session| (session.user.clone(), session.to_server.clone()))
    }
}

/// Removes the session when its stream is dropped (the client went away or we shut down).
struct SessionGuard {
    id: String,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(&self.id);
        }
        tracing::info!(session = %self.id, "legacy SSE session closed");
    }
}

async fn open_stream(
    State(legacy): State<LegacySse>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let user = caller.user.clone();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
    if let Ok(mut sessions) = legacy.sessions.lock() {
        sessions.insert(
            id.clone(),
            Session {
                user: user.clone(),
                to_server,
            },
        );
    }
    tracing::info!(session = %id, user = %user, "legacy SSE session opened");

    // The session acts with the scopes of the token that opened it; each POST's own token
    // is checked too (by `auth`), so neither can do more than its own scopes allow.
    let server = legacy.server.for_caller(caller);
    let transport = (PollSender::new(to_client), ReceiverStream::new(from_client));
    let session_id = id.clone();
    tokio::spawn(async move {
        match server.serve(transport).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(error) => {
                tracing::info!(session = %session_id, %error, "legacy SSE session ended before initialize")
            }
        }
    });

    let guard = SessionGuard {
        id: id.clone(),
        sessions: legacy.sessions.clone(),
    };
    let endpoint = futures_util::stream::once(async move {
        Ok(Event::default()
            .event("endpoint")
            .data(format!("/message?sessionId={id}")))
    });
    let messages = ReceiverStream::new(from_server).map(move |message| {
        let _session_alive = &guard;
        let data = serde_json::to_string(&message).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot encode a server message");
            String::from("{}")
        });
        Ok(Event::default().event("message").data(data))
    });
    let shutdown = legacy.shutdown.clone();
    let stream = endpoint
        .chain(messages)
        .take_until(async move { shutdown.cancelled().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn post_message(
    State(legacy): State<LegacySse>,
    Extension(Caller { user, .. }): Extension<Caller>,
    Query(query): Query<MessageQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A message is JSON, said so: a text/plain POST is what an HTML form can send across
    // sites without a preflight.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return jsonrpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "POST /message takes Content-Type: application/json",
        );
    }
    // Another user's session answers exactly like one that does not exist.
    let to_server = match legacy.session_user(&query.session_id) {
        Some((owner, to_server)) if owner == user => to_server,
        _ => return (StatusCode::NOT_FOUND, "session not found").into_response(),
    };
    let message = match jsonrpc::read_message(&body).and_then(jsonrpc::client_message) {
        Ok(message) => message,
        Err(refusal) => return refusal_response(&refusal),
    };
    match to_server.send(message).await {
        Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "session not found").into_response(),
    }
}
