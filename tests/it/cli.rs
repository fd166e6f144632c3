//! The command line as a new user meets it: each command's help lists its own options, a
//! database that cannot be reached is reported as such (not as "retry"), and a refused
//! start changes nothing.

use crate::support;

use std::time::Duration;
use support::cli::{describe_output, todo_mcp, todo_mcp_with_timeout};
use support::pg::PgTestDb;

/// Options only the servers take.
const SERVER_OPTIONS: [&str; 5] = [
    "--pool-size",
    "--statement-timeout",
    "--max-tasks-per-user",
    "--jwt-issuer",
    "--public-url",
];

#[test]
fn each_commands_help_lists_its_own_options() {
    for (command, own) in [
        (
            &["token", "create", "--help"][..],
            &["--user", "--scope", "--expires-in"][..],
        ),
        (&["migrate", "--help"][..], &["status", "down"][..]),
        (&["user", "delete", "--help"][..], &["--dry-run"][..]),
        (&["export", "--help"][..], &["--user"][..]),
        (&["import", "--help"][..], &["--input"][..]),
    ] {
        let out = todo_mcp(command, &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", describe_output(&out));
        for option in own {
            assert!(
                help.contains(option),
                "`{}` lacks {option}:\n{help}",
                command.join(" ")
            );
        }
        for option in SERVER_OPTIONS {
            assert!(
                !help.contains(option),
                "`{}` lists the servers' {option}:\n{help}",
                command.join(" ")
            );
        }
        assert!(help.contains("--database-url"), "{help}");
    }
    for server in ["stdio", "http"] {
        let out = todo_mcp(&[server, "--help"], &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        for option in SERVER_OPTIONS {
            assert!(
                help.contains(option),
                "`{server} --help` lacks {option}:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_reported_as_such_not_as_retry() {
    let db = PgTestDb::new().await;
    // The right server, a database that does not exist.
    let (base, _) = db
        .url()
        .rsplit_once('/')
        .expect("a URL with a database name");
    let missing = format!("{base}/todo_mcp_no_such_database");
    // Nothing listens on port 1 of the loopback address.
    let refused = "postgres://postgres@127.0.0.1:1/todo".to_owned();
    for (url, reason) in [(missing, "does not exist"), (refused, "Connection refused")] {
        for command in [&["token", "create", "--user", "a"][..], &["stdio"][..]] {
            let out = todo_mcp_with_timeout(
                command,
                &[("DATABASE_URL", url.as_str())],
                Duration::from_secs(60),
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{}", describe_output(&out));
            assert!(
                stderr.contains("cannot connect to the database") && stderr.contains(reason),
                "`{}` with {url} should say it cannot connect, and why ({reason}):\n{stderr}",
                command.join(" ")
            );
            assert!(
                !stderr.contains("retry"),
                "a permanent misconfiguration is not a reason to retry:\n{stderr}"
            );
        }
    }
}

#[test]
fn no_auth_off_loopback_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("never.db");
    let url = file.to_str().expect("UTF-8 path");
    let out = todo_mcp_with_timeout(
        &["http", "--no-auth", "--listen", "0.0.0.0:0"],
        &[("DATABASE_URL", url)],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert!(
        !file.exists(),
        "a refused --no-auth start created (and migrated) {}",
        file.display()
    );
}

/// `token create` refuses a token that would be born expired, a lifetime past any date, and
/// a user id with spaces or shell punctuation, each naming what is wrong, and issues nothing.
#[test]
fn token_create_refuses_bad_lifetimes_and_user_ids() {
    let db = support::SqliteTestDb::new();
    for (args, said) in [
        (
            &["--user", "alice", "--expires-in", "0"][..],
            "0 is not in 1..=36500",
        ),
        (
            &["--user", "alice", "--expires-in", "99999999"][..],
            "99999999 is not in 1..=36500",
        ),
        (
            &["--user", "bad user!"][..],
            "`bad user!` is not a user id: ' ' is not allowed",
        ),
        (&["--user", ""][..], "is not a user id: it is empty"),
    ] {
        let mut command = vec!["token", "create"];
        command.extend_from_slice(args);
        let out = todo_mcp(&command, &[("DATABASE_URL", db.url())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(said),
            "`todo-mcp {}` should fail saying {said:?}:\n{}",
            command.join(" "),
            describe_output(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "no token printed: {}",
            describe_output(&out)
        );
    }
    // A good one still works, with every allowed kind of character.
    let out = todo_mcp(
        &[
            "token",
            "create",
            "--user",
            "auth0|user.name+x@example-1.com_:2",
            "--expires-in",
            "1",
        ],
        &[("DATABASE_URL", db.url())],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
}
