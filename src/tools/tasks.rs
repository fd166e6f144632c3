//! Task tools.

use super::{Call, Checked, RecordIn, TodoServer, ToolError, records, tool_result};
use crate::store::parse_uuid;
use crate::store::tasks::{self, ListQuery, NewTask, StatusFilter, Task, TaskChanges};
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTaskArgs {
    /// What to do: 1 to 500 characters.
    pub title: String,
    /// Optional details, up to 10,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Any string unique to this intended task (1 to 200 characters): a retry with the same
    /// key returns the task the first call created and creates nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Which tasks to list.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    #[default]
    All,
    Pending,
    Completed,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// `all` (default), `pending` or `completed`.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Only tasks whose title or description contains this text (case-insensitive).
    #[serde(default)]
    pub query: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdArgs {
    /// The task's id (UUID), as add_task or list_tasks returned it.
    pub task_id: String,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskArgs {
    /// The task's id (UUID).
    pub task_id: String,
    /// New title, 1 to 500 characters.
    #[serde(default)]
    pub title: Option<String>,
    /// New description, up to 10,000 characters; an empty string clears it.
    #[serde(default)]
    pub description: Option<String>,
    /// Mark completed (true) or pending again (false).
    #[serde(default)]
    pub completed: Option<bool>,
    /// The task's `updated_at` as you last read it: the update then happens only if nobody
    /// changed the task since, and fails with a conflict otherwise.
    #[serde(default)]
    pub expected_updated_at: Option<String>,
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskResult {
    pub task: Task,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedTask {
    pub task_id: String,
    pub deleted: bool,
}

#[tool_router(router = task_tools, vis = "pub(super)")]
impl TodoServer {
    #[tool(
        description = "Add a task for the user. Pass an idempotency_key when the call may be retried: the same key never creates a second task.",
        annotations(
            title = "Add task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn add_task(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<AddTaskArgs>>,
    ) -> Result<Json<TaskResult>, ToolError> {
        let args = args.get()?;
        let new = NewTask {
            title: &args.title,
            description: args.description.as_deref(),
            idempotency_key: args.idempotency_key.as_deref(),
        };
        tool_result!(self, call, |tx| {
            let task = tasks::add(tx, new, &self.quotas).await?;
            Ok(TaskResult { task })
        })
    }

    #[tool(
        description = "List the user's tasks, newest first, optionally only pending or completed ones or those matching a text; paginated with next_cursor.",
        annotations(
            title = "List tasks",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn list_tasks(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ListTasksArgs>>,
    ) -> Result<Json<TaskList>, ToolError> {
        let args = args.get()?;
        let status = match args.status.unwrap_or_default() {
            TaskStatus::All => StatusFilter::All,
            TaskStatus::Pending => StatusFilter::Pending,
            TaskStatus::Completed => StatusFilter::Completed,
        };
        let query = ListQuery {
            status,
            query: args.query.as_deref(),
            limit: args.limit,
            cursor: args.cursor.as_deref(),
        };
        tool_result!(self, call, |tx| {
            let (tasks, next_cursor) = tasks::list(tx, query, &self.cursors).await?;
            Ok(TaskList { tasks, next_cursor })
        })
    }

    #[tool(
        description = "Read one task by its id.",
        annotations(
            title = "Get task",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn get_task(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<TaskIdArgs>>,
    ) -> Result<Json<TaskResult>, ToolError> {
        let args = args.get()?;
        let task_id = parse_uuid("task_id", &args.task_id)?;
        tool_result!(self, call, |tx| {
            let task = tasks::get(tx, task_id).await?;
            Ok(TaskResult { task })
        })
    }

    #[tool(
        description = "Mark a task completed. Completing a task that is already completed changes nothing and is not an error.",
        annotations(
            title = "Complete task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn complete_task(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<TaskIdArgs>>,
    ) -> Result<Json<TaskResult>, ToolError> {
        let args = args.get()?;
        let task_id = parse_uuid("task_id", &args.task_id)?;
        tool_result!(self, call, |tx| {
            let task = tasks::complete(tx, task_id).await?;
            Ok(TaskResult { task })
        })
    }

    #[tool(
        description = "Change a task's title, description or completed state; fields left out stay as they are. Pass expected_updated_at (the updated_at you read) to change it only if nobody else has since.",
        annotations(
            title = "Update task",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn update_task(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<UpdateTaskArgs>>,
    ) -> Result<Json<TaskResult>, ToolError> {
        let args = args.get()?;
        let task_id = parse_uuid("task_id", &args.task_id)?;
        let changes = TaskChanges {
            title: args.title.as_deref(),
            description: args.description.as_deref(),
            completed: args.completed,
            expected_updated_at: args.expected_updated_at.as_deref(),
        };
        tool_result!(self, call, |tx| {
            let task = tasks::update(tx, task_id, changes).await?;
            Ok(TaskResult { task })
        })
    }

    #[tool(
        description = "Delete a task permanently.",
        annotations(
            title = "Delete task",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn delete_task(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<TaskIdArgs>>,
    ) -> Result<Json<DeletedTask>, ToolError> {
        let args = args.get()?;
        let task_id = parse_uuid("task_id", &args.task_id)?;
        tool_result!(self, call, |tx| {
            tasks::delete(tx, task_id).await?;
            Ok(DeletedTask {
                task_id: task_id.to_string(),
                deleted: true,
            })
        })
    }
}
