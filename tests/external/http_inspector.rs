//! The MCP Inspector CLI (`@modelcontextprotocol/inspector`, pinned in `tests/support/node.rs`)
//! as a real client: over Streamable HTTP and legacy SSE with `Authorization: Bearer`, and
//! over stdio with the server's environment passed by `-e KEY=VALUE`.
//!
//! Its exit codes are part of what is checked: 0 ok, 3 auth required (with
//! `--stored-auth-only` it never starts interactive OAuth), 4 unreachable, 5 tool error.

use crate::support;

use serde_json::Value;
use support::cli::create_token_with;
use support::node;
use support::{PgTestDb, SqliteTestDb, TOOL_NAMES, bin_path, cli, create_token, start_http};

/// One Inspector run.
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "inspector --cli {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts the exit code, returning the run for more checks.
    fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }

    /// With `--format json` the CLI prints one JSON object on stdout: `{"result": ...}`.
    fn result(&self) -> Value {
        let printed: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object: {e}\n{}", self.describe()));
        printed
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("no `result` on stdout\n{}", self.describe()))
    }

    /// The error envelope the CLI prints on stderr when it fails: `{"error": {code, message}}`.
    fn error(&self) -> Value {
        self.stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
            .find_map(|line| line.get("error").cloned())
            .unwrap_or_else(|| panic!("no error envelope on stderr\n{}", self.describe()))
    }

    /// The sorted tool names of a tools/list result.
    fn tool_names(&self) -> Vec<String> {
        let result = self.result();
        let tools = result["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list result has no tools\n{}", self.describe()));
        let mut names: Vec<String> = tools
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_string())
            .collect();
        names.sort();
        names
    }
}

