//! The end-of-run check: every write the server acknowledged is in the database exactly
//! once (tasks by idempotency key, completions, appended messages per conversation, and
//! the audit record every call leaves), and nothing was written that was not acknowledged.

use crate::database::Inspector;
use crate::workload::Ledger;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many individual discrepancies a report lists.
const PROBLEM_EXAMPLES: usize = 5;

#[derive(Debug, Default)]
pub struct Verification {
    pub tasks_acknowledged: u64,
    pub tasks_lost: u64,
    pub tasks_doubled: u64,
    pub completions_acknowledged: u64,
    pub completions_lost: u64,
    pub messages_acknowledged: u64,
    pub messages_lost: u64,
    pub messages_doubled: u64,
    pub audit_acknowledged: u64,
    pub audit_missing: u64,
    pub audit_extra: u64,
    /// Rows written by calls that got no answer: not an error, the call may have happened.
    pub unacknowledged: u64,
    pub examples: Vec<String>,
}

impl Verification {
    /// Acknowledged writes that are not in the database.
    pub fn lost(&self) -> u64 {
        self.tasks_lost + self.completions_lost + self.messages_lost + self.audit_missing
    }

    /// Writes in the database more often than acknowledged.
    pub fn doubled(&self) -> u64 {
        self.tasks_doubled + self.messages_doubled + self.audit_extra
    }

    fn problem(&mut self, text: String) {
        if self.examples.len() < PROBLEM_EXAMPLES {
            self.examples.push(text);
        }
    }

    /// Rows beyond what was acknowledged: doubled, unless calls without an answer could
    /// have written them.
    fn excess(&mut self, excess: u64, uncertain: bool, what: String) -> u64 {
        if excess == 0 {
            return 0;
        }
        if uncertain {
            self.unacknowledged += excess;
            return 0;
        }
        self.problem(what);
        excess
    }

    pub fn to_json(&self) -> Value {
        json!({
            "lost": self.lost(),
            "doubled": self.doubled(),
            "tasks": { "acknowledged": self.tasks_acknowledged, "lost": self.tasks_lost, "doubled": self.tasks_doubled },
            "completions": { "acknowledged": self.completions_acknowledged, "lost": self.completions_lost },
            "messages": { "acknowledged": self.messages_acknowledged, "lost": self.messages_lost, "doubled": self.messages_doubled },
            "audit_records": { "acknowledged": self.audit_acknowledged, "missing": self.audit_missing, "extra": self.audit_extra },
            "unacknowledged_rows": self.unacknowledged,
            "examples": self.examples,
        })
    }
}

pub async fn verify<'a>(
    inspector: &Inspector,
    ledgers: impl Iterator<Item = &'a Ledger>,
) -> anyhow::Result<Verification> {
    let ledgers: Vec<&Ledger> = ledgers.collect();
    let mut result = Verification::default();
    check_tasks(&mut result, &ledgers, inspector).await?;
    check_messages(&mut result, &ledgers, inspector).await?;
    Ok(result)
}

async fn check_tasks(
    result: &mut Verification,
    ledgers: &[&Ledger],
    inspector: &Inspector,
) -> anyhow::Result<()> {
    // (user, key) → ids stored under it; task id → completed.
    let mut by_key: HashMap<(String, Option<String>), Vec<String>> = HashMap::new();
    let mut completed: HashMap<String, bool> = HashMap::new();
    for task in inspector.tasks().await? {
        completed.insert(task.id.clone(), task.completed);
        by_key
            .entry((task.user_id, task.idempotency_key))
            .or_default()
            .push(task.id);
    }
    for ledger in ledgers {
        let uncertain = ledger.uncertain.get("add_task").is_some_and(|n| *n > 0);
        let mut acked_keys = HashSet::new();
        for task in &ledger.tasks {
            result.tasks_acknowledged += 1;
            acked_keys.insert(task.key.as_str());
            let stored = by_key
                .get(&(ledger.user.clone(), Some(task.key.clone())))
                .map_or(&[][..], Vec::as_slice);
            match stored {
                [] => {
                    result.tasks_lost += 1;
                    result.problem(format!("task {} (key {}) is missing", task.id, task.key));
                }
                [id] if *id != task.id => {
                    result.tasks_lost += 1;
                    result.problem(format!(
                        "key {} was acknowledged as task {} but stored as {id}",
                        task.key, task.id
                    ));
                }
                [_] => {}
                more => {
                    let n = more.len() as u64 - 1;
                    result.tasks_doubled += n;
                    result.problem(format!("key {} is stored {} times", task.key, more.len()));
                }
            }
        }
        let unacked: u64 = by_key
            .iter()
            .filter(|((user, key), _)| {
                *user == ledger.user && !key.as_deref().is_some_and(|k| acked_keys.contains(k))
            })
            .map(|(_, ids)| ids.len() as u64)
            .sum();
        result.tasks_doubled += result.excess(
            unacked,
            uncertain,
            format!("{}: {unacked} tasks were never acknowledged", ledger.user),
        );
        for task_id in &ledger.completed {
            result.completions_acknowledged += 1;
            if completed.get(task_id) != Some(&true) {
                result.completions_lost += 1;
                result.problem(format!(
                    "task {task_id} was acknowledged completed but is not"
                ));
            }
        }
    }
    Ok(())
}

