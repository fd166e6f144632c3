//! What each client does: the agent mix, one tool over and over, or the protocol floor;
//! and the ledger of what the server acknowledged, checked against the database at the end.

use crate::client::{CallError, CallResult, Client, Request};
use crate::options::{Mix, SingleTool};
use anyhow::bail;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Steps of one agent turn.
const AGENT_TURN_STEPS: u64 = 5;
/// Tasks a `list_tasks` client starts with, so that it lists something.
const SEED_TASKS: u64 = 10;
/// Messages a `get_conversation_history` client's conversation starts with.
const SEED_MESSAGES: u64 = 60;
/// Conversations a `list_conversations` client starts with.
const SEED_CONVERSATIONS: u64 = 5;

/// One client's script: the calls it makes and what it learns from their answers.
pub struct ClientScript {
    mix: Mix,
    tool: SingleTool,
    user: String,
    /// The conversation the agent (or the appends and history reads) work in.
    conversation: Option<String>,
    /// Calls planned so far (past setup).
    calls: u64,
    /// Tasks planned so far: numbers the titles and idempotency keys.
    tasks: u64,
    /// The task the agent added last turn, which it completes this turn.
    task_to_complete: Option<String>,
    pub ledger: Ledger,
}

/// A call to make, and what its success writes.
pub struct PlannedCall {
    pub request: Request,
    effect: Effect,
}

enum Effect {
    None,
    AddTask { key: String },
    CompleteTask { task_id: String },
    Append { conversation: String },
    StartConversation,
}

impl ClientScript {
    pub fn new(mix: Mix, tool: SingleTool, user: String) -> Self {
        ClientScript {
            mix,
            tool,
            ledger: Ledger {
                user: user.clone(),
                ..Ledger::default()
            },
            user,
            conversation: None,
            calls: 0,
            tasks: 0,
            task_to_complete: None,
        }
    }

