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
pub mod memory;
pub mod tasks;

use crate::db::{Database, DbError};
use crate::metrics::{self, Outcome, ToolMetrics};
pub use crate::store::calls::{Call, RecordIn};
use crate::store::cursor::CursorKey;
use crate::store::scopes::{Caller, TodoScope};
use crate::store::{ErrorKind, Quotas, StoreError, quote, shorten};
use crate::store::{calls, secrets};
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
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// The `_meta` key naming where a tool's call record goes ([`RecordIn::as_str`]).
pub const RECORD_META_KEY: &str = "todo-mcp/call-record";

/// Where a tool's records go, as its definition declares (`#[tool(meta =
/// records(RecordIn::…))]`), if it does.
pub fn records_in(tool: &Tool) -> Option<RecordIn> {
    let declared = tool.meta.as_ref()?.0.get(RECORD_META_KEY)?.as_str()?;
    RecordIn::ALL
        .into_iter()
        .find(|rule| rule.as_str() == declared)
}

/// A tool's `_meta`: where its call record goes.
pub fn records(rule: RecordIn) -> MetaObject {
    let mut meta = MetaObject::new();
    meta.0.insert(RECORD_META_KEY.into(), rule.as_str().into());
    meta
}

/// The scope a tool needs: `todo:read` for a read-only tool (its `read_only_hint`), else
/// `todo:write`. Derived from the definition, so a tool cannot be listed one way and
/// guarded another.
pub fn scope_needed(tool: &Tool) -> TodoScope {
    let read_only = tool
        .annotations
        .as_ref()
        .and_then(|a| a.read_only_hint)
        .unwrap_or(false);
    if read_only {
        TodoScope::Read
    } else {
        TodoScope::Write
    }
}

/// How the server learns who is calling.
#[derive(Clone)]
pub enum Identity {
    /// One caller for the whole session (stdio without a token: `local`).
    Fixed(Caller),
    /// One caller for the whole session, whose credential is checked again on a call made
    /// long enough after the last check (stdio with a token: revoked or expired, it stops
    /// serving).
    Rechecked(Caller, Arc<Recheck>),
    /// Each request names its caller (HTTP: its bearer token), found in the request's
    /// extensions by a function the transport supplies.
    PerRequest(CallerOfRequest),
}

/// Why a session's credential no longer serves, from [`Recheck`]'s check.
#[derive(Debug, Clone)]
pub enum Lapse {
    /// Revoked, expired, or otherwise refused: for good.
    Refused(String),
    /// It could not be checked now (the database is down): this call fails, the next one
    /// checks again.
    Unavailable,
}

/// Checks a session's credential again: `Ok` while it still names the session's user.
pub type CheckCredential = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Lapse>> + Send>>
        + Send
        + Sync,
>;

/// A long session's credential, checked again on any call made more than `every` after
/// the last check.
pub struct Recheck {
    every: Duration,
    check: CheckCredential,
    state: tokio::sync::Mutex<RecheckState>,
}

struct RecheckState {
    last_checked: Instant,
    refused: Option<String>,
}

impl Recheck {
    /// A credential checked just now (at the session's start).
    pub fn new(every: Duration, check: CheckCredential) -> Self {
        Recheck {
            every,
            check,
            state: tokio::sync::Mutex::new(RecheckState {
                last_checked: Instant::now(),
                refused: None,
            }),
        }
    }

    /// Whether the session may still act: checks again when the last check is old.
    async fn still_valid(&self) -> Result<(), ErrorData> {
        let mut state = self.state.lock().await;
        if state.refused.is_none() && state.last_checked.elapsed() > self.every {
            match (self.check)().await {
                Ok(()) => state.last_checked = Instant::now(),
                Err(Lapse::Refused(reason)) => {
                    tracing::warn!(%reason, "the session's credential no longer serves: refusing every call");
                    state.refused = Some(reason);
                }
                Err(Lapse::Unavailable) => {
                    return Err(ErrorData::internal_error(
                        "storage unavailable, retry: the session's credential cannot be checked",
                        None,
                    ));
                }
            }
        }
        match &state.refused {
            None => Ok(()),
            Some(reason) => Err(ErrorData::invalid_request(
                format!(
                    "this session's credential was refused ({reason}): the server no longer \
                     acts for it; restart it with a valid TODO_MCP_TOKEN"
                ),
                None,
            )),
        }
    }
}

/// Finds the authenticated caller among a request's extensions.
pub type CallerOfRequest = Arc<dyn Fn(&Extensions) -> Option<Caller> + Send + Sync>;

/// What the server derives from each tool's definition.
#[derive(Debug, Clone)]
struct ToolRule {
    records_in: RecordIn,
    scope: TodoScope,
    /// Its calls' series, made once so that a call records without a lookup.
    metrics: ToolMetrics,
}

