//! The MCP tool surface: one server struct whose methods are the tools.
//!
//! Each tool is defined once, in `tasks.rs` or `conversations.rs`, as one `#[tool]`
//! method: its name, description, annotations, where its call record goes
//! (`meta = records(…)`), its argument struct (whose doc comments become the input
//! schema), its result type (the output schema) and its handler. Everything that lists
//! tools is derived from those definitions: the routing, the server instructions,
//! `todo-mcp manifest` (mcp-manifest.json and README's tool table) and the tests' lists.
//! This module holds what the tools share: who is calling, one transaction per call, and
//! the audit record every call leaves.

pub mod conversations;
pub mod tasks;

use crate::db::{Database, DbError, Scope, Tx};
use crate::store::audit::{self, CallRecord, Outcome};
use crate::store::conversations::{self as conversation_store, ActivityLog};
use crate::store::{ErrorKind, Quotas, StoreError, UserId, parse_uuid, quote, shorten};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{IntoCallToolResult, ToolCallContext};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    CustomRequest, CustomResult, Extensions, Implementation, ListToolsResult, MetaObject,
    PaginatedRequestParams, ProtocolVersion, ResultType, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::task::TaskTracker;

/// The server's instructions, around the tool list derived from the definitions.
fn instructions(tools: &[Tool]) -> String {
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    format!(
        "Durable tasks and conversation history for the authenticated user. Tools: {}. \
         get_conversation_history returns a summary plus messages, oldest first: enough to \
         rebuild context. Every tool call is recorded as a `tool` message: tools with an \
         optional `conversation_id` record into that conversation, everything else into \
         the \"Tool activity\" conversation (see list_conversations); each tool's `_meta` \
         [\"{RECORD_META_KEY}\"] says which. Pass an idempotency_key to add_task when \
         retrying.",
        names.join(", ")
    )
}

/// Where a tool's call record goes: declared with the tool (`#[tool(meta =
/// records(RecordIn::…))]`) and published in its `_meta` under [`RECORD_META_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordIn {
    /// The caller's "Tool activity" conversation.
    ActivityLog,
    /// The conversation named by the call's optional `conversation_id` argument (else
    /// the activity log).
    NamedConversation,
    /// The call reads the history of the conversation its `conversation_id` names: the
    /// record goes to a log that is not the one read, so a read never grows what it reads.
    ReadLog,
}

/// The `_meta` key naming where a tool's call record goes.
pub const RECORD_META_KEY: &str = "todo-mcp/call-record";

impl RecordIn {
    const ALL: [RecordIn; 3] = [
        RecordIn::ActivityLog,
        RecordIn::NamedConversation,
        RecordIn::ReadLog,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RecordIn::ActivityLog => "activity_log",
            RecordIn::NamedConversation => "conversation_id",
            RecordIn::ReadLog => "read_log",
        }
    }

    /// The rule a tool definition declares in its `_meta`, if any.
    pub fn of(tool: &Tool) -> Option<RecordIn> {
        let declared = tool.meta.as_ref()?.0.get(RECORD_META_KEY)?.as_str()?;
        RecordIn::ALL
            .into_iter()
            .find(|rule| rule.as_str() == declared)
    }
}

/// A tool's `_meta`: where its call record goes.
pub fn records(rule: RecordIn) -> MetaObject {
    let mut meta = MetaObject::new();
    meta.0.insert(RECORD_META_KEY.into(), rule.as_str().into());
    meta
}

/// How the server learns who is calling.
#[derive(Clone)]
pub enum Identity {
    /// One user for the whole session (stdio: the token given at start, or `local`).
    Fixed(UserId),
    /// Each request names its user (HTTP: its bearer token), found in the request's
    /// extensions by a function the transport supplies.
    PerRequest(UserOfRequest),
}

/// Finds the authenticated user among a request's extensions.
pub type UserOfRequest = Arc<dyn Fn(&Extensions) -> Option<UserId> + Send + Sync>;

/// What every tool receives about its call, put in the request's extensions by
/// [`TodoServer::call_tool`] before the tool runs.
#[derive(Debug)]
pub struct Call {
    pub user: UserId,
    pub tool: String,
    /// The arguments exactly as the client sent them (what the audit record keeps).
    pub arguments: Value,
    pub started: Instant,
}

