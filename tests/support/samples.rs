//! One sample call of every tool, keyed by tool name: what the cross-cutting tests iterate
//! (scopes, isolation between users, audit records, the Python client), so that no tool is
//! left out of any of them. A tool the router lists without a sample here fails
//! `samples::every_tool_has_a_sample` (tests/it/samples.rs), which names it.

use serde_json::{Value, json};

use super::McpClient;

/// The rows a sample call refers to, all of one user's: made by [`Seed::plant`], or ids
/// nobody has ([`Seed::unknown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub task: String,
    pub conversation: String,
    pub message: i64,
}

impl Seed {
    /// Ids that name no row: a call with them passes validation and finds nothing.
    pub fn unknown() -> Seed {
        Seed {
            task: "00000000-0000-0000-0000-000000000000".into(),
            conversation: "00000000-0000-0000-0000-000000000000".into(),
            message: 9_000_000_000,
        }
    }

    /// A task, a conversation with a message and a saved agent state, made through
    /// `client`'s own tools, for its user.
    pub async fn plant(client: &McpClient) -> Seed {
        let task = client
            .call_ok(
                "add_task",
                json!({ "title": "seeded task", "labels": ["seed"] }),
            )
            .await;
        let conversation = client
            .call_ok(
                "start_conversation",
                json!({ "title": "seeded conversation" }),
            )
            .await;
        let conversation = string_at(&conversation, "/conversation/id");
        let message = client
            .call_ok(
                "append_message",
                json!({ "conversation_id": conversation, "role": "user", "content": "seeded words" }),
            )
            .await;
        client
            .call_ok(
                "save_agent_state",
                json!({ "conversation_id": conversation, "state": { "step": 1 } }),
            )
            .await;
        Seed {
            task: string_at(&task, "/task/id"),
            conversation,
            message: message
                .pointer("/message/id")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| panic!("append_message returned no /message/id: {message}")),
        }
    }
}

fn string_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
        .to_string()
}

/// A call of `tool` that passes validation, on `seed`'s rows; `None` for a tool without a
/// sample. Made in [`TOOLS_IN_ORDER`] on a seed the caller planted, each succeeds.
pub fn sample(tool: &str, seed: &Seed) -> Option<Value> {
    let Seed {
        task,
        conversation,
        message,
    } = seed;
    Some(match tool {
        "add_task" => json!({ "title": "sampled task", "labels": ["sample"], "priority": "high" }),
        "list_tasks" => json!({ "label": "seed" }),
        "get_task" => json!({ "task_id": task }),
        "update_task" => json!({ "task_id": task, "title": "renamed by a sample" }),
        "complete_task" => json!({ "task_id": task }),
        "delete_task" => json!({ "task_id": task }),
        "list_labels" => json!({}),
        "start_conversation" => json!({ "title": "sampled conversation" }),
        "list_conversations" => json!({ "include_archived": true }),
        "append_message" => {
            json!({ "conversation_id": conversation, "role": "assistant", "content": "sampled" })
        }
        "get_conversation_history" => json!({ "conversation_id": conversation }),
        "set_conversation_summary" => json!({
            "conversation_id": conversation, "summary": "sampled summary",
            "through_message_id": message,
        }),
        "search_messages" => json!({ "query": "seeded", "conversation_id": conversation }),
        "pop_message" => json!({ "conversation_id": conversation }),
        "clear_conversation" => json!({ "conversation_id": conversation }),
        "archive_conversation" => json!({ "conversation_id": conversation }),
        "unarchive_conversation" => json!({ "conversation_id": conversation }),
        "save_agent_state" => {
            json!({ "conversation_id": conversation, "state": { "step": 2 } })
        }
        "get_agent_state" => json!({ "conversation_id": conversation }),
        "commit_turn" => json!({
            "conversation_id": conversation,
            "messages": [{ "role": "assistant", "content": "a sampled turn" }],
            "state": { "step": 3 },
        }),
        _ => return None,
    })
}

/// Every tool's sample, in an order in which each succeeds on one planted seed: what reads
/// or adds first, what removes (pop, clear, delete) last.
pub const TOOLS_IN_ORDER: &[&str] = &[
    "add_task",
    "list_tasks",
    "get_task",
    "update_task",
    "list_labels",
    "start_conversation",
    "list_conversations",
    "get_conversation_history",
    "search_messages",
    "set_conversation_summary",
    "append_message",
    "get_agent_state",
    "save_agent_state",
    "commit_turn",
    "archive_conversation",
    "unarchive_conversation",
    "pop_message",
    "clear_conversation",
    "complete_task",
    "delete_task",
];

/// `(tool, arguments)` for every tool in [`TOOLS_IN_ORDER`], on `seed`.
pub fn all(seed: &Seed) -> Vec<(&'static str, Value)> {
    TOOLS_IN_ORDER
        .iter()
        .map(|&tool| {
            let args = sample(tool, seed)
                .unwrap_or_else(|| panic!("TOOLS_IN_ORDER names {tool}, which has no sample"));
            (tool, args)
        })
        .collect()
}
