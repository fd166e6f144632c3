//! Task tools.

use super::{Call, Checked, RecordIn, TodoServer, ToolError, records, tool_result};
use crate::store::parse_uuid;
use crate::store::task_fields::Priority;
use crate::store::tasks::{
    self, Added, Completion, LabelCount, ListQuery, NewTask, StatusFilter, Task, TaskChanges,
    TaskSort,
};
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which tasks to list.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    #[default]
    All,
    Pending,
    Completed,
}

/// The order of list_tasks.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskOrder {
    #[default]
    Created,
    Due,
    Priority,
}

impl From<TaskStatus> for StatusFilter {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::All => StatusFilter::All,
            TaskStatus::Pending => StatusFilter::Pending,
            TaskStatus::Completed => StatusFilter::Completed,
        }
    }
}

impl From<TaskOrder> for TaskSort {
    fn from(order: TaskOrder) -> Self {
        match order {
            TaskOrder::Created => TaskSort::Created,
            TaskOrder::Due => TaskSort::Due,
            TaskOrder::Priority => TaskSort::Priority,
        }
    }
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
    /// Only tasks due before this date (its start, UTC) or date-time.
    #[serde(default)]
    pub due_before: Option<String>,
    /// Only tasks due at or after this date (its start, UTC) or date-time.
    #[serde(default)]
    pub due_after: Option<String>,
    /// true: only pending tasks whose due date-time has passed, or whose all-day due date
    /// has ended (in UTC).
    #[serde(default)]
    pub overdue: Option<bool>,
    /// Only tasks with this label (case-insensitive).
    #[serde(default)]
    pub label: Option<String>,
    /// Only tasks of this priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Only the subtasks of this task (UUID).
    #[serde(default)]
    pub parent_task_id: Option<String>,
    /// `created` (default: newest first), `due` (soonest first, tasks without a due date
    /// last) or `priority` (most urgent first); ties go newest first.
    #[serde(default)]
    pub sort: Option<TaskOrder>,
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
pub struct ListLabelsArgs {
    /// Conversation (UUID) whose history should record this call; default: "Tool activity".
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LabelList {
    /// Alphabetically, case-insensitive.
    pub labels: Vec<LabelCount>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskResult {
    pub task: Task,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskList {
    /// In the order `sort` asked for.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedTask {
    pub task_id: String,
    pub deleted: bool,
    /// How many of its subtasks were deleted with it.
    pub subtasks_deleted: i64,
}

#[tool_router(router = task_tools, vis = "pub(super)")]
impl TodoServer {
    #[tool(
        description = "Add a task for the user, optionally with a due date or date-time, a priority, labels, a parent task (making it a subtask), a repeating rule or an estimate in minutes. Pass an idempotency_key when the call may be retried: a retry with the same key and arguments returns the first task (replayed: true) and creates nothing; the key with other arguments is a conflict.",
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
        Parameters(args): Parameters<Checked<NewTask>>,
    ) -> Result<Json<Added>, ToolError> {
        let new = args.get()?;
        tool_result!(self, call, |tx| {
            tasks::add(tx, &new, &self.quotas).await
        })
    }

    #[tool(
        description = "List the user's tasks, newest first or sorted by due date or priority; filter by status, text, due range, overdue, label, priority or parent task; paginated with next_cursor.",
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
        let status = args.status.unwrap_or_default().into();
        let sort = args.sort.unwrap_or_default().into();
        let parent_task_id = args
            .parent_task_id
            .as_deref()
            .map(|raw| parse_uuid("parent_task_id", raw))
            .transpose()?;
        let query = ListQuery {
            status,
            query: args.query.as_deref(),
            due_before: args.due_before.as_deref(),
            due_after: args.due_after.as_deref(),
            overdue: args.overdue.unwrap_or(false),
            label: args.label.as_deref(),
            priority: args.priority,
            parent_task_id,
            sort,
            limit: args.limit,
            cursor: args.cursor.as_deref(),
        };
        tool_result!(self, call, |tx| {
            let (tasks, next_cursor) = tasks::list(tx, query, &self.cursors).await?;
            Ok(TaskList { tasks, next_cursor })
        })
    }

    #[tool(
        description = "List the labels on the user's tasks, alphabetically, each with how many tasks carry it and how many of those are pending.",
        annotations(
            title = "List labels",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        meta = records(RecordIn::NamedConversation)
    )]
    async fn list_labels(
        &self,
        Extension(call): Extension<Arc<Call>>,
        Parameters(args): Parameters<Checked<ListLabelsArgs>>,
    ) -> Result<Json<LabelList>, ToolError> {
        args.get()?;
        tool_result!(self, call, |tx| {
            let labels = tasks::labels(tx).await?;
            Ok(LabelList { labels })
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
        description = "Mark a task completed (its subtasks stay as they are). A repeating task's next occurrence is created and returned as next_task. Completing a task that is already completed changes nothing and is not an error.",
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
    ) -> Result<Json<Completion>, ToolError> {
        let args = args.get()?;
        let task_id = parse_uuid("task_id", &args.task_id)?;
        tool_result!(self, call, |tx| {
            tasks::complete(tx, task_id, &self.quotas).await
        })
    }

    #[tool(
        description = "Change a task's title, description, completed state, due date, priority, labels, parent, repeating rule or estimate; fields left out stay as they are, null clears due, parent_task_id, repeat and estimate_minutes. Completing a repeating task creates its next occurrence (next_task). Pass expected_updated_at (the updated_at you read) to change it only if nobody else has since.",
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
        Parameters(args): Parameters<Checked<TaskChanges>>,
    ) -> Result<Json<Completion>, ToolError> {
        let changes = args.get()?;
        let task_id = parse_uuid("task_id", &changes.task_id)?;
        tool_result!(self, call, |tx| {
            tasks::update(tx, task_id, &changes, &self.quotas).await
        })
    }

    #[tool(
        description = "Delete a task permanently, and its subtasks with it.",
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
            let subtasks_deleted = tasks::delete(tx, task_id).await?;
            Ok(DeletedTask {
                task_id: task_id.to_string(),
                deleted: true,
                subtasks_deleted,
            })
        })
    }
}