/// The todo-mcp MCP server.
#[derive(Clone)]
pub struct TodoServer {
    db: Database,
    identity: Identity,
    quotas: Quotas,
    tool_router: Arc<ToolRouter<Self>>,
    /// Where each tool's records go, from its definition.
    record_rules: Arc<HashMap<String, RecordIn>>,
    instructions: Arc<str>,
    /// Counts the calls under way, so a shutdown can wait for them.
    in_flight: Option<TaskTracker>,
}

impl TodoServer {
    pub fn new(db: Database, identity: Identity, quotas: Quotas) -> Self {
        let tool_router = Self::router();
        let tools = tool_router.list_all();
        let record_rules = tools
            .iter()
            .map(|tool| {
                let rule = RecordIn::of(tool).unwrap_or(RecordIn::ActivityLog);
                (tool.name.to_string(), rule)
            })
            .collect();
        TodoServer {
            db,
            identity,
            quotas,
            tool_router: Arc::new(tool_router),
            record_rules: Arc::new(record_rules),
            instructions: instructions(&tools).into(),
            in_flight: None,
        }
    }

    /// Every tool group's router: the one place a new group of tools is added.
    fn router() -> ToolRouter<Self> {
        Self::task_tools() + Self::conversation_tools()
    }

    /// Every tool's definition (as tools/list gives them), sorted by name.
    pub fn tools() -> Vec<Tool> {
        Self::router().list_all()
    }

    /// The server's instructions, as `initialize` gives them.
    pub fn instructions(&self) -> &str {
        &self.instructions
    }

    fn record_rule(&self, tool: &str) -> RecordIn {
        self.record_rules
            .get(tool)
            .copied()
            .unwrap_or(RecordIn::ActivityLog)
    }

    /// The same server for a session whose user is known from its start.
    pub fn for_user(&self, user: UserId) -> Self {
        TodoServer {
            identity: Identity::Fixed(user),
            ..self.clone()
        }
    }

