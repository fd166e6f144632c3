//! MCP over HTTP on one port: Streamable HTTP at `/mcp` (stateless: any replica serves
//! any request), the legacy HTTP+SSE transport at `/sse` + `/message`, `/healthz`,
//! `/readyz` for load balancers, the read-only web page at `/ui` ([`ui`]), and, when asked
//! for, Prometheus metrics at `/metrics` ([`metrics`]).
//!
//! Every request passes the Host/Origin guard (against DNS rebinding); MCP requests and
//! the page's data requests then pass bearer authentication, which names the user the
//! request acts for.

mod admission;
mod auth;
mod connections;
mod guard;
mod legacy_sse;
mod metrics;
mod reply;
mod sessions;
mod ui;

use crate::db::{Database, migrations};
use crate::store::Quotas;
use crate::store::browse::Browser;
use crate::store::scopes::Caller;
use crate::store::sessions::Sessions;
use crate::tools::{CallerOfRequest, Identity, TodoServer};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::AdmissionLimits;
pub use auth::{AuthMode, ProtectedResource};
pub use connections::{ConnectionLimits, raise_open_file_limit};
pub use metrics::{MetricsOptions, MetricsToken};

/// Requests larger than this are refused (413) before they are read whole. A message's
/// content may be 100,000 characters, up to 400 KB of UTF-8, plus JSON escaping.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long one request may take to produce its response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// After the last call finished: time for its answer to leave on its stream.
const STREAM_FLUSH: Duration = Duration::from_millis(200);