/// The todo-mcp MCP server.
#[derive(Clone)]
pub struct TodoServer {
    db: Database,
    identity: Identity,
    quotas: Quotas,
    /// Signs and checks list cursors.
    cursors: CursorKey,
    tool_router: Arc<ToolRouter<Self>>,
    /// Where each tool's records go and the scope it needs, from its definition.
    tool_rules: Arc<HashMap<String, ToolRule>>,
    /// The series of calls to tools the server does not have (one, whatever the name).
    unknown_tool: ToolMetrics,
    instructions: Arc<str>,
    /// Counts the calls under way, so a shutdown can wait for them.
    in_flight: Option<TaskTracker>,
}

impl TodoServer {
    /// The server, with the cursor key every replica shares (made on first start).
    pub async fn new(db: Database, identity: Identity, quotas: Quotas) -> Result<Self, StoreError> {
        let cursors = secrets::cursor_key(&db).await?;
        let tool_router = Self::router();
        let tools = tool_router.list_all();
        let tool_rules = tools
            .iter()
            .map(|tool| {
                let rule = ToolRule {
                    records_in: records_in(tool).unwrap_or(RecordIn::ActivityLog),
                    scope: scope_needed(tool),
                    metrics: metrics::global().tool(&tool.name),
                };
                (tool.name.to_string(), rule)
            })
            .collect();
        Ok(TodoServer {
            db,
            identity,
            quotas,
            cursors,
            tool_router: Arc::new(tool_router),
            tool_rules: Arc::new(tool_rules),
            unknown_tool: metrics::global().tool(metrics::UNKNOWN_TOOL),
            instructions: instructions(&tools).into(),
            in_flight: None,
        })
    }

    /// Every tool group's router: the one place a new group of tools is added.
    fn router() -> ToolRouter<Self> {
        Self::task_tools() + Self::conversation_tools() + Self::memory_tools()
    }

    /// Every tool's definition (as tools/list gives them), sorted by name.
    pub fn tools() -> Vec<Tool> {
        Self::router().list_all()
    }

    /// The scope calling `tool` needs, if the server has such a tool.
    pub fn scope_needed(&self, tool: &str) -> Option<TodoScope> {
        self.tool_rules.get(tool).map(|rule| rule.scope)
    }

    /// The same server for a session whose caller is known from its start.
    pub fn for_caller(&self, caller: Caller) -> Self {
        TodoServer {
            identity: Identity::Fixed(caller),
            ..self.clone()
        }
    }

    /// Registers every call with `tracker` while it runs.
    pub fn tracking_calls(mut self, tracker: TaskTracker) -> Self {
        self.in_flight = Some(tracker);
        self
    }

    async fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        match &self.identity {
            Identity::Fixed(caller) => Ok(caller.clone()),
            Identity::Rechecked(caller, recheck) => {
                recheck.still_valid().await?;
                Ok(caller.clone())
            }
            Identity::PerRequest(find) => find(&context.extensions).ok_or_else(|| {
                ErrorData::internal_error("the request carries no authenticated user", None)
            }),
        }
    }

    /// The refusal of a call the caller's scopes do not allow.
    fn refuse_scope(&self, caller: &Caller, tool: &str) -> Option<ToolError> {
        let needed = self.scope_needed(tool)?;
        (!caller.scopes.allows(needed)).then(|| {
            let held = caller.scopes.to_oauth();
            ToolError::new(
                ErrorKind::InsufficientScope,
                format!(
                    "{tool} needs the {needed} scope; this credential has {}",
                    if held.is_empty() {
                        "none of todo:read, todo:write".to_owned()
                    } else {
                        held
                    }
                ),
            )
        })
    }
}

