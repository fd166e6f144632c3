//! What a security review of main found (issue 21), each reproduced: a password in a
//! database URL's query kept out of the log, an outage's detail kept from callers who
//! are not signed in, and the SQLite file kept from other users of the machine.

use crate::support;

use serde_json::json;
use support::jsonrpc;
use support::pg::PgTestDb;
use support::{connect_in_process, connect_stdio, start_http};

/// The log's "opening database" line masks `password=` in the query as well as in the
/// user-info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_urls_query_is_not_logged() {
    let db = PgTestDb::new().await;
    let secret = "hunter2-in-the-query";
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}password={secret}", db.url());
    let client = connect_stdio(&url, None, &[]).await;
    client
        .call_ok("add_task", json!({ "title": "logged in" }))
        .await;
    let log = client.close().await;
    assert!(
        log.contains("opening database") && log.contains("password=***"),
        "the log names the database, its password masked:\n{log}"
    );
    assert!(
        !log.contains(secret),
        "the password reached the log:\n{log}"
    );
}

/// During an outage, `/readyz` and a request with a made-up token say "storage
/// unavailable" and no more: the database's own message (its name, why) is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_not_signed_in_learn_only_that_storage_is_unavailable() {
    let db = PgTestDb::new().await;
    let server = start_http(db.url(), &[], &[]).await;
    // A token of the right form that names no one: only the database could tell.
    let mut made_up = support::create_token(db.url(), "someone");
    let last = if made_up.ends_with('A') { "B" } else { "A" };
    made_up.replace_range(made_up.len() - 1.., last);
    let ready = jsonrpc::client()
        .get(format!("{}/readyz", server.base_url()))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);

    // New connections are refused by the database itself, and the pooled ones end.
    let admin = support::pg::connect(db.admin_url()).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            db.name()
        ))
        .await
        .expect("closing the database to connections");

    let ready = jsonrpc::client()
        .get(format!("{}/readyz", server.base_url()))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("a JSON body");
    assert_eq!(
        body,
        json!({ "status": "unavailable", "reason": "storage unavailable, retry" })
    );

    let refused = jsonrpc::mcp_request(&server.mcp_url(), Some(&made_up))
        .body(jsonrpc::initialize(1).to_string())
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(refused.status(), 503);
    let text = refused.text().await.expect("a body");
    assert!(text.contains("storage unavailable, retry"), "{text}");
    for detail in ["accepting connections", db.name(), "FATAL", "db error"] {
        assert!(
            !text.contains(detail),
            "the refusal tells a caller who is not signed in `{detail}`: {text}"
        );
    }

    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            db.name()
        ))
        .await
        .expect("opening the database again");
    let log = server.stderr();
    assert!(
        log.contains("is not currently accepting connections"),
        "the detail is in the log:\n{log}"
    );
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A SQLite database the server creates (and the folders it makes for it) is its owner's
/// alone: folders 0700, the file, its WAL and the migration lock 0600, whatever the umask.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_database_is_readable_by_its_owner_only() {
    let root = tempfile::tempdir().expect("a temp dir");
    let path = root.path().join("data").join("todo-mcp").join("todo.db");
    let client = connect_in_process(path.to_str().expect("UTF-8"), None, &[]).await;
    client
        .call_ok("add_task", json!({ "title": "private" }))
        .await;
    for dir in [root.path().join("data"), root.path().join("data/todo-mcp")] {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    let wal = path.with_extension("db-wal");
    assert_eq!(mode_of(&wal), 0o600, "{}", wal.display());
    let migration_lock = path.with_extension("migrate.lock");
    assert_eq!(
        mode_of(&migration_lock),
        0o600,
        "{}",
        migration_lock.display()
    );
    client.close().await;
}

/// An existing database file that other users may read is used, with a warning that says
/// what to do.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_database_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("a temp dir");
    let path = root.path().join("todo.db");
    let url = path.to_str().expect("UTF-8");
    let first = connect_in_process(url, None, &[]).await;
    first.call_ok("add_task", json!({ "title": "kept" })).await;
    let log = first.close().await;
    assert!(!log.contains("readable by other users"), "{log}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let second = connect_in_process(url, None, &[]).await;
    let listed = second.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"][0]["title"], "kept");
    let log = second.close().await;
    assert!(
        log.contains("readable by other users")
            && log.contains("0644")
            && log.contains("chmod 600"),
        "{log}"
    );
}

/// The issuer's metadata and keys are never fetched through a redirect: an issuer whose
/// metadata answers 302 (to anywhere) gives no keys, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_to_fetch_keys() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let issuer = format!("http://{}", listener.local_addr().expect("its address"));
    let redirects = tokio::spawn(async move {
        let mut answered = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            answered += 1;
        }
        answered
    });
    let db = support::SqliteTestDb::new();
    // The HTTP server fetches the keys at start (warm-up), and logs what it met.
    let server = start_http(
        db.url(),
        &[],
        &[
            ("TODO_MCP_JWT_ISSUER", &issuer),
            ("TODO_MCP_JWT_AUDIENCE", "todo-tests"),
        ],
    )
    .await;
    let said = "HTTP 302 Found (redirects are not followed: give the final URL)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains(said) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = server.stderr();
    redirects.abort();
    assert!(log.contains(said), "{log}");
    assert!(!log.contains("fetched the issuer's keys"), "{log}");
}

/// A stdio session checks its token again on a call made long enough after the last check
/// (30 s; here 1 s): revoked, it stops acting for it, with an error saying so, and every
/// later call is refused too. Until then, and for a token still valid, calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_session_stops_serving_on_stdio() {
    let db = support::SqliteTestDb::new();
    let token = support::create_token(db.url(), "rita");
    let kept = support::create_token(db.url(), "kim");
    let recheck = [("RECHECK_CREDENTIAL_AFTER", "1")];
    let session = connect_in_process(db.url(), Some(&token), &recheck).await;
    let other = connect_in_process(db.url(), Some(&kept), &recheck).await;
    session
        .call_ok("add_task", json!({ "title": "before" }))
        .await;

    let listed = support::todo_mcp(
        &["token", "list", "--user", "rita"],
        &[("DATABASE_URL", db.url())],
    );
    let line = String::from_utf8_lossy(&listed.stdout).to_string();
    let entry: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let id = entry["id"].as_str().expect("the token's id");
    let revoked = support::todo_mcp(&["token", "revoke", id], &[("DATABASE_URL", db.url())]);
    assert!(
        revoked.status.success(),
        "{}",
        support::cli::describe_output(&revoked)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    for _ in 0..2 {
        let refused = session
            .try_call("add_task", json!({ "title": "after" }))
            .await
            .expect_err("a revoked session's call is refused");
        let message = refused.to_string();
        assert!(
            message.contains("this session's credential was refused (the token has been revoked)"),
            "{message}"
        );
    }
    other
        .call_ok("add_task", json!({ "title": "still kim's" }))
        .await;
    let log = session.close().await;
    assert!(log.contains("no longer serves"), "{log}");
    other.close().await;
    let titles = support::sql::texts(
        &support::TestDb::Sqlite(db),
        "SELECT title AS j FROM tasks ORDER BY title",
    )
    .await;
    assert_eq!(titles, ["before", "still kim's"]);
}