    /// Registers every call with `tracker` while it runs.
    pub fn tracking_calls(mut self, tracker: TaskTracker) -> Self {
        self.in_flight = Some(tracker);
        self
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<UserId, ErrorData> {
        match &self.identity {
            Identity::Fixed(user) => Ok(user.clone()),
            Identity::PerRequest(find) => find(&context.extensions).ok_or_else(|| {
                ErrorData::internal_error("the request carries no authenticated user", None)
            }),
        }
    }

    /// Begins an attempt at the call's transaction and settles where its record goes.
    async fn begin_call(&self, call: &Call) -> Result<(Tx, uuid::Uuid), StoreError> {
        let mut tx = self.db.begin(Scope::User(call.user.as_str())).await?;
        match record_destination(&mut tx, call, self.record_rule(&call.tool), true).await {
            Ok(destination) => Ok((tx, destination)),
            Err(error) => Err(abandon(tx, error).await),
        }
    }

    /// Ends an attempt: on success writes the call's record in the same transaction and
    /// commits; on failure rolls back (`call_tool` records the failure afterwards).
    async fn finish_call<T: Serialize>(
        &self,
        mut tx: Tx,
        call: &Call,
        destination: uuid::Uuid,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let recorded = match result {
            Ok(value) => {
                async {
                    let json = serde_json::to_value(&value).map_err(|e| {
                        StoreError::Conflict(format!("cannot encode the result: {e}"))
                    })?;
                    let record = CallRecord {
                        tool: &call.tool,
                        arguments: &call.arguments,
                        outcome: Outcome::Success(json),
                        duration: call.started.elapsed(),
                    };
                    audit::record(&mut tx, &call.user, destination, record).await?;
                    Ok(value)
                }
                .await
            }
            Err(error) => Err(error),
        };
        match recorded {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(error) => Err(abandon(tx, error).await),
        }
    }

    /// Whether to run a failed attempt again, after a pause if so. An attempt that met a
    /// connection already closed ran nothing and runs again at once, not counted, up to
    /// once per pooled connection (a restarted server leaves the whole pool closed).
    async fn retry_after(
        &self,
        call: &Call,
        attempt: &mut u32,
        stale_connections: &mut u32,
        error: &StoreError,
    ) -> bool {
        if let StoreError::Db(DbError::StaleConnection(cause)) = error
            && *stale_connections < self.db.max_connections()
        {
            tracing::info!(tool = %call.tool, user = %call.user, %cause, "retrying the call's transaction on another connection: its pooled one was closed");
            *stale_connections += 1;
            return true;
        }
        if !error.is_retryable() || *attempt >= ATTEMPTS {
            return false;
        }
        tracing::info!(tool = %call.tool, user = %call.user, attempt = *attempt, %error, "retrying the call's transaction");
        tokio::time::sleep(backoff(*attempt)).await;
        *attempt += 1;
        true
    }

    /// Records a failed call, in a transaction of its own (the call's was rolled back).
    async fn record_failure(&self, call: &Call, failure: &ToolError) {
        let result: Result<(), StoreError> = async {
            let mut tx = self.db.begin(Scope::User(call.user.as_str())).await?;
            let destination =
                record_destination(&mut tx, call, self.record_rule(&call.tool), false).await?;
            let record = CallRecord {
                tool: &call.tool,
                arguments: &call.arguments,
                outcome: Outcome::Failure {
                    kind: failure.kind,
                    message: &failure.message,
                },
                duration: call.started.elapsed(),
            };
            audit::record(&mut tx, &call.user, destination, record).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(tool = %call.tool, user = %call.user, %error, "could not record a failed call");
        }
    }
}

/// Runs one tool call's transaction: `$body`, a block using `$tx: &mut Tx` and evaluating
/// to `Result<T, StoreError>`, between [`TodoServer::begin_call`] and
/// [`TodoServer::finish_call`]. An attempt that failed without committing anything (a
/// deadlock, a serialization failure, a connection lost before COMMIT) runs again, up to
/// [`ATTEMPTS`] in all. (A macro, not a method taking an async closure: the closure's
/// borrowed future could not be proven `Send` for every lifetime, which rmcp requires.)
macro_rules! transact {
    ($server:expr, $call:expr, |$tx:ident| $body:block) => {{
        let server: &$crate::tools::TodoServer = $server;
        let call: &$crate::tools::Call = &$call;
        let mut attempt = 1;
        let mut stale_connections = 0;
        loop {
            let outcome = match server.begin_call(call).await {
                Ok((mut tx, destination)) => {
                    let result: Result<_, $crate::store::StoreError> = async {
                        let $tx = &mut tx;
                        $body
                    }
                    .await;
                    server.finish_call(tx, call, destination, result).await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Err(error)
                    if server
                        .retry_after(call, &mut attempt, &mut stale_connections, &error)
                        .await => {}
                outcome => {
                    break outcome
                        .map(rmcp::Json)
                        .map_err($crate::tools::ToolError::from);
                }
            }
        }
    }};
}
use transact;

/// How many times a call's transaction runs at most when it keeps failing retryably.
const ATTEMPTS: u32 = 3;

/// The pause before attempt `attempt + 1`: growing, and jittered so that the
/// transactions that collided do not collide again in step.
fn backoff(attempt: u32) -> std::time::Duration {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos())
            % 10,
    );
    std::time::Duration::from_millis(u64::from(attempt) * 10 + jitter)
}

/// Where a call's record goes: the conversation its `conversation_id` names (task tools),
/// else the caller's activity log, and never into a conversation the call reads.
///
/// `strict`: on the success path an unknown `conversation_id` is the call's error; when
/// recording a failure it just falls back to the activity log.
async fn record_destination(
    tx: &mut Tx,
    call: &Call,
    rule: RecordIn,
    strict: bool,
) -> Result<uuid::Uuid, StoreError> {
    let calls_log = ActivityLog::Calls.id(&call.user);
    let named = call
        .arguments
        .get("conversation_id")
        .and_then(Value::as_str);
    let Some(named) = named else {
        return Ok(calls_log);
    };
    match rule {
        RecordIn::ActivityLog => return Ok(calls_log),
        RecordIn::ReadLog => {
            return Ok(match parse_uuid("conversation_id", named) {
                Ok(read) => ActivityLog::for_reading(&call.user, read),
                Err(_) => calls_log,
            });
        }
        RecordIn::NamedConversation => {}
    }
    let owned = match parse_uuid("conversation_id", named) {
        Ok(id) => conversation_store::get(tx, &call.user, id)
            .await
            .map(|_| id),
        Err(error) => Err(error),
    };
    match owned {
        Ok(id) => Ok(id),
        Err(error) if strict => Err(error),
        Err(StoreError::Db(error)) => Err(StoreError::Db(error)),
        Err(_) => Ok(calls_log),
    }
}

