//! The README's promises, checked: its Claude Desktop configuration launches a working
//! server, and it names the test command CI runs.

mod support;

use serde_json::{Value, json};
use std::process::Stdio;
use support::{PgTestDb, create_token};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The first ```json block of the README that configures `mcpServers`.
fn claude_desktop_config() -> Value {
    let readme = readme();
    readme
        .split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter_map(|block| serde_json::from_str::<Value>(block).ok())
        .find(|config| config.get("mcpServers").is_some())
        .expect("README.md has a ```json block with mcpServers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_desktop_config_launches_a_working_server() {
    let config = claude_desktop_config();
    let (name, server) = config["mcpServers"]
        .as_object()
        .and_then(|servers| servers.iter().next())
        .expect("one server configured");
    assert_eq!(name, "todo");
    let args: Vec<String> = server["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    let env = server["env"].as_object().expect("env");
    assert!(env.contains_key("TODO_MCP_TOKEN") && env.contains_key("DATABASE_URL"));

    // Launch as Claude Desktop would: the configured args and env variables, with the
    // placeholders (binary path, token, Neon URL) replaced by working values.
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "desktop-user");
    let mut command = tokio::process::Command::new(support::bin_path());
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TODO_MCP_TOKEN", &token)
        .env("DATABASE_URL", db.url())
        // Quiet when all is well; warnings and errors still reach the test output.
        .env("TODO_MCP_LOG", "warn")
        .stderr(Stdio::inherit());
    let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn todo-mcp");
    let client = rmcp::ServiceExt::serve((), transport)
        .await
        .expect("MCP initialize");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), support::TOOL_NAMES.len());
    let added = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("add_task").with_arguments(
                json!({ "title": "from the desktop" })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        )
        .await
        .expect("add_task");
    assert_eq!(
        added
            .structured_content
            .as_ref()
            .map(|c| c["task"]["title"].clone()),
        Some(json!("from the desktop"))
    );
    client.cancel().await.expect("close the session");

    let rows = db
        .query_json("SELECT t.title, t.user_id FROM tasks t")
        .await;
    assert_eq!(
        rows,
        [json!({ "title": "from the desktop", "user_id": "desktop-user" })]
    );
}

#[test]
fn readme_gives_the_command_ci_runs() {
    let ci =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).expect(".ci/run");
    let command = ci
        .lines()
        .find_map(|line| line.strip_prefix("TEST_COMMAND='"))
        .and_then(|rest| rest.strip_suffix('\''))
        .expect(".ci/run sets TEST_COMMAND");
    assert!(
        readme().contains(command),
        "README.md does not give `{command}`"
    );
}