pub struct HttpOptions {
    pub listen: SocketAddr,
    pub auth: AuthMode,
    /// This server as an OAuth protected resource (`TODO_MCP_PUBLIC_URL`): its metadata is
    /// served and every 401 points to it.
    pub resource: Option<ProtectedResource>,
    /// Host names (or `host:port`) accepted besides the loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Offer `Mcp-Session-Id` sessions (kept in the database) to clients that want them,
    /// ended after this long unused.
    pub sessions: Option<std::time::Duration>,
    pub quotas: Quotas,
    /// Whether, where and to whom `/metrics` is served (by default, nowhere).
    pub metrics: MetricsOptions,
    /// How many connections are held at once, and how long a slow or idle one is kept.
    pub connections: ConnectionLimits,
    /// How many MCP requests run at once, and how long one waits for a turn.
    pub admission: AdmissionLimits,
}

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
pub async fn serve(db: Database, options: HttpOptions) -> anyhow::Result<()> {
    if matches!(options.auth, AuthMode::None) && !options.listen.ip().is_loopback() {
        anyhow::bail!(
            "--no-auth serves anyone who can connect as the local user: it only listens on a \
             loopback address, not {}",
            options.listen
        );
    }
    // Shutdown in order: stop accepting (`accepting`), let the tool calls under way finish
    // (`in_flight`), then end the long-lived streams (`streams`: legacy SSE, session GETs)
    // that would otherwise keep their connections, and so the server, open.
    let accepting = CancellationToken::new();
    let streams = CancellationToken::new();
    let in_flight = TaskTracker::new();
    let caller_of_request: CallerOfRequest = Arc::new(|extensions| {
        extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
    });
    // Built once (its tool router holds every tool's schemas) and cloned per request.
    let server = TodoServer::new(
        db.clone(),
        Identity::PerRequest(caller_of_request),
        options.quotas,
    )
    .await?
    .tracking_calls(in_flight.clone());
    let browser = Browser::new(db.clone()).await?;
    let app = router(db.clone(), server, browser, &options, streams.clone());
    // Bound first, so that its address is logged before the main listener's line (which
    // says the server is up).
    if let Some(address) = options.metrics.listen {
        serve_metrics(
            address,
            db,
            options.metrics.token.clone(),
            options.connections,
            accepting.clone(),
        )
        .await?;
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let limits = options.connections;
    tracing::info!(
        address = %listener.local_addr()?,
        auth = %options.auth.describe(),
        max_connections = limits.max_connections,
        max_in_flight = options.admission.max_in_flight,
        max_queue_wait_s = options.admission.max_queue_wait.as_secs_f64(),
        header_read_timeout_s = limits.header_read_timeout.as_secs_f64(),
        keep_alive_timeout_s = limits.keep_alive_timeout.as_secs_f64(),
        "serving MCP over HTTP: /mcp (Streamable HTTP), /sse + /message (legacy SSE), /ui (web page)"
    );
    tokio::spawn(drain_on_signal(
        accepting.clone(),
        streams.clone(),
        in_flight,
    ));
    let server = connections::serve(listener, app, limits, accepting.clone());
    tokio::select! {
        () = server => {},
        () = async {
            accepting.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}: stopping anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// At most this many connections to the metrics listener: a scraper or two.
const METRICS_CONNECTIONS: usize = 64;

/// Serves `/metrics` alone on `address` until `accepting` is cancelled. No Host guard there:
/// Prometheus names its targets by IP address, and this listener is for a private network
/// (or behind the metrics token), serving nothing a rebinding page could use to act.
async fn serve_metrics(
    address: SocketAddr,
    db: Database,
    token: Option<Arc<MetricsToken>>,
    limits: ConnectionLimits,
    accepting: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {address}: {e}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        bearer = token.is_some(),
        "serving metrics: /metrics (Prometheus)"
    );
    let app =
        metrics::routes(db, token).layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let limits = ConnectionLimits {
        max_connections: limits.max_connections.min(METRICS_CONNECTIONS),
        ..limits
    };
    tokio::spawn(connections::serve(listener, app, limits, accepting));
    Ok(())
}

/// On SIGTERM/SIGINT: stop accepting, wait for the calls under way (bounded by the grace
/// period), then end the open streams, once their last answers have been sent.
async fn drain_on_signal(
    accepting: CancellationToken,
    streams: CancellationToken,
    in_flight: TaskTracker,
) {
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    accepting.cancel();
    in_flight.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!("tool calls still running after {SHUTDOWN_GRACE:?}");
    }
    // A finished call's answer is queued for its stream; give the streams a moment to send it.
    tokio::time::sleep(STREAM_FLUSH).await;
    streams.cancel();
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[derive(Clone)]
struct AppState {
    db: Database,
}

fn router(
    db: Database,
    server: TodoServer,
    browser: Browser,
    options: &HttpOptions,
    streams: CancellationToken,
) -> Router {
    let legacy = legacy_sse::LegacySse::new(server.clone(), streams.clone());
    let auth_state = auth::AuthState::new(
        db.clone(),
        options.auth.clone(),
        options.resource.clone().map(Arc::new),
        server.clone(),
    );
    let new_server = move || Ok(server.clone());
    let config = StreamableHttpServerConfig::default()
        // A call's answer as one JSON object, not an SSE stream of one event: no stream
        // to keep, no event framing, the body written once.
        .with_json_response(true)
        // Host and Origin are checked by `guard` for every route, this one included.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(streams.child_token());
    let streamable =
        if let Some(idle) = options.sessions {
            let sessions = Sessions::new(db.clone(), idle);
            let mut config = config.with_legacy_session_mode(true);
            config.session_store = Some(Arc::new(sessions::DbSessionStore::new(sessions.clone())));
            let service = StreamableHttpService::new(
                new_server,
                Arc::new(LocalSessionManager::default()),
                config,
            );
            Router::new().route_service("/mcp", service).layer(
                axum::middleware::from_fn_with_state(sessions, sessions::check_session_owner),
            )
        } else {
            let service = StreamableHttpService::new(
                new_server,
                Arc::new(NeverSessionManager::default()),
                config.with_legacy_session_mode(false),
            );
            Router::new().route_service("/mcp", service)
        }
        .layer(axum::middleware::from_fn(reply::require_json_body));
    let page = ui::routes(browser, auth_state.clone(), &options.auth);
    // Admission first: a request refused for want of capacity costs no token lookup.
    let authenticated = streamable
        .merge(legacy.routes())
        .layer(axum::middleware::from_fn_with_state(
            auth_state,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            admission::Admission::new(options.admission),
            admission::admit,
        ));
    let mut allowed_hosts = options.allowed_hosts.clone();
    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { db: db.clone() });
    if let Some(resource) = &options.resource {
        allowed_hosts.extend(resource.authority());
        public = public.merge(Arc::new(resource.clone()).routes());
    }
    let mut app =
        public
            .merge(authenticated)
            .merge(page)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(guard::HostGuard::new(&allowed_hosts)),
                guard::check_host_and_origin,
            ));
    // Merged after the Host guard, so outside it: Prometheus names a target by its IP
    // address, and the token protects /metrics from a rebinding page (which has none).
    if options.metrics.on_main_listener() {
        app = app.merge(metrics::routes(db, options.metrics.token.clone()));
    }
    app.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database answers and its schema is current: this replica can serve. One pooled
/// connection, one query: probes cost no new connection.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match migrations::pending(&state.db).await {
        Ok(pending) if pending.is_empty() => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "backend": state.db.backend_name() })),
        ),
        Ok(pending) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "migrations pending", "pending": pending })),
        ),
        Err(error) => {
            // Anyone may ask: the detail goes to the log only.
            tracing::warn!(%error, "readyz: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": reply::STORAGE_UNAVAILABLE })),
            )
        }
    }
}