async fn inspect<S: AsRef<str>>(args: &[S]) -> Run {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = node::inspector(&args).await;
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `inspector --cli URL --transport T [--header "Authorization: Bearer TOKEN"] --stored-auth-only
/// --format json ARGS`
async fn inspect_http(url: &str, transport: &str, token: Option<&str>, args: &[&str]) -> Run {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut all = vec![url, "--transport", transport];
    if let Some(header) = &header {
        all.extend(["--header", header]);
    }
    all.extend(["--stored-auth-only", "--format", "json"]);
    all.extend_from_slice(args);
    inspect(&all).await
}

/// The Inspector's arguments for one `add_task` call, then `arguments` (how its own
/// arguments are given).
fn add_task_call<'a>(arguments: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--method", "tools/call", "--tool-name", "add_task"];
    all.extend_from_slice(arguments);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_lists_and_calls_tools_over_http_with_a_bearer_token() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let mcp = server.mcp_url();

    // tools/list: all eleven, and no error-severity schema portability problem (--strict
    // exits 6 on one).
    let listed = inspect_http(
        &mcp,
        "http",
        Some(&token),
        &["--method", "tools/list", "--strict"],
    )
    .await
    .expect_code(0);
    assert_eq!(listed.tool_names(), *TOOL_NAMES, "{}", listed.describe());

    // tools/call with --tool-arg key=value pairs.
    let added = inspect_http(
        &mcp,
        "http",
        Some(&token),
        &add_task_call(&[
            "--tool-arg",
            "title=milk from the inspector",
            "idempotency_key=inspector-1",
        ]),
    )
    .await
    .expect_code(0);
    let result = added.result();
    assert_eq!(result["isError"], false, "{}", added.describe());
    let task = &result["structuredContent"]["task"];
    assert_eq!(task["title"], "milk from the inspector");
    assert_eq!(task["completed"], false);
    let task_id = task["id"].as_str().expect("task id").to_string();
    assert_eq!(
        db.query_json("SELECT id::text, user_id, title, idempotency_key FROM tasks")
            .await,
        [serde_json::json!({
            "id": task_id,
            "user_id": "alice",
            "title": "milk from the inspector",
            "idempotency_key": "inspector-1",
        })]
    );

    // A tool error: exit 5, the result with isError and the server's message.
    let refused = inspect_http(
        &mcp,
        "http",
        Some(&token),
        &add_task_call(&["--tool-args-json", r#"{"title": ""}"#]),
    )
    .await
    .expect_code(5);
    let result = refused.result();
    assert_eq!(result["isError"], true, "{}", refused.describe());
    assert_eq!(
        result["content"][0]["text"],
        "invalid_argument: invalid `title`: must not be empty",
        "{}",
        refused.describe()
    );
    assert_eq!(refused.error()["code"], "tool_is_error");

    // The legacy SSE transport, same token: it sees the task added over /mcp.
    let sse = format!("{}/sse", server.base_url());
    let listed = inspect_http(
        &sse,
        "sse",
        Some(&token),
        &["--method", "tools/call", "--tool-name", "list_tasks"],
    )
    .await
    .expect_code(0);
    let tasks = &listed.result()["structuredContent"]["tasks"];
    let ids: Vec<&str> = tasks
        .as_array()
        .unwrap_or_else(|| panic!("list_tasks gave no tasks\n{}", listed.describe()))
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, [task_id.as_str()], "{}", listed.describe());
    assert_eq!(
        db.query_json("SELECT count(*) AS n FROM tasks").await,
        [serde_json::json!({"n": 1})],
        "the refused call and the list created nothing"
    );

    // Nobody listening: exit 4.
    server.kill().await;
    let gone = inspect_http(&mcp, "http", Some(&token), &["--method", "tools/list"])
        .await
        .expect_code(4);
    assert_eq!(gone.error()["code"], "unreachable", "{}", gone.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_without_a_valid_token_exits_auth_required_and_changes_nothing() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let revoked = create_token_with(db.url(), "bob", &["--name", "to-revoke"]);
    let revoked_id = db
        .query_json("SELECT id::text FROM api_tokens WHERE name = 'to-revoke'")
        .await;
    let revoked_id = revoked_id[0]["id"].as_str().expect("token id").to_string();
    cli::todo_mcp_ok(db.url(), &["token", "revoke", &revoked_id]);
    let server = start_http(db.url(), &[], &[]).await;
    let mcp = server.mcp_url();
    let sse = format!("{}/sse", server.base_url());
    let add = add_task_call(&["--tool-arg", "title=should not exist"]);

    for (url, transport, token, reason) in [
        (&mcp, "http", None, "send `Authorization: Bearer <token>`"),
        (
            &mcp,
            "http",
            Some("tmcp_not_a_real_token"),
            "the token is not valid",
        ),
        (
            &mcp,
            "http",
            Some(revoked.as_str()),
            "the token has been revoked",
        ),
        (&sse, "sse", None, "401"),
        (&sse, "sse", Some("tmcp_not_a_real_token"), "401"),
    ] {
        let run = inspect_http(url, transport, token, &add)
            .await
            .expect_code(3);
        let error = run.error();
        assert_eq!(error["code"], "auth_required", "{}", run.describe());
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "the message should carry the server's reason {reason:?}\n{}",
            run.describe()
        );
    }
    // No tool ran: no task, and no audit record either.
    assert_eq!(
        db.query_json(
            "SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM messages) AS messages"
        )
        .await,
        [serde_json::json!({"tasks": 0, "messages": 0})]
    );

    // The same call with a valid token works (so the refusals were about the token).
    let run = inspect_http(&mcp, "http", Some(&alice), &add)
        .await
        .expect_code(0);
    assert_eq!(
        run.result()["structuredContent"]["task"]["title"],
        "should not exist"
    );
    assert_eq!(
        db.query_json("SELECT user_id, title FROM tasks").await,
        [serde_json::json!({"user_id": "alice", "title": "should not exist"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_over_stdio_passes_the_environment_with_e() {
    let db = PgTestDb::new().await;
    let carol = create_token(db.url(), "carol");
    let database_url = format!("DATABASE_URL={}", db.url());
    let token = format!("TODO_MCP_TOKEN={carol}");
    let stdio = |args: &[&str]| {
        let mut all = vec![bin_path(), "-e", &database_url, "-e", &token, "stdio"];
        all.extend(["--format", "json"]);
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };

    let listed = inspect(&stdio(&["--method", "tools/list"]))
        .await
        .expect_code(0);
    assert_eq!(listed.tool_names(), *TOOL_NAMES, "{}", listed.describe());

    let added = inspect(&stdio(&add_task_call(&["--tool-arg", "title=over stdio"])))
        .await
        .expect_code(0);
    let task_id = added.result()["structuredContent"]["task"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id\n{}", added.describe()))
        .to_string();
    assert_eq!(
        db.query_json("SELECT id::text, user_id, title FROM tasks")
            .await,
        [serde_json::json!({"id": task_id, "user_id": "carol", "title": "over stdio"})],
        "the task belongs to the user of TODO_MCP_TOKEN passed with -e"
    );

    // A refused token makes the server exit at start; the Inspector fails and passes the
    // server's message through.
    let refused = inspect(&[
        bin_path(),
        "-e",
        &database_url,
        "-e",
        "TODO_MCP_TOKEN=tmcp_not_a_real_token",
        "stdio",
        "--method",
        "tools/list",
    ])
    .await;
    assert_ne!(refused.code, Some(0), "{}", refused.describe());
    assert!(
        refused.stderr.contains("TODO_MCP_TOKEN was refused"),
        "{}",
        refused.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_over_stdio_on_sqlite_without_a_token_is_the_local_user() {
    let db = SqliteTestDb::new();
    let database_url = format!("DATABASE_URL={}", db.url());
    let stdio = |args: &[&str]| {
        let mut all = vec![bin_path(), "-e", &database_url, "stdio", "--format", "json"];
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let added = inspect(&stdio(&add_task_call(&["--tool-arg", "title=local milk"])))
        .await
        .expect_code(0);
    let task_id = added.result()["structuredContent"]["task"]["id"].clone();
    assert!(task_id.is_string(), "{}", added.describe());
    assert!(
        added
            .stderr
            .contains("serving the single local user `local`"),
        "{}",
        added.describe()
    );

    // A second server process on the same file sees it.
    let listed = inspect(&stdio(&[
        "--method",
        "tools/call",
        "--tool-name",
        "list_tasks",
    ]))
    .await
    .expect_code(0);
    let tasks = listed.result()["structuredContent"]["tasks"].clone();
    let tasks = tasks.as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{}", listed.describe());
    assert_eq!(tasks[0]["id"], task_id);
    assert_eq!(tasks[0]["title"], "local milk");
}