/// Rolls back a failed attempt. An error met on a connection that turned out already
/// closed becomes [`DbError::StaleConnection`]: nothing of the attempt ran.
async fn abandon(tx: Tx, error: StoreError) -> StoreError {
    let error = match error {
        StoreError::Db(DbError::ConnectionLost(cause)) if tx.found_dead() => {
            StoreError::Db(DbError::StaleConnection(cause))
        }
        error => error,
    };
    rollback(tx).await;
    error
}

async fn rollback(tx: Tx) {
    if let Err(error) = tx.rollback().await {
        // The pool discards a connection left in a transaction, so this loses nothing.
        tracing::warn!(%error, "rollback failed");
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TodoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("todo-mcp", env!("CARGO_PKG_VERSION"))
                    .with_title("todo-mcp")
                    .with_description(env!("CARGO_PKG_DESCRIPTION")),
            )
            .with_instructions(self.instructions.to_string())
    }

    /// Every tool, on one page. A `cursor` can only be one we never gave out: -32602, as
    /// the pagination rules ask for an invalid cursor.
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if let Some(cursor) = request.and_then(|r| r.cursor) {
            return Err(ErrorData::invalid_params(
                format!(
                    "invalid cursor {}: tools/list returns every tool on its first page",
                    quote(&cursor)
                ),
                None,
            ));
        }
        // Newer clients may cache the list: it only changes with the server's version.
        let cache_hints = context
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28);
        Ok(ListToolsResult {
            result_type: Some(ResultType::COMPLETE),
            tools: self.tool_router.list_all(),
            meta: None,
            next_cursor: None,
            ttl_ms: cache_hints.then_some(0),
            cache_scope: cache_hints.then_some(CacheScope::Public),
        })
    }

    /// rmcp routes a known method whose params don't parse (`tools/call` with `arguments`
    /// a string, say) here, and by default answers "method not found": say what is wrong.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let method = request.method;
        if MCP_METHODS.contains(&method.as_str()) {
            let shown = request
                .params
                .map_or_else(|| "no params".to_owned(), |p| shorten(&p.to_string(), 200));
            return Err(ErrorData::invalid_params(
                format!("invalid params for {method}: {shown}"),
                None,
            ));
        }
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
            None,
        ))
    }

    /// Every call goes through here: it names the caller, runs the tool, and records the
    /// call if it failed (a successful call recorded itself inside its transaction).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _running = self.in_flight.as_ref().map(TaskTracker::token);
        let call = Arc::new(Call {
            user: self.caller(&context)?,
            tool: request.name.to_string(),
            arguments: Value::Object(request.arguments.clone().unwrap_or_default()),
            started: Instant::now(),
        });
        context.extensions.insert(call.clone());
        let (response, failure) = FAILURE
            .scope(RefCell::new(None), async {
                let response = self
                    .tool_router
                    .call(ToolCallContext::new(self, request, context))
                    .await;
                (response, FAILURE.with(RefCell::take))
            })
            .await;
        let failure = match (&response, failure) {
            (_, Some(failure)) => Some(failure),
            (Ok(CallToolResponse::Complete(result)), None) if result.is_error == Some(true) => {
                // Every failure of ours goes through ToolError: this one did not.
                let text = text_of(result);
                tracing::warn!(tool = %call.tool, text = %shorten(&text, 200), "a tool failed without a ToolError");
                Some(ToolError::new(ErrorKind::Internal, text))
            }
            (Ok(_), None) => None,
            (Err(error), None) if !self.tool_router.has_route(&call.tool) => Some(ToolError::new(
                ErrorKind::UnknownTool,
                shorten(&error.message, MESSAGE_CHARS),
            )),
            (Err(error), None) => Some(ToolError::new(
                ErrorKind::ProtocolError,
                shorten(&error.message, MESSAGE_CHARS),
            )),
        };
        let duration_ms = call.started.elapsed().as_secs_f64() * 1000.0;
        match failure {
            None => tracing::info!(tool = %call.tool, user = %call.user, duration_ms, "call ok"),
            Some(failure) => {
                tracing::info!(tool = %call.tool, user = %call.user, duration_ms, kind = %failure.kind, message = %failure.message, "call failed");
                if failure.kind == ErrorKind::Unavailable {
                    // The record would wait on the same unreachable database: answer now
                    // and record in the background, once a connection can be had.
                    let server = self.clone();
                    let call = call.clone();
                    tokio::spawn(async move { server.record_failure(&call, &failure).await });
                } else {
                    self.record_failure(&call, &failure).await;
                }
            }
        }
        response
    }
}

