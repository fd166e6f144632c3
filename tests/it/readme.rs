//! The README's promises, checked: its Claude Desktop, Claude Code and VS Code
//! configurations each launch a working server, and it names the test command CI runs.

use crate::support;

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

/// The first ```json block of the README that configures VS Code's `servers`.
fn vscode_config() -> Value {
    readme()
        .split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter_map(|block| serde_json::from_str::<Value>(block).ok())
        .find(|config| config.get("servers").is_some())
        .expect("README.md has a ```json block with VS Code's servers")
}

/// A server as a client config launches it: command, arguments, environment.
struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Launches `launch` as the client would, with the README's placeholders (binary path,
/// token, database URL) replaced by working values, adds a task through it, and checks
/// the task is stored for the token's user.
async fn launches_a_working_server(client_name: &str, launch: Launch) {
    let db = PgTestDb::new().await;
    let user = format!("{}-user", client_name.to_lowercase().replace(' ', "-"));
    let token = create_token(db.url(), &user);
    let mut command = tokio::process::Command::new(support::bin_path());
    command
        .args(&launch.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Quiet when all is well; warnings and errors still reach the test output.
        .env("TODO_MCP_LOG", "warn")
        .stderr(Stdio::inherit());
    for (key, value) in &launch.env {
        let value = match key.as_str() {
            "TODO_MCP_TOKEN" => {
                assert!(
                    value.starts_with("tmcp_") || value.starts_with("${input:"),
                    "{client_name}: TODO_MCP_TOKEN should show a token placeholder, not {value:?}"
                );
                token.as_str()
            }
            "DATABASE_URL" => db.url(),
            other => panic!("{client_name}: the README sets an unexpected variable {other}"),
        };
        command.env(key, value);
    }
    assert!(
        launch.env.iter().any(|(k, _)| k == "TODO_MCP_TOKEN"),
        "{client_name}'s config must pass TODO_MCP_TOKEN"
    );
    if !launch.env.iter().any(|(k, _)| k == "DATABASE_URL") {
        // The config relies on DATABASE_URL from the environment it is launched in.
        command.env("DATABASE_URL", db.url());
    }
    let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn todo-mcp");
    let client = rmcp::ServiceExt::serve((), transport)
        .await
        .unwrap_or_else(|e| panic!("{client_name}: MCP initialize: {e}"));
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), support::TOOL_NAMES.len());
    let title = format!("from {client_name}");
    let added = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("add_task").with_arguments(
                json!({ "title": title })
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
        Some(json!(title))
    );
    client.cancel().await.expect("close the session");

    let rows = db
        .query_json("SELECT t.title, t.user_id FROM tasks t")
        .await;
    assert_eq!(rows, [json!({ "title": title, "user_id": user })]);
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|a| a.as_str().expect("a string").to_owned())
        .collect()
}

fn env_of(value: &Value) -> Vec<(String, String)> {
    value
        .as_object()
        .map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_desktop_config_launches_a_working_server() {
    let config = claude_desktop_config();
    let (name, server) = config["mcpServers"]
        .as_object()
        .and_then(|servers| servers.iter().next())
        .expect("one server configured");
    assert_eq!(name, "todo");
    let env = env_of(&server["env"]);
    assert!(env.iter().any(|(k, _)| k == "DATABASE_URL"));
    let launch = Launch {
        args: strings(&server["args"]),
        env,
    };
    launches_a_working_server("Claude Desktop", launch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vscode_config_launches_a_working_server() {
    let config = vscode_config();
    let server = &config["servers"]["todo"];
    assert_eq!(server["type"], "stdio");
    assert_eq!(server["command"], "todo-mcp");
    let input = config["inputs"][0].clone();
    assert_eq!(input["id"], "todo-token", "the token input: {input}");
    assert_eq!(
        input["password"], true,
        "the token input must be a password"
    );
    let remote = &config["servers"]["todo-remote"];
    assert_eq!(remote["type"], "http");
    assert_eq!(
        remote["headers"]["Authorization"],
        "Bearer ${input:todo-token}"
    );
    let launch = Launch {
        args: strings(&server["args"]),
        env: env_of(&server["env"]),
    };
    launches_a_working_server("VS Code", launch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_command_launches_a_working_server() {
    // `claude mcp add NAME [--env K=V]... -- COMMAND ARGS...`
    let readme = readme();
    let line = readme
        .lines()
        .find(|l| l.starts_with("claude mcp add todo "))
        .expect("README gives `claude mcp add todo … -- todo-mcp stdio`");
    let (options, command) = line
        .split_once(" -- ")
        .expect("`claude mcp add` separates the command with --");
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("todo-mcp"));
    let args: Vec<String> = words.map(str::to_owned).collect();
    let mut env = Vec::new();
    let mut options = options.split_whitespace();
    while let Some(word) = options.next() {
        if word == "--env" || word == "-e" {
            let pair = options.next().expect("--env takes KEY=VALUE");
            let (key, value) = pair.split_once('=').expect("KEY=VALUE");
            env.push((key.to_owned(), value.trim_matches('"').to_owned()));
        }
    }
    launches_a_working_server("Claude Code", Launch { args, env }).await;
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
