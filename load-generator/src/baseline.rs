//! The pgbench baseline: the SQL the measured tool calls issue, run by pgbench at the same
//! concurrency on the same database, so that server calls/s ÷ pgbench's rate says how
//! much the server adds on top of the database's own cost.
//!
//! Each script reproduces, statement for statement, what the server sends PostgreSQL for
//! the calls of the workload (see src/store/*.rs and the statement log): the bearer token
//! lookup of HTTP requests (one statement, outside a transaction), then the call's
//! transaction (BEGIN with its `SET LOCAL`s in one query, the tool's statements, the audit
//! record, COMMIT). The audit records it writes are copies of records the server run wrote.

use crate::database::connect_pg;
use crate::options::{Mix, SingleTool};
use crate::system::{CpuShares, CpuSnapshot};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How often CPU counters are read while pgbench runs, and from when on.
const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
const CPU_SAMPLE_DELAY: Duration = Duration::from_secs(1);

/// Which SQL pgbench runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// One add_task call (no conversation_id: its record goes to the activity log).
    AddTask,
    /// Two agent turns, the first adding a task and the second completing it: the ten
    /// calls of the agent mix, in order.
    AgentTurns,
}

impl Script {
    /// The baseline for a workload, if it has one.
    pub fn for_workload(mix: Mix, tool: SingleTool) -> Option<Script> {
        match (mix, tool) {
            (Mix::Agent, _) => Some(Script::AgentTurns),
            (Mix::Single, SingleTool::AddTask) => Some(Script::AddTask),
            _ => None,
        }
    }

    /// Tool calls one run of the script stands for.
    pub fn calls(self) -> u32 {
        match self {
            Script::AddTask => 1,
            Script::AgentTurns => 10,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Script::AddTask => "add_task",
            Script::AgentTurns => "agent turns (add + complete)",
        }
    }
}

/// What pgbench measured.
#[derive(Debug)]
pub struct BaselineResult {
    pub script: Script,
    pub clients: u32,
    pub threads: u32,
    pub tps: f64,
    pub failed_transactions: u64,
    pub latency_average_ms: Option<f64>,
    /// Where the machine's CPU went while pgbench ran (pgbench itself is in `other`).
    pub cpu: CpuShares,
    pub script_path: PathBuf,
    pub output: String,
}

impl BaselineResult {
    /// Tool calls per second pgbench's rate stands for.
    pub fn calls_per_second(&self) -> f64 {
        self.tps * f64::from(self.script.calls())
    }
}

pub struct BaselineSettings<'a> {
    pub pgbench: PathBuf,
    /// The bench database: its URL, and its name for pgbench.
    pub database_url: &'a str,
    pub database: &'a str,
    pub clients: u32,
    pub threads: u32,
    pub duration: Duration,
    /// Whether each call first looks its bearer token up (HTTP and SSE do; stdio checks
    /// its token once, at start).
    pub token_lookup: bool,
    pub work_dir: &'a Path,
}

/// Sets up pgbench's users on the database, writes the script and runs it.
pub async fn run(
    script: Script,
    settings: &BaselineSettings<'_>,
) -> anyhow::Result<BaselineResult> {
    let client = connect_pg(settings.database_url)
        .await
        .context("connecting for the pgbench baseline")?;
    create_users(&client, settings.clients).await?;
    let records = sample_records(&client).await?;
    let text = script_text(script, settings.token_lookup, &records)?;
    let script_path = settings
        .work_dir
        .join(format!("pgbench-{}.sql", script_file_stem(script)));
    std::fs::write(&script_path, text)
        .with_context(|| format!("writing {}", script_path.display()))?;

    let config: tokio_postgres::Config = settings
        .database_url
        .parse()
        .context("parsing the database URL for pgbench")?;
    let mut command = tokio::process::Command::new(&settings.pgbench);
    command
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={}", settings.clients))
        .arg(format!("--jobs={}", settings.threads))
        .arg(format!("--time={}", settings.duration.as_secs().max(1)))
        .arg(format!("--file={}", script_path.display()))
        .arg(settings.database);
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        command.env("PGHOST", host);
    }
    if let Some(port) = config.get_ports().first() {
        command.env("PGPORT", port.to_string());
    }
    if let Some(user) = config.get_user() {
        command.env("PGUSER", user);
    }
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", settings.pgbench.display()))?;
    let (output, cpu) = wait_sampling_cpu(child).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{stdout}\n{}",
            output.status,
            crate::server::tail(&stderr, 20)
        );
    }
    let tps = find_number(&stdout, "tps = ").context("pgbench printed no tps")?;
    Ok(BaselineResult {
        script,
        clients: settings.clients,
        threads: settings.threads,
        tps,
        failed_transactions: find_number(&stdout, "number of failed transactions: ")
            .map_or(0, |n| n as u64),
        latency_average_ms: find_number(&stdout, "latency average = "),
        cpu,
        script_path,
        output: stdout,
    })
}

