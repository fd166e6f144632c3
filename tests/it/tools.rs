//! Every tool, through a real MCP client talking to the real binary over stdio, on both
//! backends. Every successful result is also checked against the tool's output schema.

use crate::support;

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};
use support::mcp::result_text;
use support::{McpClient, READ_ONLY_TOOLS, TOOL_NAMES, TestDb, connect_in_process};

const TASK_FIELDS: [&str; 13] = [
    "id",
    "title",
    "description",
    "due",
    "priority",
    "labels",
    "parent_task_id",
    "repeat",
    "estimate_minutes",
    "completed",
    "created_at",
    "updated_at",
    "completed_at",
];
const MESSAGE_FIELDS: [&str; 8] = [
    "id",
    "conversation_id",
    "kind",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "created_at",
];
const CALLS_LOG_TITLE: &str = "Tool activity";
const READS_LOG_TITLE: &str = "Tool activity: reads of the activity log";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A server session that checks every successful result against the tool's output schema.
struct Server {
    client: McpClient,
    output_schemas: HashMap<String, Value>,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let client = connect_in_process(db.url(), None, &[]).await;
        let output_schemas = client
            .list_tools()
            .await
            .into_iter()
            .filter_map(|tool| {
                let schema = tool.output_schema?;
                Some((tool.name.to_string(), Value::Object((*schema).clone())))
            })
            .collect();
        Server {
            client,
            output_schemas,
        }
    }

    /// Calls a tool that must succeed; returns its structured content, checked against the
    /// tool's output schema.
    async fn ok(&self, tool: &str, args: Value) -> Value {
        let value = self.client.call_ok(tool, args).await;
        let schema = self
            .output_schemas
            .get(tool)
            .unwrap_or_else(|| panic!("tools/list gave no output schema for {tool}"));
        if let Err(problem) = check_shape(schema, schema, &value, "$") {
            panic!("{tool} result does not match its output schema: {problem}\nresult: {value:#}");
        }
        value
    }

    /// Calls a tool that must fail with a tool error (`isError: true`); returns its text.
    async fn err(&self, tool: &str, args: Value) -> String {
        let shown = args.to_string();
        let result = self.client.call(tool, args).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {shown} should have failed; structured content: {:?}",
            result.structured_content
        );
        result_text(&result)
    }

    async fn add_task(&self, args: Value) -> Value {
        self.ok("add_task", args).await["task"].clone()
    }

    async fn add_titled(&self, title: &str) -> Value {
        self.add_task(json!({ "title": title })).await
    }

    /// One page of `list_tasks`: its tasks and next cursor.
    async fn list_tasks(&self, args: Value) -> (Vec<Value>, Option<String>) {
        let page = self.ok("list_tasks", args).await;
        let tasks = page["tasks"].as_array().expect("tasks is an array").clone();
        (tasks, page["next_cursor"].as_str().map(str::to_owned))
    }

    /// Titles of the tasks `list_tasks` returns on one page for `args`.
    async fn task_titles(&self, args: Value) -> Vec<String> {
        let (tasks, _) = self.list_tasks(args).await;
        strings(&tasks, "title")
    }

    async fn update_task(&self, task_id: &Value, changes: Value) -> Value {
        let mut args = changes;
        args["task_id"] = task_id.clone();
        self.ok("update_task", args).await["task"].clone()
    }

    async fn start_conversation(&self, title: &str) -> String {
        let result = self
            .ok("start_conversation", json!({ "title": title }))
            .await;
        text(&result["conversation"], "id")
    }

    async fn append(&self, conversation_id: &str, role: &str, content: &str) -> Value {
        let args = json!({ "conversation_id": conversation_id, "role": role, "content": content });
        self.ok("append_message", args).await["message"].clone()
    }

    async fn history(&self, args: Value) -> Value {
        self.ok("get_conversation_history", args).await
    }

    /// Every conversation `list_conversations` returns, following its cursor with `limit`.
    async fn all_conversations(&self, include_archived: bool, limit: i64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut args = json!({ "include_archived": include_archived, "limit": limit });
            if let Some(cursor) = &cursor {
                args["cursor"] = json!(cursor);
            }
            let page = self.ok("list_conversations", args).await;
            let conversations = page["conversations"].as_array().unwrap();
            assert!(
                conversations.len() as i64 <= limit,
                "page over limit: {page}"
            );
            all.extend(conversations.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(conversations.len() as i64, limit, "short page: {page}");
                    cursor = Some(next.to_owned());
                }
                None => return all,
            }
        }
    }
}

