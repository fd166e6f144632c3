//! Agent memory tools: an agent's state per conversation, versioned.

use super::{Call, Checked, RecordIn, TodoServer, ToolError, records, tool_result};
use crate::store::agent_state::{self, AgentState, SavedState};
use crate::store::conversations::Role;
use crate::store::parse_uuid;
use crate::store::turns::{self, Turn, TurnMessage, TurnRequest};
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
pub struct TurnMessageArgs {
    /// Who speaks: `user`, `assistant` or `system`.
    pub role: Role,
    /// The message text, up to 100,000 characters.
    pub content: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitTurnArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// The turn's messages, appended in this order (at most 100).
    #[serde(default)]
    pub messages: Vec<TurnMessageArgs>,
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
        let messages: Vec<TurnMessage> = args
            .messages
            .iter()
            .map(|m| TurnMessage {
                role: m.role,
                content: &m.content,
            })
            .collect();
        let request = TurnRequest {
            conversation,
            messages: &messages,
            state: args.state.as_ref(),
            expected_version: args.expected_version,
            idempotency_key: args.idempotency_key.as_deref(),
        };
        tool_result!(self, call, |tx| {
            turns::commit(tx, &request, &self.quotas).await
        })
    }
}