/// Waits for pgbench while sampling CPU counters: from a moment after its connections
/// are open to the last sample before it exits, so that its PostgreSQL backends (which
/// start and end with it) are counted.
async fn wait_sampling_cpu(
    child: tokio::process::Child,
) -> anyhow::Result<(std::process::Output, CpuShares)> {
    let started = Instant::now();
    let mut output = tokio::spawn(child.wait_with_output());
    let mut first: Option<CpuSnapshot> = None;
    let mut last: Option<CpuSnapshot> = None;
    loop {
        tokio::select! {
            result = &mut output => {
                let output = result
                    .context("the pgbench waiter panicked")?
                    .context("waiting for pgbench")?;
                let cpu = match (&first, &last) {
                    (Some(first), Some(last)) => CpuShares::between(first, last),
                    _ => CpuShares::default(),
                };
                return Ok((output, cpu));
            }
            () = tokio::time::sleep(CPU_SAMPLE_INTERVAL) => {
                if started.elapsed() >= CPU_SAMPLE_DELAY {
                    let snapshot = CpuSnapshot::take(&[]);
                    first.get_or_insert_with(|| snapshot.clone());
                    last = Some(snapshot);
                }
            }
        }
    }
}

fn script_file_stem(script: Script) -> &'static str {
    match script {
        Script::AddTask => "add_task",
        Script::AgentTurns => "agent",
    }
}

/// The first number after `label` in pgbench's output.
fn find_number(output: &str, label: &str) -> Option<f64> {
    let start = output.find(label)? + label.len();
    output[start..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}

/// pgbench client `n` acts as user `pgb-n`, with a token, an activity log and a
/// conversation whose ids are derived from `n` (so the script can name them).
async fn create_users(client: &tokio_postgres::Client, clients: u32) -> anyhow::Result<()> {
    let last = i64::from(clients) - 1;
    client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO users (id, created_at)
               SELECT 'pgb-' || i, now() FROM generate_series(0, {last}) i ON CONFLICT DO NOTHING;
             INSERT INTO api_tokens (id, user_id, name, token_hash, created_at)
               SELECT gen_random_uuid(), 'pgb-' || i, 'pgbench',
                      sha256(convert_to('pgb-token-' || i, 'UTF8')), now()
               FROM generate_series(0, {last}) i ON CONFLICT DO NOTHING;
             INSERT INTO conversations (id, user_id, title, status, created_at, updated_at)
               SELECT {activity}, 'pgb-' || i, 'Tool activity', 'active', now(), now()
               FROM generate_series(0, {last}) i ON CONFLICT DO NOTHING;
             INSERT INTO conversations (id, user_id, title, status, created_at, updated_at)
               SELECT {conversation}, 'pgb-' || i, 'pgbench', 'active', now(), now()
               FROM generate_series(0, {last}) i ON CONFLICT DO NOTHING;
             COMMIT;",
            activity = ACTIVITY_ID.replace(":client_id", "i"),
            conversation = CONVERSATION_ID.replace(":client_id", "i"),
        ))
        .await
        .context("creating pgbench's users")
}

/// An audit record the server wrote: its content and `tool_calls` JSON.
struct Record {
    content: String,
    tool_calls: String,
}