/// A tool's result from its body, run in its call's transaction ([`crate::transact!`]):
/// `$body` is a block using `$tx: &mut UserTx` and evaluating to `Result<T, StoreError>`.
macro_rules! tool_result {
    ($server:expr, $call:expr, |$tx:ident| $body:block) => {
        $crate::transact!(&$server.db, &$call, |$tx| $body)
            .map(rmcp::Json)
            .map_err($crate::tools::ToolError::from)
    };
}
use tool_result;

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
        let caller = self.caller(&context).await?;
        let refusal = self.refuse_scope(&caller, &request.name);
        let rule = self.tool_rules.get(request.name.as_ref());
        let tool_metrics = rule.map_or(&self.unknown_tool, |rule| &rule.metrics);
        let call = Arc::new(Call {
            user: caller.user,
            tool: shorten(&request.name, calls::TOOL_NAME_CHARS),
            arguments: Value::Object(request.arguments.clone().unwrap_or_default()),
            started: Instant::now(),
            records_in: rule.map_or(RecordIn::ActivityLog, |rule| rule.records_in),
            retries: Default::default(),
        });
        context.extensions.insert(call.clone());
        let (response, failure) = match refusal {
            Some(refusal) => (refusal.clone().into_call_tool_result(), Some(refusal)),
            None => {
                FAILURE
                    .scope(RefCell::new(None), async {
                        let response = self
                            .tool_router
                            .call(ToolCallContext::new(self, request, context))
                            .await;
                        (response, FAILURE.with(RefCell::take))
                    })
                    .await
            }
        };
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
        // To a hundredth of a millisecond: finer digits are noise in a log line.
        let duration_ms = (call.started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
        let outcome = failure
            .as_ref()
            .map_or(Outcome::Ok, |failure| Outcome::Failed(failure.kind));
        match failure {
            None => tracing::info!(tool = %call.tool, user = %call.user, duration_ms, "call ok"),
            Some(failure) => {
                tracing::info!(tool = %call.tool, user = %call.user, duration_ms, kind = %failure.kind, message = %failure.message, "call failed");
                if failure.not_run {
                    // It never had a connection, so nothing of it was done (an earlier
                    // attempt, if any, was rolled back whole): counted, not recorded, as
                    // README's audit rule says. Its record would need the connection it
                    // could not get.
                    metrics::global().call_not_run();
                } else if failure.kind == ErrorKind::Unavailable {
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
        // After the failure's record: the client waited for it too.
        tool_metrics.record(outcome, call.started.elapsed(), &call.retries);
        response
    }
}

impl TodoServer {
    /// Records a failed call, within its user's hourly budget of failure records; past
    /// it, the failure is counted in the metrics instead (and logged once an hour a user).
    async fn record_failure(&self, call: &Call, failure: &ToolError) {
        let budget = self.quotas.failure_records_per_hour;
        let recorded =
            calls::record_failure(&self.db, call, failure.kind, &failure.message, budget).await;
        if let calls::FailureRecord::OverBudget { this_hour } = recorded {
            metrics::global().failure_record_skipped();
            if this_hour == budget.saturating_add(1) {
                tracing::warn!(
                    user = %call.user,
                    budget,
                    "this user's failed calls have had this hour's records \
                     (--max-failure-records-per-hour): further failures this hour are counted \
                     in todo_mcp_failure_records_skipped_total, not recorded"
                );
            }
        }
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
    /// Nothing of the call was done: it never had a database connection.
    not_run: bool,
}

impl ToolError {
    fn new(kind: ErrorKind, message: String) -> Self {
        ToolError {
            kind,
            message,
            not_run: false,
        }
    }
}

impl From<StoreError> for ToolError {
    fn from(error: StoreError) -> Self {
        if let StoreError::Db(DbError::Query(_) | DbError::Migration(_) | DbError::InvalidUrl(_)) =
            &error
        {
            tracing::error!(%error, "unexpected database error");
        }
        ToolError {
            not_run: matches!(error, StoreError::Db(DbError::Unavailable(_))),
            ..ToolError::new(error.kind(), shorten(&error.to_string(), MESSAGE_CHARS))
        }
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
/// (`invalid \`limit\`: invalid type: string "x", expected an integer`). Its schema is `T`'s.
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
                let inner = in_json_terms(&error.into_inner().to_string());
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

/// serde's message for a bad value, in the terms of JSON that a client sent rather than
/// of the Rust type it was read into: `invalid type: floating point \`1.5\`, expected i64`
/// becomes `invalid type: number 1.5, expected an integer`. serde words these messages
/// as `invalid type|value: <what came>, expected <what was wanted>` or `unknown variant
/// \`<what came>\`, expected one of …` (de::Error's defaults); anything else passes through
/// unchanged. What came is quoted short, so that what was wanted (the allowed values of
/// `priority`, `role`, `sort`) is still there after a huge value.
fn in_json_terms(message: &str) -> String {
    let Some((got, wanted)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let got = match got.split_once(": ") {
        Some((what @ ("invalid type" | "invalid value"), value)) => {
            format!("{what}: {}", json_value(value))
        }
        _ => match got
            .strip_prefix("unknown variant `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            Some(variant) => format!("unknown variant {}", quote(variant)),
            None => got.to_owned(),
        },
    };
    format!("{got}, expected {}", json_type(wanted))
}

/// serde's `Unexpected` as JSON names it.
fn json_value(value: &str) -> String {
    let inner = |prefix: &str| {
        value
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(number) = inner("integer `").or_else(|| inner("floating point `")) {
        return format!("number {number}");
    }
    if let Some(boolean) = inner("boolean `") {
        return boolean;
    }
    // serde quotes a string in full: a long one is quoted short, as every refusal does.
    if let Some(text) = value
        .strip_prefix("string \"")
        .and_then(|rest| rest.strip_suffix('"'))
        && text.chars().nth(crate::store::QUOTED_CHARS).is_some()
    {
        return format!("string {}", quote(text));
    }
    match value {
        "unit value" | "Option value" => "null".into(),
        "sequence" => "array".into(),
        "map" => "object".into(),
        other => other.into(),
    }
}

/// A serde visitor's `expecting` as JSON names the type.
fn json_type(wanted: &str) -> String {
    match wanted {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "f32" | "f64" => "a number".into(),
        "a borrowed string" | "a character" | "a char" => "a string".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        "unit" => "null".into(),
        other if other.starts_with("struct ") => "an object".into(),
        other => other.into(),
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
        let mut schema = T::json_schema(generator);
        not_null_unless_it_clears(&mut schema);
        schema
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// Marks an argument whose `null` means something (it clears the value: update_task's
/// `due`, `parent_task_id`, `repeat`); its schema keeps `null` among its types.
pub const NULL_CLEARS: &str = "x-null-clears";

/// An optional argument's schema is its plain type (`array`, not `["array", "null"]`),
/// `null` still accepted as leaving it out, unless it is marked [`NULL_CLEARS`]: clients
/// that build arguments from the schema (the MCP Inspector's older forms) send a value of
/// a `["boolean", "null"]` argument as the string "true".
fn not_null_unless_it_clears(schema: &mut schemars::Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for property in properties.values_mut() {
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        if property.get(NULL_CLEARS) == Some(&Value::Bool(true)) {
            continue;
        }
        let mut stripped = false;
        if let Some(Value::Array(types)) = property.get("type") {
            let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            if kept.len() < types.len() {
                stripped = true;
                let plain = match <[Value; 1]>::try_from(kept) {
                    Ok([only]) => only,
                    Err(several) => Value::Array(several),
                };
                property.insert("type".into(), plain);
            }
        }
        if let Some(Value::Array(branches)) = property.get("anyOf") {
            let others: Vec<Value> = branches
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .cloned()
                .collect();
            if others.len() == 1 && branches.len() == 2 {
                property.remove("anyOf");
                if let Value::Object(other) = &others[0] {
                    for (key, value) in other {
                        property.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
                stripped = true;
            }
        }
        if stripped && property.get("default") == Some(&Value::Null) {
            property.remove("default");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    /// Real serde messages (from deserializing, not written here) come out in JSON's terms.
    #[test]
    fn type_errors_speak_json() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            x: String,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Args {
            limit: Option<i64>,
            count: Option<u32>,
            ratio: Option<f64>,
            flag: Option<bool>,
            names: Option<Vec<String>>,
            inner: Option<Inner>,
            title: Option<String>,
            priority: Option<crate::store::task_fields::Priority>,
        }
        let cases = [
            (
                json!({"limit": 1.5}),
                "invalid `limit`: invalid type: number 1.5, expected an integer",
            ),
            (
                json!({"limit": "x"}),
                "invalid `limit`: invalid type: string \"x\", expected an integer",
            ),
            (
                json!({"count": -1}),
                "invalid `count`: invalid value: number -1, expected a non-negative integer",
            ),
            (
                json!({"ratio": "x"}),
                "invalid `ratio`: invalid type: string \"x\", expected a number",
            ),
            (
                json!({"flag": 1}),
                "invalid `flag`: invalid type: number 1, expected a boolean",
            ),
            (
                json!({"names": {"a": 1}}),
                "invalid `names`: invalid type: object, expected an array",
            ),
            (
                json!({"inner": "x"}),
                "invalid `inner`: invalid type: string \"x\", expected an object",
            ),
            (
                json!({"title": true}),
                "invalid `title`: invalid type: true, expected a string",
            ),
            (
                json!({"limit": "9".repeat(5_000)}),
                "invalid `limit`: invalid type: string `9999999999999999999999999999999999999999…` \
                 (5000 characters), expected an integer",
            ),
            (
                json!({"priority": "x".repeat(100_000)}),
                "invalid `priority`: unknown variant `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` \
                 (100000 characters), expected one of `low`, `normal`, `high`, `urgent`",
            ),
            (
                json!({"priority": "HIGH"}),
                "invalid `priority`: unknown variant `HIGH`, expected one of `low`, `normal`, \
                 `high`, `urgent`",
            ),
        ];
        for (args, expected) in cases {
            let checked: Checked<Args> = serde_json::from_value(args.clone()).expect("never fails");
            let error = checked.get().expect_err("bad arguments").to_string();
            assert_eq!(error, format!("invalid_argument: {expected}"), "for {args}");
        }
    }

    /// A tool that forgot `meta = records(…)` would silently record into the activity log.
    #[test]
    fn every_tool_declares_where_its_records_go() {
        for tool in TodoServer::tools() {
            assert!(
                records_in(&tool).is_some(),
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
