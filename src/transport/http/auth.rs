//! Bearer authentication of every MCP request, and OAuth 2.1 resource-server duties: the
//! caller a request acts for comes from its own `Authorization` header, checked before any
//! tool runs; a 401 points to this server's protected resource metadata (RFC 9728); a
//! `tools/call` its token's scopes do not allow gets 403 `insufficient_scope`.

use crate::auth::{Authenticator, Refusal};
use crate::db::Database;
use crate::metrics;
use crate::store::UserId;
use crate::store::scopes::{Caller, TodoScope};
use crate::tools::TodoServer;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use reqwest::Url;
use serde_json::{Value, json};
use std::sync::Arc;

use super::reply::{STORAGE_UNAVAILABLE, jsonrpc_error, refusal};

/// Who may call.
#[derive(Clone)]
pub enum AuthMode {
    /// Bearer API tokens and JWTs (see [`Authenticator`]).
    Tokens(Authenticator),
    /// A personal server: every request acts as the local user (loopback only).
    None,
}

impl AuthMode {
    pub fn describe(&self) -> String {
        match self {
            AuthMode::Tokens(authenticator) => authenticator.describe(),
            AuthMode::None => "none (every request is the local user)".to_owned(),
        }
    }
}

/// This server as an OAuth protected resource: its canonical URL (`TODO_MCP_PUBLIC_URL`,
/// the `resource` clients ask tokens for) and the authorization server that issues them.
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    /// `/.well-known/oauth-protected-resource` followed by the resource's path.
    metadata_path: String,
    /// The absolute URL of that path, as a 401 names it.
    metadata_url: String,
}

/// RFC 9728's well-known path; the resource's own path is appended to it.
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl ProtectedResource {
    /// `public_url` is this server's MCP endpoint as clients reach it
    /// (`https://todo.example.com/mcp`); `issuer` the authorization server, if any.
    pub fn new(public_url: &str, issuer: Option<&str>) -> Result<Self, String> {
        let url = Url::parse(public_url.trim())
            .map_err(|e| format!("TODO_MCP_PUBLIC_URL {public_url:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(format!(
                "TODO_MCP_PUBLIC_URL {public_url:?} must be an https:// (or, locally, http://) URL"
            ));
        }
        if url.fragment().is_some() || url.query().is_some() {
            return Err(format!(
                "TODO_MCP_PUBLIC_URL {public_url:?} must have no query or fragment (RFC 8707)"
            ));
        }
        let path = url.path().trim_end_matches('/');
        let metadata_path = format!("{METADATA_PATH}{path}");
        let mut metadata_url = url.clone();
        metadata_url.set_path(&metadata_path);
        Ok(ProtectedResource {
            resource: public_url.trim().to_owned(),
            authorization_servers: issuer.map(str::to_owned).into_iter().collect(),
            metadata_path,
            metadata_url: metadata_url.into(),
        })
    }

    /// The public URL's host (and port), which the Host guard must accept.
    pub fn authority(&self) -> Option<String> {
        let url = Url::parse(&self.resource).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    }

    fn document(&self) -> Value {
        json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": TodoScope::ALL.map(TodoScope::as_str),
            "bearer_methods_supported": ["header"],
            "resource_name": "todo-mcp",
        })
    }

    /// The metadata document, at the well-known path and at its path-inserted form.
    pub fn routes(self: Arc<Self>) -> Router {
        let serve = {
            let resource = self.clone();
            move || async move {
                (
                    [(header::CACHE_CONTROL, "public, max-age=3600")],
                    axum::Json(resource.document()),
                )
                    .into_response()
            }
        };
        let mut router = Router::new().route(METADATA_PATH, get(serve.clone()));
        if self.metadata_path != METADATA_PATH {
            router = router.route(&self.metadata_path, get(serve));
        }
        router
    }
}

#[derive(Clone)]
pub struct AuthState {
    db: Database,
    mode: AuthMode,
    resource: Option<Arc<ProtectedResource>>,
    /// Knows the scope each tool needs.
    server: TodoServer,
}

impl AuthState {
    pub fn new(
        db: Database,
        mode: AuthMode,
        resource: Option<Arc<ProtectedResource>>,
        server: TodoServer,
    ) -> Self {
        AuthState {
            db,
            mode,
            resource,
            server,
        }
    }
}