async fn check_messages(
    result: &mut Verification,
    ledgers: &[&Ledger],
    inspector: &Inspector,
) -> anyhow::Result<()> {
    let stored: HashSet<(String, i64)> = inspector
        .appended_messages()
        .await?
        .into_iter()
        .map(|m| (m.conversation_id, m.id))
        .collect();
    // user → conversation → user and assistant messages; user → (tool, ok) → records.
    let mut appended: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    let mut records: HashMap<String, BTreeMap<(String, bool), u64>> = HashMap::new();
    for count in inspector.message_counts().await? {
        let n = u64::try_from(count.count).unwrap_or(0);
        if count.role == "tool" {
            let key = (count.tool.unwrap_or_default(), count.ok.unwrap_or(false));
            *records
                .entry(count.user_id)
                .or_default()
                .entry(key)
                .or_default() += n;
        } else {
            *appended
                .entry(count.user_id)
                .or_default()
                .entry(count.conversation_id)
                .or_default() += n;
        }
    }
    for ledger in ledgers {
        let uncertain_appends = ledger
            .uncertain
            .get("append_message")
            .is_some_and(|n| *n > 0);
        let empty = BTreeMap::new();
        let stored_counts = appended.get(&ledger.user).unwrap_or(&empty);
        for (conversation, ids) in &ledger.appends {
            result.messages_acknowledged += ids.len() as u64;
            for id in ids {
                if !stored.contains(&(conversation.clone(), *id)) {
                    result.messages_lost += 1;
                    result.problem(format!("message {id} of {conversation} is missing"));
                }
            }
        }
        for (conversation, count) in stored_counts {
            let acked = ledger
                .appends
                .get(conversation)
                .map_or(0, |ids| ids.len() as u64);
            result.messages_doubled += result.excess(
                count.saturating_sub(acked),
                uncertain_appends,
                format!("conversation {conversation} holds {count} messages, {acked} acknowledged"),
            );
        }
        check_audit(result, ledger, records.get(&ledger.user));
    }
    Ok(())
}

/// Each successful call has one success record, each tool error one failure record.
fn check_audit(
    result: &mut Verification,
    ledger: &Ledger,
    records: Option<&BTreeMap<(String, bool), u64>>,
) {
    let empty = BTreeMap::new();
    let records = records.unwrap_or(&empty);
    let mut expected: BTreeMap<(String, bool), u64> = BTreeMap::new();
    for (tool, n) in &ledger.succeeded {
        *expected.entry(((*tool).to_owned(), true)).or_default() += n;
    }
    for (tool, n) in &ledger.failed {
        *expected.entry(((*tool).to_owned(), false)).or_default() += n;
    }
    let keys: HashSet<&(String, bool)> = expected.keys().chain(records.keys()).collect();
    for key in keys {
        let (tool, ok) = key;
        let want = expected.get(key).copied().unwrap_or(0);
        let have = records.get(key).copied().unwrap_or(0);
        let outcome = if *ok { "success" } else { "failure" };
        result.audit_acknowledged += want;
        if have < want {
            result.audit_missing += want - have;
            result.problem(format!(
                "{}: {} of {want} {tool} {outcome} records are missing",
                ledger.user,
                want - have
            ));
        }
        let uncertain = ledger.uncertain.get(tool.as_str()).is_some_and(|n| *n > 0);
        result.audit_extra += result.excess(
            have.saturating_sub(want),
            uncertain,
            format!(
                "{}: {have} {tool} {outcome} records for {want} calls",
                ledger.user
            ),
        );
    }
}
