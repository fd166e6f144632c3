//! `/ui`: a read-only web page where a signed-in user sees what their agents did: tasks,
//! conversations, each transcript with the agent's tool calls and the server's call
//! records, and the agent state versions.
//!
//! The page is three static files built into the binary (no build step); its data comes
//! from the JSON endpoints under `/ui/api/`, which authenticate each request exactly as
//! `/mcp` does (the same bearer middleware), need the `todo:read` scope, and read through
//! [`Browser`] in a rolled-back transaction of the caller's own: no call record, no write.
//! Only GET (and HEAD) is routed; other methods get 405.
//!
//! Every `/ui` response carries a strict Content-Security-Policy: the page runs no inline
//! script or style, and builds its DOM with `textContent` only, since messages and tool
//! arguments are written by agents and may be hostile.

use super::auth::{self, AuthMode, AuthState};
use crate::store::browse::{Browser, Page};
use crate::store::scopes::{Caller, TodoScope};
use crate::store::{ErrorKind, StoreError, parse_uuid};
use crate::tools::tasks::{TaskOrder, TaskStatus};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Nothing but the page's own script, style and API; no framing, no form posts, no base
/// URL games. `img-src data:` is for the empty favicon, which keeps the browser from
/// asking for /favicon.ico.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's routes: the static files and `/ui/config.json` are public (they hold no
/// data), `/ui/api/…` authenticates with `auth`.
pub fn routes(browser: Browser, auth_state: AuthState, mode: &AuthMode) -> Router {
    let sign_in = match mode {
        AuthMode::Tokens(_) => "bearer",
        AuthMode::None => "none",
    };
    let api = Router::new()
        .route("/me", get(me))
        .route("/tasks", get(tasks))
        .route("/conversations", get(conversations))
        .route("/conversations/{id}/transcript", get(transcript))
        .route("/conversations/{id}/states", get(state_versions))
        .route("/conversations/{id}/states/{version}", get(state))
        .fallback(|| async { ApiError::not_found("no such endpoint under /ui/api") })
        .with_state(browser)
        .layer(axum::middleware::from_fn_with_state(
            auth_state,
            auth::authenticate,
        ));
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/config.json",
            get(move || async move { Json(json!({ "sign_in": sign_in })) }),
        )
        .nest("/ui/api", api)
        .layer(axum::middleware::from_fn(security_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The headers every `/ui` response gets, whatever produced it (a 401 and a 405
/// included). Nothing is cached: the data is private, and the static files change with
/// the binary.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A refusal from `/ui/api`: `{"error": {"kind", "message"}}` with its HTTP status. (The
/// bearer middleware's 401 says `{"error": {"code", "message"}}`: the page reads
/// `error.message` from either.)
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(message: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: ErrorKind::NotFound.as_str(),
            message: message.to_owned(),
        }
    }

    fn bad_request(message: String) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorKind::InvalidArgument.as_str(),
            message,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let kind = error.kind();
        let status = match kind {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unavailable | ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // A defect: the details are for the operator's log, not the page.
            tracing::error!(%error, "a /ui/api read failed");
            "the server failed to read this; its log says why".to_owned()
        } else {
            error.to_string()
        };
        ApiError {
            status,
            kind: kind.as_str(),
            message,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "kind": self.kind, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.kind == ErrorKind::InsufficientScope.as_str() {
            let challenge = format!(
                "Bearer realm=\"todo-mcp\", error=\"insufficient_scope\", scope=\"{}\"",
                TodoScope::Read
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The caller, if their credential allows reading (a write-only token does not).
fn reader(caller: &Caller) -> Result<&crate::store::UserId, ApiError> {
    if caller.scopes.allows(TodoScope::Read) {
        Ok(&caller.user)
    } else {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            kind: ErrorKind::InsufficientScope.as_str(),
            message: format!("the page needs the {} scope", TodoScope::Read),
        })
    }
}

/// Who is signed in.
async fn me(Extension(caller): Extension<Caller>) -> ApiResult {
    reader(&caller)?;
    Ok(Json(json!({
        "user": caller.user.as_str(),
        "scopes": caller.scopes.to_oauth(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksQuery {
    status: Option<TaskStatus>,
    sort: Option<TaskOrder>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn tasks(
    State(browser): State<Browser>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<TasksQuery>, QueryRejection>,
) -> ApiResult {
    let user = reader(&caller)?;
    let Query(query) = query?;
    let page = browser
        .tasks(
            user,
            query.status.unwrap_or_default().into(),
            query.sort.unwrap_or_default().into(),
            query.limit,
            query.cursor.as_deref(),
        )
        .await?;
    Ok(page_json("tasks", page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn conversations(
    State(browser): State<Browser>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let user = reader(&caller)?;
    let Query(query) = query?;
    let page = browser
        .conversations(user, query.limit, query.cursor.as_deref())
        .await?;
    Ok(page_json("conversations", page))
}

/// `{"<name>": [...], "next_cursor": …}`, as the list tools answer.
fn page_json<T: serde::Serialize>(name: &str, page: Page<T>) -> Json<Value> {
    let mut body = serde_json::Map::new();
    body.insert(name.to_owned(), json!(page.items));
    body.insert("next_cursor".to_owned(), json!(page.next_cursor));
    Json(Value::Object(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscriptQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

async fn transcript(
    State(browser): State<Browser>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<TranscriptQuery>, QueryRejection>,
) -> ApiResult {
    let user = reader(&caller)?;
    let Query(query) = query?;
    let id = parse_uuid("conversation_id", &id)?;
    let page = browser
        .transcript(user, id, query.limit, query.before)
        .await?;
    Ok(Json(json!({
        "conversation": page.conversation,
        "messages": page.messages,
        "next_cursor": page.next_cursor,
    })))
}

async fn state_versions(
    State(browser): State<Browser>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let user = reader(&caller)?;
    let id = parse_uuid("conversation_id", &id)?;
    let versions = browser.state_versions(user, id).await?;
    Ok(Json(json!({ "conversation_id": id, "versions": versions })))
}

async fn state(
    State(browser): State<Browser>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, i32)>, PathRejection>,
) -> ApiResult {
    let user = reader(&caller)?;
    let Path((id, version)) = path?;
    let id = parse_uuid("conversation_id", &id)?;
    let state = browser.state(user, id, version).await?;
    Ok(Json(json!(state)))
}
