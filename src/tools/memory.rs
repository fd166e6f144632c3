//! Agent memory tools: an agent's state per conversation, versioned.

use super::{Call, Checked, RecordIn, TodoServer, ToolError, records, tool_result};
use crate::store::agent_state::{self, AgentState, SavedState};
use crate::store::conversations::{self, Message, NewMessage, Role};
use crate::store::parse_uuid;
use crate::store::search::{self, Search, SearchHit};
use crate::store::turns::{self, Turn, TurnRequest};
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveAgentStateArgs {
    /// The conversation (UUID) the state belongs to.
    pub conversation_id: String,
    /// The agent's state: any JSON object (the serialized state of its graph or planner),
    /// up to the server's --max-state-bytes (1 MiB by default).
    pub state: Map<String, Value>,
    /// Save only if the current version is this one (compare-and-set): 0 means "no state
    /// yet". Another version gets `conflict` and writes nothing.
    #[serde(default)]
    pub expected_version: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetAgentStateArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// An earlier version to read (the latest ones are kept, up to --max-state-versions);
    /// default the latest.
    #[serde(default)]
    pub version: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitTurnArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// The turn's messages, appended in this order (at most 100): the user's, the
    /// assistant's (with the tool calls its model made), and the results of those calls
    /// (`role: tool` with `tool_call_id`).
    #[serde(default)]
    pub messages: Vec<NewMessage>,
    /// The agent's state after the turn, saved as the next version in the same
    /// transaction.
    #[serde(default)]
    pub state: Option<Map<String, Value>>,
    /// With `state`: save (and so commit the turn) only if the current version is this one
    /// (0: none yet); else `conflict` and nothing is written.
    #[serde(default)]
    pub expected_version: Option<i32>,
    /// A key for retries: a turn committed with it is returned again (`replayed: true`)
    /// instead of being written twice. Up to 200 characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PoppedMessage {
    /// The message taken back; null when the conversation had none to pop.
    pub message: Option<Message>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ClearedConversation {
    pub conversation_id: String,
    /// How many messages were hidden.
    pub cleared: usize,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchMessagesArgs {
    /// Words to find, web-search style: every word must occur; "a phrase" in order;
    /// `or` between two terms for either; -word to exclude. Case-insensitive, whole words.
    pub query: String,
    /// Only this conversation (UUID).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Only messages of this role (`user`, `assistant`, `system` or `tool`).
    #[serde(default)]
    pub role: Option<Role>,
    /// Also search the server's call records (default false).
    #[serde(default)]
    pub include_call_records: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (same query and filters).
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    /// Best match first.
    pub hits: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[tool_router(router = memory_tools, vis = "pub(super)")]
impl TodoServer {
    #[tool(
        description = "Save the agent's state for a conversation as its next version (1, 2, …). With expected_version, only if the current version is that one (0: none yet), else conflict and nothing saved. Earlier versions stay readable with get_agent_state, up to the server's limit.",
        annotations(
            title = "Save agent state",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn save_agent_state(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<SaveAgentStateArgs>>,
    ) -> Result<Json<SavedState>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            agent_state::save(
                tx,
                conversation_id,
                &args.state,
                args.expected_version,
                &self.quotas,
            )
            .await
        })
    }

    #[tool(
        description = "Read the agent's state for a conversation: the latest version, or `version`. When none was saved: state null, version 0.",
        annotations(
            title = "Get agent state",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn get_agent_state(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<GetAgentStateArgs>>,
    ) -> Result<Json<AgentState>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            agent_state::get(tx, conversation_id, args.version).await
        })
    }

    #[tool(
        description = "Commit one agent turn, all or nothing: append its messages in order and save the agent's state, in one transaction. A stale expected_version or any bad message writes nothing. With an idempotency_key, a retry returns the first commit's result (replayed: true) and writes nothing twice.",
        annotations(
            title = "Commit turn",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn commit_turn(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<CommitTurnArgs>>,
    ) -> Result<Json<Turn>, ToolError> {
        let args = args.get()?;
        let conversation = parse_uuid("conversation_id", &args.conversation_id)?;
        let request = TurnRequest {
            conversation,
            messages: &args.messages,
            state: args.state.as_ref(),
            expected_version: args.expected_version,
            idempotency_key: args.idempotency_key.as_deref(),
        };
        tool_result!(self, call, |tx| {
            turns::commit(tx, &request, &self.quotas).await
        })
    }

    #[tool(
        description = "Take back the latest message the agent appended to a conversation (not a call record) and return it (null when there is none): hidden from get_conversation_history and not counted against the quota, still kept in the audit trail.",
        annotations(
            title = "Pop message",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn pop_message(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ConversationArgs>>,
    ) -> Result<Json<PoppedMessage>, ToolError> {
        let args = args.get()?;
        let conversation = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let message = conversations::pop_message(tx, conversation).await?;
            Ok(PoppedMessage { message })
        })
    }

    #[tool(
        description = "Hide every message the agent appended to a conversation (the server's call records stay): the history starts empty, the quota is freed, the audit trail keeps them.",
        annotations(
            title = "Clear conversation",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn clear_conversation(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ConversationArgs>>,
    ) -> Result<Json<ClearedConversation>, ToolError> {
        let args = args.get()?;
        let conversation = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let cleared = conversations::clear(tx, conversation).await?;
            Ok(ClearedConversation {
                conversation_id: conversation.to_string(),
                cleared,
            })
        })
    }

    #[tool(
        description = "Search the user's messages across conversations, best match first among the newest 1,000 matches, then the next 1,000: every word must occur; \"a phrase\" in order; `or` for either; -word to exclude. Each hit has the message, its conversation and a snippet with the words found [marked]. The server's call records only with include_call_records.",
        annotations(
            title = "Search messages",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn search_messages(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<SearchMessagesArgs>>,
    ) -> Result<Json<SearchResult>, ToolError> {
        let args = args.get()?;
        let conversation = args
            .conversation_id
            .as_deref()
            .map(|id| parse_uuid("conversation_id", id))
            .transpose()?;
        let request = Search {
            query: &args.query,
            conversation,
            role: args.role.map(Role::as_str),
            include_call_records: args.include_call_records.unwrap_or(false),
            limit: args.limit,
            cursor: args.cursor.as_deref(),
        };
        tool_result!(self, call, |tx| {
            let (hits, next_cursor) = search::search(tx, &request, &self.cursors).await?;
            Ok(SearchResult { hits, next_cursor })
        })
    }
}
