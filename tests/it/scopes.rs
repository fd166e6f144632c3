//! API tokens with scopes (`token create --scope read|write`), on both backends and every
//! transport: `todo:read` allows exactly the read-only tools and `todo:write` the others.
//! Over HTTP a refused call is a 403 `insufficient_scope` naming the scope (Streamable HTTP
//! and each legacy `POST /message`); on stdio it is a tool error of kind
//! `insufficient_scope`, recorded like every failed call. Tokens issued before scopes keep
//! full access, and the down migration revokes narrowed tokens rather than widen them.

use crate::support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Output;
use support::cli::create_token_with;
use support::jsonrpc::{Reply, client, mcp_request, tool_call};
use support::samples::{self, Seed};
use support::{
    READ_ONLY_TOOLS, TOOL_NAMES, TestDb, assert_success, connect_in_process, start_http, todo_mcp,
};

fn cli(db: &TestDb, args: &[&str]) -> Output {
    todo_mcp(args, &[("DATABASE_URL", db.url())])
}

fn token_list(db: &TestDb, user: &str) -> Vec<Value> {
    let out = cli(db, &["token", "list", "--user", user]);
    assert_success(&out, "todo-mcp token list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

/// Arguments that pass validation for each tool (its sample call, on ids nobody has), so
/// that only the scope can refuse it.
fn harmless_arguments(tool: &str) -> Value {
    samples::sample(tool, &Seed::unknown())
        .unwrap_or_else(|| panic!("{tool} has no sample call in tests/support/samples.rs"))
}

async fn tokens_carry_scopes_and_list_them(db: TestDb) {
    let read = create_token_with(db.url(), "alice", &["--scope", "read", "--name", "r"]);
    let write = create_token_with(db.url(), "alice", &["--scope", "todo:write", "--name", "w"]);
    let both = create_token_with(
        db.url(),
        "alice",
        &["--scope", "read,write", "--name", "rw"],
    );
    let default = create_token_with(db.url(), "alice", &["--name", "all"]);
    assert!(
        [&read, &write, &both, &default]
            .iter()
            .all(|t| t.starts_with("tmcp_"))
    );
    let listed: Vec<(String, String)> = token_list(&db, "alice")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["scopes"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("r", "todo:read"),
        ("w", "todo:write"),
        ("rw", "todo:read todo:write"),
        ("all", "todo:read todo:write"),
    ];
    assert_eq!(listed, expected.map(|(n, s)| (n.to_owned(), s.to_owned())),);
    let refused = cli(
        &db,
        &["token", "create", "--user", "alice", "--scope", "admin"],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("`admin` is not a scope"), "{said}");
    assert_eq!(
        token_list(&db, "alice").len(),
        4,
        "nothing issued for a bad scope"
    );
}

/// stdio: each tool with a read-only token and a write-only token; the refusal is a tool
/// error that names the scope, and is recorded as a failed call.
async fn stdio_refuses_each_tool_outside_its_scope(db: TestDb) {
    let read = create_token_with(db.url(), "alice", &["--scope", "read"]);
    let write = create_token_with(db.url(), "alice", &["--scope", "write"]);
    for (token, scope) in [(&read, "todo:read"), (&write, "todo:write")] {
        let server = connect_in_process(db.url(), Some(token), &[]).await;
        for tool in TOOL_NAMES.iter() {
            let needed = if READ_ONLY_TOOLS.contains(tool) {
                "todo:read"
            } else {
                "todo:write"
            };
            let result = server.call(tool, harmless_arguments(tool)).await;
            let text = format!("{:?}", result.content);
            let refused = text.contains("insufficient_scope:");
            assert_eq!(
                refused,
                needed != scope,
                "{tool} with a {scope} token: {text}"
            );
            if refused {
                assert!(
                    text.contains(&format!(
                        "{tool} needs the {needed} scope; this credential has {scope}"
                    )),
                    "{text}"
                );
            }
        }
        server.close().await;
    }
    let recorded = support::sql::texts(
        &db,
        "SELECT tool_calls AS j FROM messages WHERE tool_calls IS NOT NULL",
    )
    .await
    .into_iter()
    .filter(|record| record.contains("insufficient_scope"))
    .count();
    assert_eq!(
        recorded,
        TOOL_NAMES.len(),
        "one failed-call record per refusal"
    );
}

/// HTTP: 403 with the challenge on Streamable HTTP and on the legacy POST /message.
async fn http_answers_403_outside_the_scope(db: TestDb) {
    let read = create_token_with(db.url(), "alice", &["--scope", "read"]);
    let write = create_token_with(db.url(), "alice", &["--scope", "write"]);
    let server = start_http(db.url(), &[], &[]).await;
    for (token, scope) in [(&read, "todo:read"), (&write, "todo:write")] {
        for tool in TOOL_NAMES.iter() {
            let needed = if READ_ONLY_TOOLS.contains(tool) {
                "todo:read"
            } else {
                "todo:write"
            };
            let reply = Reply::read(
                mcp_request(&server.mcp_url(), Some(token))
                    .json(&tool_call(1, tool, harmless_arguments(tool)))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if needed == scope {
                assert_eq!(reply.status, StatusCode::OK, "{tool}: {}", reply.body);
                continue;
            }
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{tool} with {scope}: {}",
                reply.body
            );
            let challenge = reply.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.contains("error=\"insufficient_scope\"")
                    && challenge.contains(&format!("scope=\"{needed}\"")),
                "{challenge}"
            );
        }
    }
    // Legacy SSE: the session's stream is open with the read token; its POSTs are checked.
    let stream = client()
        .get(format!("{}/sse", server.base_url()))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    let endpoint = loop {
        use futures_util::StreamExt;
        let chunk = body
            .next()
            .await
            .expect("the stream names its endpoint")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(line) = seen.lines().find(|l| l.starts_with("data: /message")) {
            break line.trim_start_matches("data: ").to_owned();
        }
    };
    let post = client()
        .post(format!("{}{endpoint}", server.base_url()))
        .bearer_auth(&read)
        .json(&tool_call(7, "add_task", json!({ "title": "refused" })))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    assert!(
        post.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"todo:write\"")
    );
    let tasks = support::sql::texts(&db, "SELECT title AS j FROM tasks").await;
    assert!(!tasks.contains(&"refused".to_owned()), "{tasks:?}");
}