tokio::task_local! {
    /// The failure of the tool call being served, put there by the [`ToolError`] the tool
    /// returned, so that [`TodoServer::call_tool`] records its kind from the value itself.
    static FAILURE: RefCell<Option<ToolError>>;
}

/// MCP methods rmcp knows: it hands a request for one of them here only when its params
/// did not fit the method's shape.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// The most characters of an error message a client, the log or an audit record gets: a
/// refused value is quoted within it, short ([`crate::store::quote`]).
const MESSAGE_CHARS: usize = 300;

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool's failure as the client sees it: `is_error` with the text `kind: message`.
#[derive(Debug, Clone)]
pub struct ToolError {
    kind: ErrorKind,
    message: String,
}

impl ToolError {
    fn new(kind: ErrorKind, message: String) -> Self {
        ToolError { kind, message }
    }
}

impl From<StoreError> for ToolError {
    fn from(error: StoreError) -> Self {
        if let StoreError::Db(DbError::Query(_) | DbError::Migration(_) | DbError::InvalidUrl(_)) =
            &error
        {
            tracing::error!(%error, "unexpected database error");
        }
        ToolError::new(error.kind(), shorten(&error.to_string(), MESSAGE_CHARS))
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let result = CallToolResult::error(vec![ContentBlock::text(self.to_string())]);
        // Outside a call (never, in this server) there is nobody to tell: the text stands.
        let _ = FAILURE.try_with(|slot| *slot.borrow_mut() = Some(self));
        Ok(result.into())
    }
}

/// Tool arguments, deserialized so that an error names the field at fault
/// (`invalid \`limit\`: invalid type: string "x", expected i64`). Its schema is `T`'s.
/// Deserializing it never fails: a bad argument is kept as the tool's [`ToolError`], which
/// [`Checked::get`] returns, so it is answered and recorded like every other failure.
pub struct Checked<T>(Result<T, ToolError>);

impl<T> Checked<T> {
    pub fn get(self) -> Result<T, ToolError> {
        self.0
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Checked(serde_path_to_error::deserialize(value).map_err(
            |error| {
                let path = error.path().to_string();
                let inner = error.into_inner().to_string();
                let message = if path == "." {
                    inner
                } else {
                    format!("invalid `{}`: {inner}", shorten(&path, 100))
                };
                ToolError::new(ErrorKind::InvalidArgument, shorten(&message, MESSAGE_CHARS))
            },
        )))
    }
}

impl<T: JsonSchema> JsonSchema for Checked<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool that forgot `meta = records(…)` would silently record into the activity log.
    #[test]
    fn every_tool_declares_where_its_records_go() {
        for tool in TodoServer::tools() {
            assert!(
                RecordIn::of(&tool).is_some(),
                "{} has no `meta = records(RecordIn::…)`",
                tool.name
            );
        }
    }

    #[test]
    fn instructions_name_every_tool() {
        let tools = TodoServer::tools();
        let text = instructions(&tools);
        for tool in &tools {
            assert!(text.contains(tool.name.as_ref()), "{} missing", tool.name);
        }
    }
}
