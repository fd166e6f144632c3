//! mcp-manifest.json and README's tool table are generated from the tool definitions by
//! `todo-mcp manifest`: they must be exactly what it prints, and describe exactly what
//! tools/list returns. `TODO_MCP_BLESS=1 cargo test --test it manifest` rewrites them.

use crate::support;

use serde_json::Value;
use support::{SqliteTestDb, TOOL_NAMES, connect_in_process, todo_mcp};

const README_TABLE_START: &str = "<!-- tools-table";
const README_TABLE_END: &str = "<!-- /tools-table -->";

fn path(file: &str) -> String {
    format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn generated(args: &[&str]) -> String {
    let output = todo_mcp(args, &[]);
    assert!(
        output.status.success(),
        "todo-mcp {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn bless() -> bool {
    std::env::var_os("TODO_MCP_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn committed_manifest_is_what_todo_mcp_manifest_prints() {
    let expected = generated(&["manifest"]);
    let file = path("mcp-manifest.json");
    if bless() {
        std::fs::write(&file, &expected).expect("write mcp-manifest.json");
    }
    let committed = std::fs::read_to_string(&file).expect("read mcp-manifest.json");
    assert!(
        committed == expected,
        "mcp-manifest.json differs from `todo-mcp manifest`: run \
         `TODO_MCP_BLESS=1 cargo test --test it manifest` and commit the result"
    );
}

#[test]
fn readme_tool_table_is_what_todo_mcp_manifest_prints() {
    let expected = generated(&["manifest", "--tools-table"]);
    let file = path("README.md");
    let readme = std::fs::read_to_string(&file).expect("read README.md");
    let start = readme
        .find(README_TABLE_START)
        .and_then(|at| readme[at..].find('\n').map(|eol| at + eol + 1))
        .expect("README.md has a tools-table start marker");
    let end = readme
        .find(README_TABLE_END)
        .expect("README.md has a tools-table end marker");
    if bless() && readme[start..end] != expected {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(&file, updated).expect("write README.md");
        return;
    }
    assert!(
        readme[start..end] == expected,
        "README.md's tool table differs from `todo-mcp manifest --tools-table`: run \
         `TODO_MCP_BLESS=1 cargo test --test it manifest` and commit the result"
    );
}

/// The tests' list of tools (read from the committed manifest) names every tool, and the
/// generated files name them in the same order.
#[test]
fn tests_list_every_tool() {
    let table = generated(&["manifest", "--tools-table"]);
    let in_table: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|row| row.split('`').nth(1))
        .collect();
    assert_eq!(in_table, *TOOL_NAMES);
}

fn manifest() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp-manifest.json");
    let text = std::fs::read_to_string(path).expect("read mcp-manifest.json");
    serde_json::from_str(&text).expect("mcp-manifest.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_tools_match_tools_list() {
    let db = SqliteTestDb::new();
    let client = connect_in_process(db.url(), None, &[]).await;
    let live: Vec<Value> = client
        .list_tools()
        .await
        .iter()
        .map(|tool| serde_json::to_value(tool).expect("tool serializes"))
        .collect();
    client.close().await;

    let manifest = manifest();
    let declared = manifest["tools"]
        .as_array()
        .expect("manifest has a tools array");
    let names = |tools: &[Value]| -> Vec<String> {
        let mut names: Vec<String> = tools
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(declared), names(&live), "tool names differ");
    assert_eq!(live.len(), TOOL_NAMES.len());

    for tool in &live {
        let name = tool["name"].as_str().unwrap_or_default();
        let entry = declared
            .iter()
            .find(|t| t["name"] == tool["name"])
            .unwrap_or_else(|| panic!("{name} missing from the manifest"));
        for key in ["description", "inputSchema", "outputSchema", "annotations"] {
            assert!(!tool[key].is_null(), "tools/list gives {name} no {key}");
            assert_eq!(
                entry[key], tool[key],
                "mcp-manifest.json's {key} of {name} differs from tools/list: regenerate it"
            );
        }
    }
}

#[test]
fn manifest_names_this_version_and_the_stdio_transport() {
    let manifest = manifest();
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let transports = manifest["transports"].as_array().expect("transports");
    assert!(
        transports
            .iter()
            .any(|t| t["type"] == "stdio" && t["args"] == serde_json::json!(["stdio"]))
    );
    let variables: Vec<&str> = manifest["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for expected in ["DATABASE_URL", "TODO_MCP_TOKEN", "TODO_MCP_JWT_SECRET"] {
        assert!(
            variables.contains(&expected),
            "{expected} not in the manifest"
        );
    }
}

/// An optional argument's schema is its plain type (`array`, `boolean`…), so that clients
/// that build arguments from it (the MCP Inspector's forms) send that type; `null` is
/// among its types only where it clears a value, marked `x-null-clears`. Both ways of
/// leaving an argument out still work: omitting it, or sending `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_arguments_have_plain_types_unless_null_clears() {
    let db = SqliteTestDb::new();
    let client = connect_in_process(db.url(), None, &[]).await;
    let mut nullable = Vec::new();
    for tool in client.list_tools().await {
        for (name, property) in tool
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let null_type = match &property["type"] {
                Value::Array(types) => types.iter().any(|t| t == "null"),
                other => other == "null",
            };
            let null_branch = property["anyOf"]
                .as_array()
                .is_some_and(|branches| branches.iter().any(|b| b["type"] == "null"));
            let clears = property["x-null-clears"] == true;
            assert!(
                !(null_type || null_branch) || clears,
                "{}.{name} accepts null in its schema but null clears nothing: {property}",
                tool.name
            );
            if null_type {
                nullable.push(format!("{}.{name}", tool.name));
            }
        }
    }
    assert_eq!(
        nullable,
        [
            "update_task.due",
            "update_task.estimate_minutes",
            "update_task.parent_task_id",
            "update_task.repeat"
        ],
        "the arguments where null clears a value"
    );
    // null still means "not given" where the schema no longer says so.
    let task = client
        .call_ok(
            "add_task",
            serde_json::json!({ "title": "t", "labels": null, "due": null }),
        )
        .await;
    assert_eq!(task["task"]["labels"], serde_json::json!([]));
    client
        .call_ok(
            "list_tasks",
            serde_json::json!({ "overdue": null, "label": null }),
        )
        .await;
    client.close().await;
}