/// `migrate down` cannot keep a restriction in the older schema: the narrowed tokens are
/// revoked, full-access tokens keep working.
async fn the_down_migration_revokes_narrowed_tokens(db: TestDb) {
    let read = create_token_with(db.url(), "alice", &["--scope", "read", "--name", "narrow"]);
    let full = create_token_with(db.url(), "alice", &["--name", "full"]);
    // Down to just before the scopes migration, one migration at a time.
    let applied = |db: &TestDb| {
        let status = cli(db, &["migrate", "status"]);
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter(|line| line.starts_with("applied"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let to_revert = applied(&db)
        .iter()
        .rev()
        .position(|line| line.ends_with("_token_scopes"))
        .expect("the scopes migration is applied")
        + 1;
    for _ in 0..to_revert {
        assert_success(&cli(&db, &["migrate", "down"]), "todo-mcp migrate down");
    }
    assert!(
        applied(&db)
            .iter()
            .all(|line| !line.ends_with("_token_scopes")),
        "{:?}",
        applied(&db)
    );
    // The next start migrates up again: every token is back with NULL (full) scopes.
    let listed = token_list(&db, "alice");
    let revoked = |name: &str| {
        listed.iter().find(|t| t["name"] == name).unwrap()["revoked_at"] != Value::Null
    };
    assert!(revoked("narrow"), "{listed:?}");
    assert!(!revoked("full"), "{listed:?}");
    let server = connect_in_process(db.url(), Some(&full), &[]).await;
    server
        .call_ok("add_task", json!({ "title": "still works" }))
        .await;
    server.close().await;
    let refused = support::expect_stdio_exit(
        db.url(),
        Some(&read),
        &[],
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));
}

both_backends!(
    tokens_carry_scopes_and_list_them,
    stdio_refuses_each_tool_outside_its_scope,
    http_answers_403_outside_the_scope,
    the_down_migration_revokes_narrowed_tokens,
);