/// Puts the request's [`Caller`] in its extensions, or answers 401 (503 if the database or
/// the issuer's keys cannot be had), or 403 for a tool call its scopes do not allow.
pub async fn authenticate(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match &state.mode {
        AuthMode::None => Caller::with_full_access(UserId::local()),
        AuthMode::Tokens(authenticator) => {
            let Some(token) = bearer_token(&request) else {
                metrics::global().auth_refused(Refusal::Missing);
                return state.unauthorized(None, "send `Authorization: Bearer <token>`");
            };
            match authenticator.authenticate(&state.db, token).await {
                Ok(caller) => caller,
                Err(error) => {
                    let reason = error.reason();
                    metrics::global().auth_refused(reason);
                    if error.is_unavailable() {
                        // The detail (a database's own message) is for the log: this caller
                        // is not signed in.
                        tracing::warn!(%reason, %error, "cannot check a bearer token");
                        return unavailable(STORAGE_UNAVAILABLE);
                    }
                    tracing::info!(%reason, %error, "refused a bearer token");
                    return state.unauthorized(Some("invalid_token"), &error.to_string());
                }
            }
        }
    };
    // Full access, the common case, needs no look at the body.
    if !caller.scopes.is_full() && request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await else {
            return jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                super::reply::INVALID_REQUEST,
                &format!("the request body is over {} bytes", super::MAX_BODY_BYTES),
            );
        };
        for tool in called_tools(&bytes) {
            if let Some(needed) = state.server.scope_needed(&tool)
                && !caller.scopes.allows(needed)
            {
                tracing::info!(user = %caller.user, %tool, scope = %needed, "refused a call: insufficient scope");
                metrics::global().auth_refused(Refusal::InsufficientScope);
                return state.insufficient_scope(&tool, needed);
            }
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The tools a JSON-RPC body calls (`tools/call`, alone or in a batch).
fn called_tools(body: &[u8]) -> Vec<String> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let messages = match message {
        Value::Array(batch) => batch,
        single => vec![single],
    };
    messages
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .filter_map(|m| m["params"]["name"].as_str().map(str::to_owned))
        .collect()
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

impl AuthState {
    /// The `resource_metadata` parameter of a challenge, when this server has metadata.
    fn metadata_parameter(&self) -> String {
        match &self.resource {
            Some(resource) => format!(", resource_metadata=\"{}\"", resource.metadata_url),
            None => String::new(),
        }
    }

    /// RFC 6750 and RFC 9728: a challenge naming the metadata and the scopes to ask for, and
    /// the error only when a token was presented.
    fn unauthorized(&self, error: Option<&str>, description: &str) -> Response {
        let scopes = TodoScope::ALL.map(TodoScope::as_str).join(" ");
        let mut challenge = format!("Bearer realm=\"todo-mcp\"{}", self.metadata_parameter());
        if self.resource.is_some() {
            challenge.push_str(&format!(", scope=\"{scopes}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            ));
        }
        challenge_response(
            StatusCode::UNAUTHORIZED,
            -32001,
            &format!("unauthorized: {description}"),
            &challenge,
        )
    }

    /// RFC 6750 §3.1 and MCP's step-up authorization: the scope the tool needs.
    fn insufficient_scope(&self, tool: &str, needed: TodoScope) -> Response {
        let description = format!("{tool} needs the {needed} scope");
        let challenge = format!(
            "Bearer realm=\"todo-mcp\", error=\"insufficient_scope\", scope=\"{needed}\"{}, error_description=\"{description}\"",
            self.metadata_parameter()
        );
        challenge_response(
            StatusCode::FORBIDDEN,
            -32003,
            &format!("insufficient_scope: {description}"),
            &challenge,
        )
    }
}

fn challenge_response(status: StatusCode, code: i64, message: &str, challenge: &str) -> Response {
    let mut response = refusal(status, code, message);
    if let Ok(value) = HeaderValue::from_str(challenge) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_at_the_path_inserted_url() {
        let resource = ProtectedResource::new(
            "https://todo.example.com/mcp",
            Some("https://auth.example.com"),
        )
        .unwrap();
        assert_eq!(
            resource.metadata_url,
            "https://todo.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            resource.metadata_path,
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(resource.authority().as_deref(), Some("todo.example.com"));
        assert_eq!(
            resource.document()["authorization_servers"][0],
            "https://auth.example.com"
        );
        assert!(ProtectedResource::new("https://todo.example.com/mcp#x", None).is_err());
        assert!(ProtectedResource::new("todo.example.com/mcp", None).is_err());
    }

    #[test]
    fn tool_calls_are_found_in_single_messages_and_batches() {
        let single =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_task"}}"#;
        assert_eq!(called_tools(single), ["add_task"]);
        let batch =
            br#"[{"method":"tools/list"},{"method":"tools/call","params":{"name":"list_tasks"}}]"#;
        assert_eq!(called_tools(batch), ["list_tasks"]);
        assert!(called_tools(b"not json").is_empty());
    }
}
