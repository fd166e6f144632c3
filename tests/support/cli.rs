//! Running the `todo-mcp` binary as a plain command (migrate, token create, ...).

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a one-shot subcommand may run before the harness kills it and fails the test.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of the binary under test (built by cargo for integration tests).
pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_todo-mcp")
}

/// Remove settings the developer's shell may carry (`DATABASE_URL`, `TODO_MCP_*`) so a test
/// only ever talks to the database it created, then disable ANSI colours in logs so stderr
/// assertions see plain text. Callers set what they need afterwards.
pub(crate) fn scrub_env<C: EnvCommand>(cmd: &mut C) {
    for (key, _) in std::env::vars_os() {
        match key.to_str() {
            Some(key) if key == "DATABASE_URL" || key.starts_with("TODO_MCP_") => {
                cmd.remove_env(key)
            }
            _ => {}
        }
    }
    cmd.set_env("NO_COLOR", "1");
}

/// The env-manipulating part shared by `std::process::Command` and `tokio::process::Command`.
pub(crate) trait EnvCommand {
    fn remove_env(&mut self, key: &str);
    fn set_env(&mut self, key: &str, value: &str);
}

impl EnvCommand for Command {
    fn remove_env(&mut self, key: &str) {
        self.env_remove(key);
    }
    fn set_env(&mut self, key: &str, value: &str) {
        self.env(key, value);
    }
}

impl EnvCommand for tokio::process::Command {
    fn remove_env(&mut self, key: &str) {
        self.env_remove(key);
    }
    fn set_env(&mut self, key: &str, value: &str) {
        self.env(key, value);
    }
}

/// Run `todo-mcp ARGS` with the given extra environment (e.g. `DATABASE_URL`) and capture its
/// output. Stdin is closed. Fails the test if it runs longer than [`DEFAULT_CMD_TIMEOUT`].
///
/// The exit status is not checked: use [`assert_success`] or [`create_token`].
pub fn todo_mcp(args: &[&str], env: &[(&str, &str)]) -> Output {
    todo_mcp_with_timeout(args, env, DEFAULT_CMD_TIMEOUT)
}

/// [`todo_mcp`] with an explicit time limit.
pub fn todo_mcp_with_timeout(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = Command::new(bin_path());
    cmd.args(args);
    scrub_env(&mut cmd);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let what = format!("todo-mcp {}", args.join(" "));
    run_with_timeout(cmd, &what, timeout)
}

/// `todo-mcp ARGS` with `DATABASE_URL=db_url`, asserting exit 0; returns the output.
pub fn todo_mcp_ok(db_url: &str, args: &[&str]) -> Output {
    let out = todo_mcp(args, &[("DATABASE_URL", db_url)]);
    assert_success(
        &out,
        &format!("todo-mcp {} (DATABASE_URL={db_url})", args.join(" ")),
    );
    out
}

/// `todo-mcp migrate` against `db_url`, asserting success.
pub fn migrate(db_url: &str) {
    todo_mcp_ok(db_url, &["migrate"]);
}

/// `todo-mcp token create --user USER` against `db_url`; asserts success and returns the token
/// (stdout, trimmed).
pub fn create_token(db_url: &str, user: &str) -> String {
    create_token_with(db_url, user, &[])
}

/// Like [`create_token`] with extra arguments, e.g. `&["--name", "ci", "--expires-in", "1"]`.
pub fn create_token_with(db_url: &str, user: &str, extra_args: &[&str]) -> String {
    let mut args = vec!["token", "create", "--user", user];
    args.extend_from_slice(extra_args);
    let out = todo_mcp_ok(db_url, &args);
    let token = String::from_utf8(out.stdout)
        .expect("`todo-mcp token create` printed non-UTF-8 on stdout")
        .trim()
        .to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "`todo-mcp token create --user {user}` should print the token alone on stdout, got {token:?}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    token
}

/// Panic with the command, exit status, stdout and stderr unless `out` is a success.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed\n{}",
        describe_output(out)
    );
}

/// Spawn `cmd` (stdin closed, stdout/stderr captured), wait at most `timeout`, return its output.
/// On timeout the process is killed and the test fails with whatever it printed so far.
pub fn run_with_timeout(cmd: Command, what: &str, timeout: Duration) -> Output {
    try_run_with_timeout(cmd, what, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_with_timeout`] that reports failure to start or a timeout as `Err` instead of
/// panicking (for cleanup paths, where a panic could abort an already unwinding test).
pub fn try_run_with_timeout(
    mut cmd: Command,
    what: &str,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {what} ({:?}): {e}", cmd.get_program()))?;
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = drain(&mut child, true);
    let stderr = drain(&mut child, false);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out = String::from_utf8_lossy(&join_drain(stdout)).into_owned();
                let err = String::from_utf8_lossy(&join_drain(stderr)).into_owned();
                return Err(format!(
                    "{what} did not finish within {timeout:?} and was killed\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
                ));
            }
            Err(e) => {
                let _ = child.kill();
                return Err(format!("waiting for {what} failed: {e}"));
            }
        }
    };
    Ok(Output {
        status,
        stdout: join_drain(stdout),
        stderr: join_drain(stderr),
    })
}

/// Exit status, stdout and stderr of a finished command, for error messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

type Drain = std::thread::JoinHandle<Vec<u8>>;

fn drain(child: &mut Child, stdout: bool) -> Drain {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("child stdout was not piped"))
    } else {
        Box::new(child.stderr.take().expect("child stderr was not piped"))
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_drain(handle: Drain) -> Vec<u8> {
    handle.join().expect("output reader thread panicked")
}