/// The latest successful record of each tool, and the latest user and assistant
/// messages, from the server run.
async fn sample_records(
    client: &tokio_postgres::Client,
) -> anyhow::Result<HashMap<String, Record>> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (kind) kind, content, tool_calls FROM (
                 SELECT CASE WHEN role = 'tool' THEN tool_calls->>'tool' ELSE role END AS kind,
                        content, tool_calls::text AS tool_calls, id
                 FROM messages
                 WHERE user_id LIKE 'bench-%'
                   AND (role <> 'tool' OR (tool_calls->>'ok')::boolean)
             ) m ORDER BY kind, id DESC",
            &[],
        )
        .await
        .context("reading the server run's audit records")?;
    Ok(rows
        .iter()
        .map(|row| {
            let kind: String = row.get(0);
            let record = Record {
                content: row.get(1),
                tool_calls: row.get::<_, Option<String>>(2).unwrap_or_default(),
            };
            (kind, record)
        })
        .collect())
}

// Per-client values, computed in SQL from pgbench's :client_id.
const USER_ID: &str = "('pgb-' || :client_id)";
/// The server opens a transaction with one simple query, `BEGIN; SET LOCAL
/// statement_timeout = …; SET LOCAL todo.user_id = …` (see `db::pg::begin_sql`). pgbench's
/// prepared mode cannot send several commands in one query, so the baseline sends a bare
/// BEGIN: the same round trip, less work for the database (a ratio that errs against us).
const BEGIN: &str = "BEGIN;\n";
const ACTIVITY_ID: &str = "('00000000-0000-8000-8000-' || lpad(:client_id::text, 12, '0'))::uuid";
const CONVERSATION_ID: &str =
    "('00000000-0000-4000-9000-' || lpad(:client_id::text, 12, '0'))::uuid";
/// A time-ordered uuid, as the server's UUIDv7 ids are.
const TIME_ORDERED_UUID: &str = "encode(overlay(uuid_send(gen_random_uuid()) placing \
     substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) \
     from 1 for 6), 'hex')::uuid";
const TASK_COLUMNS: &str = "id, user_id, title, description, completed, idempotency_key, \
     created_at, updated_at, completed_at";
const MESSAGE_COLUMNS: &str = "id, conversation_id, user_id, role, content, tool_calls, created_at";
const CONVERSATION_COLUMNS: &str = "id, user_id, title, status, summary, \
     summary_through_message_id, created_at, updated_at, archived_at";

/// A SQL text literal pgbench leaves alone: pgbench reads `:name` anywhere as a variable,
/// and JSON is full of colons, so the text travels base64-encoded.
fn literal(text: &str) -> String {
    format!(
        "convert_from(decode('{}', 'base64'), 'UTF8')",
        BASE64.encode(text)
    )
}

/// Builds the pgbench script for `script`.
fn script_text(
    script: Script,
    token_lookup: bool,
    records: &HashMap<String, Record>,
) -> anyhow::Result<String> {
    let record = |kind: &str| {
        records
            .get(kind)
            .with_context(|| format!("the server run left no `{kind}` record to copy"))
    };
    let builder = ScriptBuilder { token_lookup };
    let mut text = String::from("-- Generated by benches/load (see benches/load/baseline.rs).\n");
    match script {
        Script::AddTask => {
            text += &builder.add_task(record("add_task")?, false);
        }
        Script::AgentTurns => {
            for completing in [false, true] {
                text += &builder.append("user", record("user")?, record("append_message")?);
                text += &builder.history(record("get_conversation_history")?);
                text += &builder.list_tasks(record("list_tasks")?);
                text += &if completing {
                    builder.complete_task(record("complete_task")?)
                } else {
                    builder.add_task(record("add_task")?, true)
                };
                text +=
                    &builder.append("assistant", record("assistant")?, record("append_message")?);
            }
        }
    }
    Ok(text)
}

/// The statements of each tool call, as the server issues them.
struct ScriptBuilder {
    token_lookup: bool,
}