/// A minimal JSON Schema check, enough for these output schemas (`$ref` into `$defs`, `type`,
/// `required`, `properties`, `items`), and stricter in one way: an object may have no
/// property its schema does not list.
fn check_shape(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .ok_or_else(|| format!("{path}: unsupported $ref {reference}"))?;
        let target = root["$defs"]
            .get(name)
            .ok_or_else(|| format!("{path}: $ref {reference} not in $defs"))?;
        return check_shape(root, target, value, path);
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{path}: unsupported type {other}")),
        };
        let matches = allowed.iter().any(|kind| match *kind {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !matches {
            return Err(format!("{path}: {value} is not of type {allowed:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{path}: missing required property `{name}`"));
            }
        }
        if let Some(properties) = properties {
            for (name, item) in object {
                let property = properties
                    .get(name)
                    .ok_or_else(|| format!("{path}: property `{name}` is not in the schema"))?;
                check_shape(root, property, item, &format!("{path}.{name}"))?;
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check_shape(root, items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` should be a string in {value}"))
        .to_owned()
}

fn int(value: &Value, key: &str) -> i64 {
    value[key]
        .as_i64()
        .unwrap_or_else(|| panic!("`{key}` should be an integer in {value}"))
}

fn strings(items: &[Value], key: &str) -> Vec<String> {
    items.iter().map(|item| text(item, key)).collect()
}

fn ints(items: &[Value], key: &str) -> Vec<i64> {
    items.iter().map(|item| int(item, key)).collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {value}"))
        .keys()
        .cloned()
        .collect()
}

fn set_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// An RFC 3339 UTC time with microseconds, e.g. `2026-11-24T13:29:30.995875Z`.
fn assert_utc_micros(value: &Value, what: &str) {
    let time = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a time string, got {value}"));
    let parsed = chrono::DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|e| panic!("{what} = {time:?} is not RFC 3339: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "{what} = {time:?}");
    assert!(
        time.ends_with('Z') && time.len() == "2026-01-01T00:00:00.000000Z".len(),
        "{what} = {time:?} should be UTC with microseconds"
    );
}

fn assert_uuid(value: &Value, what: &str) {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, got {value}"));
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{what} = {id:?} is not a UUID: {e}"));
}

fn assert_unique(ids: &[String], what: &str) {
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what} has duplicates: {ids:?}");
}

// ---------------------------------------------------------------------------------------------
// tools/list
// ---------------------------------------------------------------------------------------------

async fn tools_list_has_every_tool_with_schemas_and_annotations(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let tools = client.list_tools().await;
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, *TOOL_NAMES, "tools/list names ({})", db.name());

    for tool in &tools {
        let name = tool.name.as_ref();
        let output = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no outputSchema"));
        assert_eq!(
            output.get("type"),
            Some(&json!("object")),
            "{name} outputSchema"
        );
        assert!(
            output.get("properties").is_some_and(Value::is_object),
            "{name} outputSchema has no properties: {output:?}"
        );
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{name} inputSchema"
        );
        let annotations = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no annotations"));
        assert_eq!(
            annotations.read_only_hint,
            Some(READ_ONLY_TOOLS.contains(&name)),
            "{name} readOnlyHint"
        );
        assert!(
            annotations.destructive_hint.is_some(),
            "{name} destructiveHint"
        );
        assert!(
            annotations.idempotent_hint.is_some(),
            "{name} idempotentHint"
        );
    }

    let by_name = |name: &str| tools.iter().find(|t| t.name == name).unwrap();
    assert_eq!(
        by_name("add_task").input_schema.get("required"),
        Some(&json!(["title"]))
    );
    assert_eq!(
        by_name("delete_task")
            .annotations
            .as_ref()
            .unwrap()
            .destructive_hint,
        Some(true)
    );
    assert_eq!(
        by_name("complete_task")
            .annotations
            .as_ref()
            .unwrap()
            .idempotent_hint,
        Some(true)
    );
    let task_output = by_name("add_task").output_schema.clone().unwrap();
    let task_schema = &task_output["$defs"]["Task"];
    assert_eq!(
        task_schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        TASK_FIELDS.into_iter().collect::<BTreeSet<_>>(),
        "Task schema's required fields"
    );
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

async fn add_task_returns_the_whole_task(db: TestDb) {
    let server = Server::start(&db).await;

    let plain = server.add_titled("buy milk").await;
    assert_eq!(keys(&plain), set_of(&TASK_FIELDS), "task fields: {plain}");
    assert_uuid(&plain["id"], "id");
    assert_eq!(plain["title"], "buy milk");
    assert_eq!(plain["description"], Value::Null);
    assert_eq!(plain["completed"], false);
    assert_eq!(plain["completed_at"], Value::Null);
    assert_utc_micros(&plain["created_at"], "created_at");
    assert_eq!(plain["updated_at"], plain["created_at"]);

    let detailed = server
        .add_task(json!({ "title": "call the plumber", "description": "the kitchen tap drips" }))
        .await;
    assert_eq!(detailed["title"], "call the plumber");
    assert_eq!(detailed["description"], "the kitchen tap drips");
    assert_eq!(detailed["completed"], false);
    assert_ne!(detailed["id"], plain["id"]);

    let (tasks, next) = server.list_tasks(json!({})).await;
    assert_eq!(
        tasks,
        vec![detailed, plain],
        "list shows both, newest first"
    );
    assert_eq!(next, None);
    server.client.close().await;
}

async fn add_task_retry_with_idempotency_key_creates_one_task(db: TestDb) {
    let server = Server::start(&db).await;

    let asked = json!({
        "title": "pay rent", "labels": ["home"], "due": "2026-12-01", "idempotency_key": "turn-1"
    });
    let added = server.ok("add_task", asked.clone()).await;
    assert_eq!(added["replayed"], false, "{added}");
    let first = added["task"].clone();
    let retry = server.ok("add_task", asked.clone()).await;
    assert_eq!(
        retry,
        json!({ "task": first, "replayed": true }),
        "a retry returns the task the first call created, marked replayed"
    );
    // The same key with other arguments is a conflict naming the key, as commit_turn's.
    for (field, other) in [
        ("title", json!("pay the rent!")),
        ("labels", json!(["Home"])),
        ("due", json!("2026-12-02")),
        ("priority", json!("high")),
    ] {
        let mut changed = asked.clone();
        changed[field] = other;
        let error = server.err("add_task", changed).await;
        assert!(
            error.contains("conflict") && error.contains("idempotency_key `turn-1`"),
            "{field}: {error}"
        );
    }
    // Arguments that check to the same fields are the same request.
    let mut spaced = asked.clone();
    spaced["title"] = json!("  pay rent ");
    assert_eq!(server.ok("add_task", spaced).await["replayed"], true);
    assert_eq!(server.task_titles(json!({})).await, ["pay rent"]);

    let other = server
        .add_task(json!({ "title": "pay rent", "idempotency_key": "turn-2" }))
        .await;
    assert_ne!(other["id"], first["id"], "another key is another task");
    let (tasks, _) = server.list_tasks(json!({})).await;
    assert_eq!(
        strings(&tasks, "id"),
        [text(&other, "id"), text(&first, "id")]
    );
    server.client.close().await;
}

async fn list_tasks_filters_by_status(db: TestDb) {
    let server = Server::start(&db).await;
    let a = server.add_titled("a").await;
    let b = server.add_titled("b").await;
    let c = server.add_titled("c").await;
    let d = server.add_titled("d").await;
    for task in [&b, &d] {
        server
            .ok("complete_task", json!({ "task_id": task["id"] }))
            .await;
    }

    assert_eq!(server.task_titles(json!({})).await, ["d", "c", "b", "a"]);
    assert_eq!(
        server.task_titles(json!({ "status": "all" })).await,
        ["d", "c", "b", "a"]
    );
    assert_eq!(
        server.task_titles(json!({ "status": "pending" })).await,
        ["c", "a"]
    );
    let (completed, _) = server.list_tasks(json!({ "status": "completed" })).await;
    assert_eq!(strings(&completed, "title"), ["d", "b"]);
    assert!(completed.iter().all(|t| t["completed"] == true));
    assert!(completed.iter().all(|t| t["completed_at"].is_string()));
    let (pending, _) = server.list_tasks(json!({ "status": "pending" })).await;
    assert_eq!(pending, [c, a], "pending tasks are returned unchanged");
    server.client.close().await;
}

async fn list_tasks_query_is_a_case_insensitive_literal_substring(db: TestDb) {
    let server = Server::start(&db).await;
    for title in [
        "Buy MILK",
        "milkshake recipe",
        "100% done",
        "100 percent done",
        "snake_case name",
        "snakeXcase name",
        r"C:\temp cleanup",
        "Ctemp cleanup",
    ] {
        server.add_titled(title).await;
    }
    server
        .add_task(json!({ "title": "groceries", "description": "eggs, Oat Milk, bread" }))
        .await;

    let titles = |query: &'static str| server.task_titles(json!({ "query": query }));
    assert_eq!(
        titles("milk").await,
        ["groceries", "milkshake recipe", "Buy MILK"],
        "matches title or description, any case, newest first"
    );
    assert_eq!(
        titles("MiLK").await,
        ["groceries", "milkshake recipe", "Buy MILK"]
    );
    assert_eq!(titles("oat milk").await, ["groceries"]);
    assert_eq!(titles("%").await, ["100% done"], "`%` is literal");
    assert_eq!(titles("0% D").await, ["100% done"]);
    assert_eq!(titles("_").await, ["snake_case name"], "`_` is literal");
    assert_eq!(titles("e_c").await, ["snake_case name"]);
    assert_eq!(titles(r"\").await, [r"C:\temp cleanup"], "`\\` is literal");
    assert_eq!(titles("nothing like this").await, Vec::<String>::new());
    assert_eq!(
        server
            .task_titles(json!({ "query": "done", "status": "pending", "limit": 1 }))
            .await,
        ["100 percent done"]
    );
    server.client.close().await;
}

async fn list_tasks_query_folds_non_ascii_case(db: TestDb) {
    let server = Server::start(&db).await;
    server.add_titled("Crème BRÛLÉE").await;
    server.add_titled("ÄPFEL kaufen").await;
    server.add_titled("plain").await;

    let titles = |query: &'static str| server.task_titles(json!({ "query": query }));
    // Even the exact spelling of the title must match.
    assert_eq!(titles("BRÛLÉE").await, ["Crème BRÛLÉE"], "exact case");
    assert_eq!(titles("ÄPFEL").await, ["ÄPFEL kaufen"], "exact case");
    assert_eq!(titles("brûlée").await, ["Crème BRÛLÉE"]);
    assert_eq!(titles("äpfel").await, ["ÄPFEL kaufen"]);
    assert_eq!(titles("CRÈME").await, ["Crème BRÛLÉE"]);
    server.client.close().await;
}

async fn list_tasks_pages_newest_first_without_gaps_or_duplicates(db: TestDb) {
    let server = Server::start(&db).await;
    let mut created = Vec::new();
    for i in 1..=7 {
        created.push(text(&server.add_titled(&format!("task {i}")).await, "id"));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({ "limit": 2 });
        if let Some(cursor) = &cursor {
            args["cursor"] = json!(cursor);
        }
        let (tasks, next) = server.list_tasks(args).await;
        page_sizes.push(tasks.len());
        seen.extend(strings(&tasks, "id"));
        if seen.len() == 4 {
            // Keyset paging is stable under inserts: a new task does not shift later pages.
            server.add_titled("added while paging").await;
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(page_sizes, [2, 2, 2, 1]);
    assert_eq!(
        seen, newest_first,
        "pages concatenate to every task, newest first"
    );
    assert_unique(&seen, "paged task ids");

    let (all, next) = server.list_tasks(json!({ "limit": 200 })).await;
    assert_eq!(all.len(), 8);
    assert_eq!(all[0]["title"], "added while paging");
    assert_eq!(next, None);
    let (first, next) = server.list_tasks(json!({})).await;
    assert_eq!(first.len(), 8, "default limit (50) covers all 8");
    assert_eq!(next, None);
    let (exact, next) = server.list_tasks(json!({ "limit": 8 })).await;
    assert_eq!(exact.len(), 8);
    assert_eq!(
        next, None,
        "no next page when the last page is exactly full"
    );
    server.client.close().await;
}

async fn complete_task_is_idempotent_and_keeps_completed_at(db: TestDb) {
    let server = Server::start(&db).await;
    let task = server.add_titled("water the plants").await;
    let other = server.add_titled("untouched").await;

    let done = server
        .ok("complete_task", json!({ "task_id": task["id"] }))
        .await["task"]
        .clone();
    assert_eq!(done["id"], task["id"]);
    assert_eq!(done["title"], "water the plants");
    assert_eq!(done["completed"], true);
    assert_utc_micros(&done["completed_at"], "completed_at");
    assert_eq!(done["updated_at"], done["completed_at"]);
    assert_eq!(done["created_at"], task["created_at"]);
    assert!(text(&done, "completed_at") >= text(&task, "created_at"));

    let again = server
        .ok("complete_task", json!({ "task_id": task["id"] }))
        .await["task"]
        .clone();
    assert_eq!(again, done, "completing again changes nothing");

    let (completed, _) = server.list_tasks(json!({ "status": "completed" })).await;
    assert_eq!(completed, [done]);
    let (pending, _) = server.list_tasks(json!({ "status": "pending" })).await;
    assert_eq!(pending, [other]);
    server.client.close().await;
}

async fn update_task_changes_each_field(db: TestDb) {
    let server = Server::start(&db).await;
    let task = server
        .add_task(json!({ "title": "draft", "description": "first notes" }))
        .await;
    let id = task["id"].clone();
    let update = |changes: Value| server.update_task(&id, changes);

    let retitled = update(json!({ "title": "final" })).await;
    assert_eq!(retitled["title"], "final");
    assert_eq!(
        retitled["description"], "first notes",
        "left out, left as is"
    );
    assert_eq!(retitled["completed"], false);
    assert_eq!(retitled["created_at"], task["created_at"]);
    assert!(text(&retitled, "updated_at") >= text(&task, "updated_at"));

    let described = update(json!({ "description": "second notes" })).await;
    assert_eq!(described["title"], "final");
    assert_eq!(described["description"], "second notes");

    let cleared = update(json!({ "description": "" })).await;
    assert_eq!(
        cleared["description"],
        Value::Null,
        "\"\" clears the description"
    );
    assert_eq!(cleared["title"], "final");

    let completed = update(json!({ "completed": true })).await;
    assert_eq!(completed["completed"], true);
    assert_utc_micros(&completed["completed_at"], "completed_at");

    let still = update(json!({ "completed": true, "title": "final!" })).await;
    assert_eq!(still["title"], "final!");
    assert_eq!(still["completed"], true);
    assert_eq!(
        still["completed_at"], completed["completed_at"],
        "completing a completed task keeps its completion time"
    );

    let reopened = update(json!({ "completed": false })).await;
    assert_eq!(reopened["completed"], false);
    assert_eq!(
        reopened["completed_at"],
        Value::Null,
        "reopening clears completed_at"
    );
    assert_eq!(reopened["title"], "final!");

    let all_at_once = update(json!({ "title": "t", "description": "d", "completed": true })).await;
    assert_eq!(
        (
            &all_at_once["title"],
            &all_at_once["description"],
            &all_at_once["completed"]
        ),
        (&json!("t"), &json!("d"), &json!(true))
    );

    let (tasks, _) = server.list_tasks(json!({})).await;
    assert_eq!(tasks, [all_at_once], "list shows the updated task");

    let nothing = server.err("update_task", json!({ "task_id": id })).await;
    assert!(
        nothing.starts_with("invalid_argument: nothing to change: besides task_id"),
        "an update with nothing to change must say so: {nothing}"
    );
    assert!(
        !nothing.contains("`title`"),
        "an update with nothing to change must not blame `title`: {nothing}"
    );
    server.client.close().await;
}

async fn delete_task_removes_it_for_good(db: TestDb) {
    let server = Server::start(&db).await;
    let keep = server.add_titled("keep me").await;
    let gone = server.add_titled("delete me").await;
    let id = text(&gone, "id");

    let deleted = server.ok("delete_task", json!({ "task_id": id })).await;
    assert_eq!(
        deleted,
        json!({ "task_id": id, "deleted": true, "subtasks_deleted": 0 })
    );
    let (tasks, _) = server.list_tasks(json!({})).await;
    assert_eq!(tasks, [keep], "only the other task is left");

    let not_found = format!("not_found: task {id} not found");
    for (tool, args) in [
        ("complete_task", json!({ "task_id": id })),
        ("update_task", json!({ "task_id": id, "title": "back" })),
        ("delete_task", json!({ "task_id": id })),
    ] {
        assert_eq!(server.err(tool, args).await, not_found, "{tool}");
    }
    assert_eq!(server.task_titles(json!({})).await, ["keep me"]);
    server.client.close().await;
}

async fn get_task_reads_one_task(db: TestDb) {
    let server = Server::start(&db).await;
    let conversation = server.start_conversation("reading").await;
    let first = server.add_titled("first").await;
    let second = server
        .add_task(json!({ "title": "second", "description": "details" }))
        .await;
    for task in [&first, &second] {
        let read = server
            .ok(
                "get_task",
                json!({ "task_id": task["id"], "conversation_id": conversation }),
            )
            .await;
        assert_eq!(read, json!({ "task": task }));
    }
    let completed = server
        .ok("complete_task", json!({ "task_id": first["id"] }))
        .await["task"]
        .clone();
    let read = server
        .ok("get_task", json!({ "task_id": first["id"] }))
        .await;
    assert_eq!(read["task"], completed, "reads the task as it is now");

    let unknown = "5b0f8e2c-3d4a-4f6b-9c1d-2e3f4a5b6c7d";
    assert_eq!(
        server.err("get_task", json!({ "task_id": unknown })).await,
        format!("not_found: task {unknown} not found")
    );
    // Its records went where its conversation_id said.
    let history = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    let records: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["tool_calls"]["tool"])
        .collect();
    assert_eq!(records, ["get_task", "get_task"]);
    server.client.close().await;
}

async fn task_tools_record_into_the_named_conversation(db: TestDb) {
    let server = Server::start(&db).await;
    let conversation = server.start_conversation("planning").await;
    server.append(&conversation, "user", "add milk").await;
    let task = server
        .add_task(json!({ "title": "milk", "conversation_id": conversation }))
        .await;
    server
        .ok(
            "complete_task",
            json!({ "task_id": task["id"], "conversation_id": conversation }),
        )
        .await;

    let history = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(strings(messages, "role"), ["user", "tool", "tool"]);
    let record = &messages[1]["tool_calls"];
    assert_eq!(record["tool"], "add_task");
    assert_eq!(record["ok"], true);
    assert_eq!(
        record["arguments"],
        json!({ "title": "milk", "conversation_id": conversation })
    );
    assert_eq!(record["result"]["task"], task);
    assert!(record["duration_ms"].is_number(), "{record}");
    assert_eq!(messages[2]["tool_calls"]["tool"], "complete_task");
    assert_eq!(
        messages[2]["tool_calls"]["result"]["task"]["completed"],
        true
    );
    server.client.close().await;
}

// ---------------------------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------------------------

async fn start_and_list_conversations_with_paging(db: TestDb) {
    let server = Server::start(&db).await;
    let untitled = server.ok("start_conversation", json!({})).await["conversation"].clone();
    assert_uuid(&untitled["id"], "conversation id");
    assert_eq!(untitled["title"], Value::Null);
    assert_eq!(untitled["status"], "active");
    assert_eq!(untitled["summary"], Value::Null);
    assert_eq!(untitled["summary_through_message_id"], Value::Null);
    assert_eq!(untitled["archived_at"], Value::Null);
    assert_utc_micros(&untitled["created_at"], "created_at");

    let mut started = vec![text(&untitled, "id")];
    for i in 1..=5 {
        started.push(server.start_conversation(&format!("chat {i}")).await);
    }

    let listed = server.all_conversations(false, 2).await;
    let ids = strings(&listed, "id");
    assert_unique(&ids, "paged conversation ids");
    assert_eq!(listed.len(), 8, "6 started + 2 activity logs: {ids:?}");
    let mine: Vec<String> = ids
        .iter()
        .filter(|id| started.contains(id))
        .cloned()
        .collect();
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    assert_eq!(
        mine, newest_first,
        "started conversations come newest first"
    );
    let mut logs: Vec<String> = listed
        .iter()
        .filter(|c| !started.contains(&text(c, "id")))
        .map(|c| text(c, "title"))
        .collect();
    logs.sort();
    assert_eq!(logs, [CALLS_LOG_TITLE, READS_LOG_TITLE]);

    let one_page = server.all_conversations(false, 200).await;
    assert_eq!(one_page, listed, "paging and one big page agree");
    server.client.close().await;
}

async fn list_conversations_is_newest_first(db: TestDb) {
    let server = Server::start(&db).await;
    for i in 1..=3 {
        server.start_conversation(&format!("chat {i}")).await;
    }
    let listed = server.all_conversations(false, 50).await;
    let created = strings(&listed, "created_at");
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        created,
        sorted,
        "list_conversations should be newest first (by created_at); got titles {:?}",
        listed
            .iter()
            .map(|c| c["title"].clone())
            .collect::<Vec<_>>()
    );
    server.client.close().await;
}

async fn append_message_ids_strictly_increase(db: TestDb) {
    let server = Server::start(&db).await;
    let conversation = server.start_conversation("ids").await;
    let other = server.start_conversation("other").await;

    let mut messages = Vec::new();
    for (i, role) in ["user", "assistant", "system", "user", "assistant"]
        .into_iter()
        .enumerate()
    {
        let message = server
            .append(&conversation, role, &format!("message {i}"))
            .await;
        assert_eq!(keys(&message), set_of(&MESSAGE_FIELDS), "{message}");
        assert_eq!(message["conversation_id"], conversation.as_str());
        assert_eq!(message["role"], role);
        assert_eq!(message["content"], format!("message {i}"));
        assert_eq!(message["tool_calls"], Value::Null);
        assert_utc_micros(&message["created_at"], "created_at");
        messages.push(message);
        // Interleave another conversation: ids keep increasing across conversations.
        messages.push(
            server
                .append(&other, "user", &format!("elsewhere {i}"))
                .await,
        );
    }
    let ids = ints(&messages, "id");
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "message ids should strictly increase: {ids:?}"
    );

    let history = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    let stored = history["messages"].as_array().unwrap();
    let expected: Vec<Value> = messages.iter().step_by(2).cloned().collect();
    assert_eq!(stored, &expected, "history holds exactly what was appended");
    server.client.close().await;
}

async fn history_pages_back_to_the_beginning(db: TestDb) {
    let server = Server::start(&db).await;
    let conversation = server.start_conversation("long chat").await;
    let mut appended = Vec::new();
    for i in 1..=7 {
        appended.push(server.append(&conversation, "user", &format!("m{i}")).await);
    }
    let all_ids = ints(&appended, "id");

    let full = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    assert_eq!(full["conversation"]["id"], conversation.as_str());
    assert_eq!(full["conversation"]["title"], "long chat");
    assert_eq!(full["summary"], Value::Null);
    assert_eq!(
        full["messages"].as_array().unwrap(),
        &appended,
        "oldest first"
    );
    assert_eq!(full["next_cursor"], Value::Null);

    let mut pages = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut args = json!({ "conversation_id": conversation, "limit": 3 });
        if let Some(before) = before {
            args["before"] = json!(before);
        }
        let page = server.history(args).await;
        let ids = ints(page["messages"].as_array().unwrap(), "id");
        before = page["next_cursor"].as_i64();
        if let Some(cursor) = before {
            assert_eq!(cursor, ids[0], "next_cursor is the page's oldest id");
        }
        pages.push(ids);
        if before.is_none() {
            break;
        }
    }
    assert_eq!(
        pages,
        [
            all_ids[4..7].to_vec(),
            all_ids[1..4].to_vec(),
            all_ids[0..1].to_vec()
        ],
        "pages of 3, latest first, each oldest first"
    );

    let exact = server
        .history(json!({ "conversation_id": conversation, "limit": 7 }))
        .await;
    assert_eq!(exact["messages"].as_array().unwrap().len(), 7);
    assert_eq!(
        exact["next_cursor"],
        Value::Null,
        "nothing before the first message"
    );
    let before_first = server
        .history(json!({ "conversation_id": conversation, "before": all_ids[0] }))
        .await;
    assert_eq!(before_first["messages"], json!([]));
    assert_eq!(before_first["next_cursor"], Value::Null);
    server.client.close().await;
}

async fn set_conversation_summary_records_long_term_context(db: TestDb) {
    let server = Server::start(&db).await;
    let conversation = server.start_conversation("summarised").await;
    let other = server.start_conversation("other").await;
    let first = server.append(&conversation, "user", "I need eggs").await;
    let second = server
        .append(&conversation, "assistant", "Added eggs")
        .await;
    server.append(&conversation, "user", "and bread").await;
    let foreign = server.append(&other, "user", "unrelated").await;

    let result = server
        .ok(
            "set_conversation_summary",
            json!({
                "conversation_id": conversation,
                "summary": "The user wants eggs.",
                "through_message_id": second["id"],
            }),
        )
        .await;
    let summarised = &result["conversation"];
    assert_eq!(summarised["id"], conversation.as_str());
    assert_eq!(summarised["summary"], "The user wants eggs.");
    assert_eq!(summarised["summary_through_message_id"], second["id"]);

    let history = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    assert_eq!(history["summary"], "The user wants eggs.");
    assert_eq!(history["conversation"], *summarised);
    assert_eq!(history["messages"].as_array().unwrap().len(), 3);

    let error = server
        .err(
            "set_conversation_summary",
            json!({
                "conversation_id": conversation,
                "summary": "wrong",
                "through_message_id": foreign["id"],
            }),
        )
        .await;
    assert!(
        error.starts_with("invalid_argument: invalid `through_message_id`"),
        "a message of another conversation: {error}"
    );
    let unchanged = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    assert_eq!(unchanged["summary"], "The user wants eggs.");
    assert_eq!(
        unchanged["conversation"]["summary_through_message_id"],
        second["id"]
    );

    let without_id = server
        .ok(
            "set_conversation_summary",
            json!({ "conversation_id": conversation, "summary": "eggs and bread" }),
        )
        .await;
    assert_eq!(without_id["conversation"]["summary"], "eggs and bread");
    assert_eq!(
        without_id["conversation"]["summary_through_message_id"],
        Value::Null
    );

    let moved = server
        .ok(
            "set_conversation_summary",
            json!({
                "conversation_id": conversation,
                "summary": "eggs",
                "through_message_id": first["id"],
            }),
        )
        .await;
    assert_eq!(
        moved["conversation"]["summary_through_message_id"],
        first["id"]
    );

    let cleared = server
        .ok(
            "set_conversation_summary",
            json!({ "conversation_id": conversation, "summary": "" }),
        )
        .await;
    assert_eq!(
        cleared["conversation"]["summary"],
        Value::Null,
        "\"\" clears it"
    );
    let history = server
        .history(json!({ "conversation_id": conversation }))
        .await;
    assert_eq!(history["summary"], Value::Null);
    server.client.close().await;
}

async fn archive_conversation_hides_it_and_refuses_appends(db: TestDb) {
    let server = Server::start(&db).await;
    let kept = server.start_conversation("kept").await;
    let archived = server.start_conversation("to archive").await;
    let message = server.append(&archived, "user", "before archiving").await;

    let result = server
        .ok(
            "archive_conversation",
            json!({ "conversation_id": archived }),
        )
        .await;
    let conversation = result["conversation"].clone();
    assert_eq!(conversation["id"], archived.as_str());
    assert_eq!(conversation["status"], "archived");
    assert_utc_micros(&conversation["archived_at"], "archived_at");

    let again = server
        .ok(
            "archive_conversation",
            json!({ "conversation_id": archived }),
        )
        .await;
    assert_eq!(
        again["conversation"], conversation,
        "archiving again changes nothing"
    );

    let visible = strings(&server.all_conversations(false, 50).await, "id");
    assert!(visible.contains(&kept));
    assert!(
        !visible.contains(&archived),
        "archived is hidden: {visible:?}"
    );
    let everything = server.all_conversations(true, 50).await;
    let shown: Vec<&Value> = everything
        .iter()
        .filter(|c| c["id"] == archived.as_str())
        .collect();
    assert_eq!(shown, [&conversation], "include_archived shows it");
    assert_eq!(everything.len(), visible.len() + 1);

    let refused = server
        .err(
            "append_message",
            json!({ "conversation_id": archived, "role": "user", "content": "after" }),
        )
        .await;
    assert!(
        refused.starts_with("conflict: "),
        "append to archived: {refused}"
    );

    let history = server.history(json!({ "conversation_id": archived })).await;
    assert_eq!(history["conversation"], conversation);
    assert_eq!(
        history["messages"],
        json!([message]),
        "history still readable"
    );
    server.client.close().await;
}

both_backends!(
    get_task_reads_one_task,
    tools_list_has_every_tool_with_schemas_and_annotations,
    add_task_returns_the_whole_task,
    add_task_retry_with_idempotency_key_creates_one_task,
    list_tasks_filters_by_status,
    list_tasks_query_is_a_case_insensitive_literal_substring,
    list_tasks_query_folds_non_ascii_case,
    list_tasks_pages_newest_first_without_gaps_or_duplicates,
    complete_task_is_idempotent_and_keeps_completed_at,
    update_task_changes_each_field,
    delete_task_removes_it_for_good,
    task_tools_record_into_the_named_conversation,
    start_and_list_conversations_with_paging,
    list_conversations_is_newest_first,
    append_message_ids_strictly_increase,
    history_pages_back_to_the_beginning,
    set_conversation_summary_records_long_term_context,
    archive_conversation_hides_it_and_refuses_appends,
);
