//! Conversation tools.

use super::{Call, Checked, RecordIn, TodoServer, ToolError, records, tool_result};
use crate::store::conversations::{self, AgentToolCall, Conversation, Message, NewMessage, Role};
use crate::store::parse_uuid;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartConversationArgs {
    /// Optional title, up to 500 characters.
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListConversationsArgs {
    /// Include archived conversations (default false).
    #[serde(default)]
    pub include_archived: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendMessageArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// Who speaks: `user`, `assistant`, `system`, or `tool` (the result of one of the
    /// agent's tool calls: give `tool_call_id`).
    pub role: Role,
    /// The message text, up to 100,000 characters. May be empty only on an assistant
    /// message with `tool_calls`.
    #[serde(default)]
    pub content: String,
    /// Assistant messages only: the tool calls the model made, `[{id, name, arguments}]`.
    #[serde(default)]
    pub tool_calls: Option<Vec<AgentToolCall>>,
    /// `tool` messages only (and required there): the id of the call this result answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// How many of the latest messages, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Only messages with ids below this: pass the previous page's `next_cursor`.
    #[serde(default)]
    pub before: Option<i64>,
    /// Include the server's records of tool calls made to it (`kind: call_record`);
    /// default true. An agent rebuilding its model's context passes false.
    #[serde(default)]
    pub include_call_records: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSummaryArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
    /// Summary of the conversation so far, up to 100,000 characters; empty clears it.
    pub summary: String,
    /// The last message (id) the summary covers.
    #[serde(default)]
    pub through_message_id: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationIdArgs {
    /// The conversation (UUID).
    pub conversation_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConversationResult {
    pub conversation: Conversation,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConversationList {
    /// Newest first.
    pub conversations: Vec<Conversation>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageResult {
    pub message: Message,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryResult {
    pub conversation: Conversation,
    /// The conversation's summary (long-term context), if one was set.
    pub summary: Option<String>,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Pass as `before` to read the earlier page; null when there is none.
    pub next_cursor: Option<i64>,
}

#[tool_router(router = conversation_tools, vis = "pub(super)")]
impl TodoServer {
    #[tool(
        description = "Start a new conversation and return it.",
        annotations(
            title = "Start conversation",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn start_conversation(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<StartConversationArgs>>,
    ) -> Result<Json<ConversationResult>, ToolError> {
        let args = args.get()?;
        tool_result!(self, call, |tx| {
            let conversation = conversations::start(tx, args.title.as_deref()).await?;
            Ok(ConversationResult { conversation })
        })
    }

    #[tool(
        description = "List the user's conversations, newest first (archived ones only with include_archived); includes the \"Tool activity\" conversation where tool calls are recorded.",
        annotations(
            title = "List conversations",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn list_conversations(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ListConversationsArgs>>,
    ) -> Result<Json<ConversationList>, ToolError> {
        let args = args.get()?;
        tool_result!(self, call, |tx| {
            let (conversations, next_cursor) = conversations::list(
                tx,
                args.include_archived.unwrap_or(false),
                args.limit,
                args.cursor.as_deref(),
                &self.cursors,
            )
            .await?;
            Ok(ConversationList {
                conversations,
                next_cursor,
            })
        })
    }

    #[tool(
        description = "Append a message to a conversation. Messages get strictly increasing ids in the order they are stored. Archived conversations take no new messages.",
        annotations(
            title = "Append message",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn append_message(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<AppendMessageArgs>>,
    ) -> Result<Json<MessageResult>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        let message = NewMessage {
            role: args.role,
            content: args.content,
            tool_calls: args.tool_calls,
            tool_call_id: args.tool_call_id,
        };
        tool_result!(self, call, |tx| {
            let message =
                conversations::append_message(tx, conversation_id, &message, &self.quotas).await?;
            Ok(MessageResult { message })
        })
    }

    #[tool(
        description = "Read a conversation: its summary and its latest messages, oldest first (enough to rebuild an LLM's context in one call). Page back with before = next_cursor.",
        annotations(
            title = "Get conversation history",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ReadLog)
    )]
    async fn get_conversation_history(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<HistoryArgs>>,
    ) -> Result<Json<HistoryResult>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let history = conversations::history(
                tx,
                conversation_id,
                args.limit,
                args.before,
                args.include_call_records.unwrap_or(true),
            )
            .await?;
            Ok(HistoryResult {
                summary: history.conversation.summary.clone(),
                conversation: history.conversation,
                messages: history.messages,
                next_cursor: history.next_cursor,
            })
        })
    }

    #[tool(
        description = "Store a summary of the conversation up to a message (long-term context); get_conversation_history returns it with the messages.",
        annotations(
            title = "Set conversation summary",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn set_conversation_summary(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<SetSummaryArgs>>,
    ) -> Result<Json<ConversationResult>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let conversation = conversations::set_summary(
                tx,
                conversation_id,
                &args.summary,
                args.through_message_id,
            )
            .await?;
            Ok(ConversationResult { conversation })
        })
    }

    #[tool(
        description = "Archive a conversation (a soft delete): hidden from list_conversations, its history still readable. Archiving an archived conversation changes nothing.",
        annotations(
            title = "Archive conversation",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn archive_conversation(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ConversationIdArgs>>,
    ) -> Result<Json<ConversationResult>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let conversation = conversations::archive(tx, conversation_id).await?;
            Ok(ConversationResult { conversation })
        })
    }

    #[tool(
        description = "Make an archived conversation active again (archiving is a soft delete): listed again, and taking messages and agent state. Unarchiving an active conversation changes nothing.",
        annotations(
            title = "Unarchive conversation",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::ActivityLog)
    )]
    async fn unarchive_conversation(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ConversationIdArgs>>,
    ) -> Result<Json<ConversationResult>, ToolError> {
        let args = args.get()?;
        let conversation_id = parse_uuid("conversation_id", &args.conversation_id)?;
        tool_result!(self, call, |tx| {
            let conversation = conversations::unarchive(tx, conversation_id).await?;
            Ok(ConversationResult { conversation })
        })
    }
}