impl ScriptBuilder {
    /// The bearer token lookup each HTTP request makes before its call.
    fn token(&self) -> String {
        if !self.token_lookup {
            return String::new();
        }
        "SELECT id, user_id, name, token_hash, created_at, expires_at, revoked_at FROM api_tokens \
         WHERE token_hash = sha256(convert_to('pgb-token-' || :client_id, 'UTF8')) LIMIT 1;\n"
            .to_owned()
    }

    /// The audit record insert that ends every call.
    fn audit(&self, destination: &str, record: &Record) -> String {
        format!(
            "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, created_at) \
             VALUES ({destination}, {USER_ID}, 'tool', {}, ({})::jsonb, now()) RETURNING {MESSAGE_COLUMNS};\n",
            literal(&record.content),
            literal(&record.tool_calls),
        )
    }

    /// The ownership check of a task tool's `conversation_id`.
    fn conversation_check(&self) -> String {
        format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE id = {CONVERSATION_ID} AND user_id = {USER_ID} LIMIT 1;\n"
        )
    }

    /// add_task; `in_conversation`: with the agent's conversation_id (checked, and the
    /// record goes there), the new task's id kept as :added_id for complete_task.
    fn add_task(&self, record: &Record, in_conversation: bool) -> String {
        let (check, destination, capture) = if in_conversation {
            (self.conversation_check(), CONVERSATION_ID, " \\gset added_")
        } else {
            (String::new(), ACTIVITY_ID, ";")
        };
        format!(
            "{token}{BEGIN}{check}\
             INSERT INTO tasks (id, user_id, title, description, completed, idempotency_key, created_at, updated_at) \
             VALUES ({TIME_ORDERED_UUID}, {USER_ID}, 'Task of pgbench: buy oat milk and call the plumber', NULL, false, \
             gen_random_uuid()::text, now(), now()) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING {TASK_COLUMNS}{capture}\n\
             UPDATE users SET task_count = task_count + 1 WHERE id = {USER_ID} RETURNING task_count;\n\
             {audit}COMMIT;\n",
            token = self.token(),
            audit = self.audit(destination, record),
        )
    }

    fn complete_task(&self, record: &Record) -> String {
        format!(
            "{token}{BEGIN}{check}\
             UPDATE tasks SET completed = true, completed_at = now(), updated_at = now() \
             WHERE id = :added_id AND user_id = {USER_ID} AND completed = false RETURNING {TASK_COLUMNS};\n\
             {audit}COMMIT;\n",
            token = self.token(),
            check = self.conversation_check(),
            audit = self.audit(CONVERSATION_ID, record),
        )
    }

    fn list_tasks(&self, record: &Record) -> String {
        format!(
            "{token}{BEGIN}{check}\
             SELECT {TASK_COLUMNS} FROM tasks WHERE user_id = {USER_ID} AND completed = false \
             ORDER BY id DESC LIMIT 51;\n{audit}COMMIT;\n",
            token = self.token(),
            check = self.conversation_check(),
            audit = self.audit(CONVERSATION_ID, record),
        )
    }

    fn history(&self, record: &Record) -> String {
        format!(
            "{token}{BEGIN}{check}\
             SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = {CONVERSATION_ID} \
             AND user_id = {USER_ID} ORDER BY id DESC LIMIT 51;\n{audit}COMMIT;\n",
            token = self.token(),
            check = self.conversation_check(),
            audit = self.audit(ACTIVITY_ID, record),
        )
    }

    /// append_message of a `role` message with the content of `message`.
    fn append(&self, role: &str, message: &Record, record: &Record) -> String {
        format!(
            "{token}{BEGIN}\
             UPDATE conversations SET updated_at = now(), message_count = message_count + 1 \
             WHERE id = {CONVERSATION_ID} AND user_id = {USER_ID} RETURNING status, message_count;\n\
             INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, created_at) \
             VALUES ({CONVERSATION_ID}, {USER_ID}, '{role}', {content}, NULL, now()) RETURNING {MESSAGE_COLUMNS};\n\
             {audit}COMMIT;\n",
            token = self.token(),
            content = literal(&message.content),
            audit = self.audit(ACTIVITY_ID, record),
        )
    }
}