    /// Makes what the workload needs before it starts (a conversation, seed rows), with
    /// the same client; these calls are verified but not measured.
    pub async fn set_up(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let needs_conversation = match self.mix {
            Mix::Agent => true,
            Mix::Floor => false,
            Mix::Single => matches!(
                self.tool,
                SingleTool::AppendMessage | SingleTool::GetConversationHistory
            ),
        };
        if needs_conversation {
            let start = self.start_conversation();
            self.perform(client, start).await?;
        }
        if self.mix == Mix::Single {
            match self.tool {
                SingleTool::ListTasks => {
                    for _ in 0..SEED_TASKS {
                        let add = self.add_task(None);
                        self.perform(client, add).await?;
                    }
                }
                SingleTool::GetConversationHistory => {
                    for n in 0..SEED_MESSAGES {
                        let append = self.append(alternate_role(n), n);
                        self.perform(client, append).await?;
                    }
                }
                SingleTool::ListConversations => {
                    for _ in 0..SEED_CONVERSATIONS {
                        let start = self.start_conversation();
                        self.perform(client, start).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn perform(&mut self, client: &mut Client, call: PlannedCall) -> anyhow::Result<()> {
        let result = client.call(&call.request).await;
        if let Err(error) = &result {
            bail!("call {} failed: {error}", call.request.label());
        }
        if let Some(problem) = self.acknowledge(call, &result) {
            bail!("{problem}");
        }
        Ok(())
    }

    /// Makes the next call of the workload outside the measured phase (verified like the
    /// rest); fails if it fails.
    pub async fn step(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let call = self.next_call();
        self.perform(client, call).await
    }

    /// Calls in one cycle of the workload, the unit a replay repeats: the agent's two
    /// turns (the first adds a task, the second completes it), or one call.
    pub fn cycle_calls(&self) -> u64 {
        match self.mix {
            Mix::Agent => 2 * AGENT_TURN_STEPS,
            Mix::Single | Mix::Floor => 1,
        }
    }

    /// Whether the next call begins a cycle.
    pub fn at_cycle_start(&self) -> bool {
        match self.mix {
            Mix::Agent => {
                self.calls.is_multiple_of(AGENT_TURN_STEPS) && self.task_to_complete.is_none()
            }
            Mix::Single | Mix::Floor => true,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The next call of the workload.
    pub fn next_call(&mut self) -> PlannedCall {
        let n = self.calls;
        self.calls += 1;
        match self.mix {
            Mix::Floor => PlannedCall {
                request: Request::ListTools,
                effect: Effect::None,
            },
            Mix::Agent => self.agent_step(n),
            Mix::Single => self.single_call(n),
        }
    }

    /// Step `n` of the agent loop: user message, history, pending tasks, add a task or
    /// complete last turn's, assistant message.
    fn agent_step(&mut self, n: u64) -> PlannedCall {
        let turn = n / AGENT_TURN_STEPS;
        let conversation = self.conversation.clone().unwrap_or_default();
        match n % AGENT_TURN_STEPS {
            0 => self.append("user", turn),
            1 => PlannedCall {
                request: Request::tool(
                    "get_conversation_history",
                    json!({ "conversation_id": conversation, "limit": 50 }),
                ),
                effect: Effect::None,
            },
            2 => PlannedCall {
                request: Request::tool(
                    "list_tasks",
                    json!({ "conversation_id": conversation, "status": "pending" }),
                ),
                effect: Effect::None,
            },
            3 => match self.task_to_complete.clone() {
                Some(task_id) => PlannedCall {
                    request: Request::tool(
                        "complete_task",
                        json!({ "task_id": task_id, "conversation_id": conversation }),
                    ),
                    effect: Effect::CompleteTask { task_id },
                },
                None => self.add_task(Some(&conversation)),
            },
            _ => self.append("assistant", turn),
        }
    }

    fn single_call(&mut self, n: u64) -> PlannedCall {
        match self.tool {
            SingleTool::AddTask => self.add_task(None),
            SingleTool::ListTasks => PlannedCall {
                request: Request::tool("list_tasks", json!({})),
                effect: Effect::None,
            },
            SingleTool::AppendMessage => self.append(alternate_role(n), n),
            SingleTool::GetConversationHistory => PlannedCall {
                request: Request::tool(
                    "get_conversation_history",
                    json!({ "conversation_id": self.conversation, "limit": 50 }),
                ),
                effect: Effect::None,
            },
            SingleTool::ListConversations => PlannedCall {
                request: Request::tool("list_conversations", json!({})),
                effect: Effect::None,
            },
            SingleTool::StartConversation => self.start_conversation(),
        }
    }

    fn add_task(&mut self, conversation: Option<&str>) -> PlannedCall {
        self.tasks += 1;
        let key = format!("{}-task-{}", self.user, self.tasks);
        let mut arguments = json!({
            "title": format!("Task {} of {}: buy oat milk and call the plumber", self.tasks, self.user),
            "idempotency_key": key,
        });
        if let Some(conversation) = conversation {
            arguments["conversation_id"] = json!(conversation);
        }
        PlannedCall {
            request: Request::tool("add_task", arguments),
            effect: Effect::AddTask { key },
        }
    }

    fn append(&self, role: &str, turn: u64) -> PlannedCall {
        let conversation = self.conversation.clone().unwrap_or_default();
        let content = if role == "user" {
            format!(
                "Turn {turn}. Please remember that I need to buy oat milk, and tell me \
                 what is still pending on my list before Friday."
            )
        } else {
            format!(
                "Turn {turn}. Noted: I added that to your list. You still have the \
                 pending tasks shown above; I will remind you about them before Friday, \
                 and mark each one done as soon as you tell me it is finished."
            )
        };
        PlannedCall {
            request: Request::tool(
                "append_message",
                json!({ "conversation_id": conversation, "role": role, "content": content }),
            ),
            effect: Effect::Append { conversation },
        }
    }

    fn start_conversation(&self) -> PlannedCall {
        PlannedCall {
            request: Request::tool(
                "start_conversation",
                json!({ "title": format!("Planning the week with {}", self.user) }),
            ),
            effect: Effect::StartConversation,
        }
    }

    /// Records what the answer to `call` means for the database. Returns a problem if a
    /// success did not carry what it should.
    pub fn acknowledge(&mut self, call: PlannedCall, result: &CallResult) -> Option<String> {
        let label = call.request.label();
        let is_tool = matches!(call.request, Request::Tool { .. });
        let value = match result {
            Ok(value) => value,
            // A call that got no database connection did nothing and has no record
            // (README, "The audit trail"): its answer says so.
            Err(CallError::Tool(text))
                if text.starts_with("unavailable:") && text.contains("nothing was done") =>
            {
                *self.ledger.not_run.entry(label).or_default() += 1;
                return None;
            }
            Err(CallError::Tool(_)) => {
                *self.ledger.failed.entry(label).or_default() += 1;
                return None;
            }
            Err(CallError::Refused(_)) => return None,
            Err(CallError::Rpc(_) | CallError::Unknown(_)) => {
                *self.ledger.uncertain.entry(label).or_default() += 1;
                return None;
            }
        };
        if is_tool {
            *self.ledger.succeeded.entry(label).or_default() += 1;
        }
        match call.effect {
            Effect::None => None,
            Effect::AddTask { key } => match string_at(value, "task", "id", label) {
                Ok(id) => {
                    if self.mix == Mix::Agent {
                        self.task_to_complete = Some(id.clone());
                    }
                    self.ledger.tasks.push(AckedTask { key, id });
                    None
                }
                Err(problem) => Some(problem),
            },
            Effect::CompleteTask { task_id } => {
                self.task_to_complete = None;
                self.ledger.completed.push(task_id);
                None
            }
            Effect::Append { conversation } => match value["message"]["id"].as_i64() {
                Some(id) => {
                    self.ledger
                        .appends
                        .entry(conversation)
                        .or_default()
                        .push(id);
                    None
                }
                None => Some(format!("{label} answered without message.id: {value}")),
            },
            Effect::StartConversation => match string_at(value, "conversation", "id", label) {
                Ok(id) => {
                    self.conversation.get_or_insert(id);
                    None
                }
                Err(problem) => Some(problem),
            },
        }
    }
}

/// User and assistant take turns.
fn alternate_role(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "user"
    } else {
        "assistant"
    }
}

/// `value[outer][inner]` as a string, or what is wrong with the answer.
fn string_at(value: &Value, outer: &str, inner: &str, label: &str) -> Result<String, String> {
    value[outer][inner]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{label} answered without {outer}.{inner}: {value}"))
}

/// A task the server said it created.
#[derive(Debug, Clone)]
pub struct AckedTask {
    pub key: String,
    pub id: String,
}

/// What the server acknowledged to one client (one user), warm-up and setup included.
#[derive(Debug, Default)]
pub struct Ledger {
    pub user: String,
    pub tasks: Vec<AckedTask>,
    /// Ids of tasks the server said it completed.
    pub completed: Vec<String>,
    /// Ids of the messages appended, per conversation.
    pub appends: HashMap<String, Vec<i64>>,
    /// Successful tool calls per tool: each has an audit record.
    pub succeeded: BTreeMap<&'static str, u64>,
    /// Tool calls answered with a tool error: each has a failure record, and no change.
    pub failed: BTreeMap<&'static str, u64>,
    /// Tool calls that did not run (no database connection): no record, no change.
    pub not_run: BTreeMap<&'static str, u64>,
    /// Calls whose effect is unknown (no answer; a JSON-RPC error, which may leave a
    /// failure record): they may have written.
    pub uncertain: BTreeMap<&'static str, u64>,
}
