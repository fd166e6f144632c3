//! One sample call of every tool, keyed by tool name: what the cross-cutting tests iterate
//! (scopes, isolation between users, audit records, hostile input, the Python client over
//! each transport, OAuth, the web page's data), so that no tool is left out of any of them. A tool the router lists without a sample here fails
//! `samples::every_tool_has_a_sample` (tests/it/samples.rs), which names it.

use serde_json::{Value, json};

use super::McpClient;

/// The rows a sample call refers to, all of one user's: made by [`Seed::plant`], or ids
/// nobody has ([`Seed::unknown`]), or references to the results of a script's planting
/// calls ([`python_script`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub task: String,
    pub conversation: String,
    /// A message id: a number, or a script's `${N.path}` reference to one.
    pub message: Value,
}

impl Seed {
    /// Ids that name no row: a call with them passes validation and finds nothing.
    pub fn unknown() -> Seed {
        Seed {
            task: "00000000-0000-0000-0000-000000000000".into(),
            conversation: "00000000-0000-0000-0000-000000000000".into(),
            message: json!(9_000_000_000_i64),
        }
    }

    /// A task, a conversation with a message and a saved agent state, made through
    /// `client`'s own tools, for its user.
    pub async fn plant(client: &McpClient) -> Seed {
        let mut results: Vec<Value> = Vec::new();
        for index in 0..planting("").len() {
            // The message and the state go into the conversation that call 1 started.
            let conversation = results
                .get(1)
                .map(|started| string_at(started, "/conversation/id"))
                .unwrap_or_default();
            let (tool, args) = planting(&conversation).swap_remove(index);
            results.push(client.call_ok(tool, args).await);
        }
        let message = results[2]["message"]["id"].clone();
        assert!(
            message.is_i64(),
            "append_message returned no message id: {}",
            results[2]
        );
        Seed {
            task: string_at(&results[0], "/task/id"),
            conversation: string_at(&results[1], "/conversation/id"),
            message,
        }
    }
}

/// The calls that plant a seed, in order: a task (result 0), a conversation (1), a message
/// in `conversation` (2) and an agent state of it (3).
fn planting(conversation: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "add_task",
            json!({ "title": "seeded task", "labels": ["seed"] }),
        ),
        (
            "start_conversation",
            json!({ "title": "seeded conversation" }),
        ),
        (
            "append_message",
            json!({ "conversation_id": conversation, "role": "user", "content": "seeded words" }),
        ),
        (
            "save_agent_state",
            json!({ "conversation_id": conversation, "state": { "step": 1 } }),
        ),
    ]
}

/// The planting calls, then every tool's sample in [`TOOLS_IN_ORDER`], as calls for the
/// Python driver (tests/clients/mcp_client.py), the seed named by `${N.path}` references
/// to the planting calls' results, which the driver resolves.
pub fn python_script() -> Vec<Value> {
    let seed = Seed {
        task: "${0.task.id}".into(),
        conversation: "${1.conversation.id}".into(),
        message: json!("${2.message.id}"),
    };
    planting(&seed.conversation)
        .into_iter()
        .chain(all(&seed))
        .map(|(tool, args)| super::python::call(tool, args))
        .collect()
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
        "add_task" => json!({
            "title": "sampled task", "labels": ["sample"], "priority": "high", "estimate_minutes": 30
        }),
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
