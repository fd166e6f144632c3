//! MCP clients of the server: in process ([`connect_in_process`]: the server's stdio session on its own
//! thread, joined to the client by an in-memory duplex) or over a real `todo-mcp stdio` child
//! ([`connect_stdio`]), plus raw spawning for start-up failure tests.
//!
//! Both kinds are an [`McpClient`] answering the same calls, and both keep the server's log
//! (shown in panic messages, returned by [`McpClient::close`]). Use the child where the
//! process is what is tested: its pipes, its start-up checks, a kill.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use super::cli;

mod in_process;

/// Start-up (spawn + migrations + MCP initialize) must finish within this.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Any single request must be answered within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many trailing stderr lines panic messages show.
const STDERR_TAIL_LINES: usize = 60;

/// `todo-mcp stdio` with a scrubbed environment: `DATABASE_URL=db_url`, `TODO_MCP_TOKEN=token`
/// if given (unset otherwise, so the server uses its local user), then `extra_env`.
/// Not spawned: callers choose stdio handling.
pub fn stdio_command(
    db_url: &str,
    token: Option<&str>,
    extra_env: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(cli::bin_path());
    cmd.arg("stdio");
    cli::scrub_env(&mut cmd);
    cmd.env("DATABASE_URL", db_url);
    if let Some(token) = token {
        cmd.env("TODO_MCP_TOKEN", token);
    }
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Spawn `todo-mcp stdio` with all three stdio streams piped and kill-on-drop, for tests that
/// drive the protocol by hand or check how the process exits.
pub fn spawn_stdio_raw(
    db_url: &str,
    token: Option<&str>,
    extra_env: &[(&str, &str)],
) -> tokio::process::Child {
    stdio_command(db_url, token, extra_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not spawn `{} stdio`: {e}", cli::bin_path()))
}

/// Start `todo-mcp stdio` and expect it to exit by itself within `timeout` (e.g. it refuses a bad
/// token). Stdin stays open meanwhile, so a server that did start would keep waiting for input
/// and the test fails, showing its stderr. Returns the exit status and output.
pub async fn expect_stdio_exit(
    db_url: &str,
    token: Option<&str>,
    extra_env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let mut child = spawn_stdio_raw(db_url, token, extra_env);
    let stdin = child.stdin.take();
    let stdout = read_all(child.stdout.take().expect("child stdout was piped"));
    let stderr = read_all(child.stderr.take().expect("child stderr was piped"));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            drop(stdin);
            Output {
                status,
                stdout: finish_read(stdout).await,
                stderr: finish_read(stderr).await,
            }
        }
        Ok(Err(e)) => panic!("waiting for `todo-mcp stdio` failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            drop(stdin);
            let err = finish_read(stderr).await;
            panic!(
                "`todo-mcp stdio` (DATABASE_URL={db_url}) was expected to exit by itself but was \
                 still running after {timeout:?}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&err)
            );
        }
    }
}

fn read_all(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf).await;
        buf
    })
}

async fn finish_read(handle: JoinHandle<Vec<u8>>) -> Vec<u8> {
    match tokio::time::timeout(Duration::from_secs(10), handle).await {
        Ok(Ok(buf)) => buf,
        Ok(Err(e)) => panic!("output reader task failed: {e}"),
        Err(_) => panic!("the child's output pipe stayed open 10s after it exited"),
    }
}

/// Collects the server's stderr (shown in panic messages) and echoes it through `eprintln!`, so
/// the test harness shows it for failing tests only.
pub(crate) struct StderrLog {
    buf: Arc<Mutex<String>>,
    /// What ends when the server can write no more: the child's stderr reader, or the
    /// in-process server's thread.
    reader: JoinHandle<()>,
}

impl StderrLog {
    pub(crate) fn start(
        stderr: impl AsyncRead + Unpin + Send + 'static,
        pid: Option<u32>,
    ) -> StderrLog {
        let buf = Arc::new(Mutex::new(String::new()));
        let sink = buf.clone();
        let label = pid.map_or_else(|| "todo-mcp".to_string(), |p| format!("todo-mcp {p}"));
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
                let mut buf = sink.lock().unwrap_or_else(|p| p.into_inner());
                buf.push_str(&line);
                buf.push('\n');
            }
        });
        StderrLog { buf, reader }
    }

    pub(crate) fn text(&self) -> String {
        self.buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn tail(&self) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
        let mut tail = lines[start..].join("\n");
        if start > 0 {
            tail.insert_str(0, &format!("[... {start} earlier lines ...]\n"));
        }
        if tail.is_empty() {
            tail.push_str("(nothing on stderr)");
        }
        tail
    }

    /// Wait (bounded) until the child closed stderr, then return all of it.
    pub(crate) async fn finish(self, timeout: Duration) -> String {
        let StderrLog { buf, reader } = self;
        let _ = tokio::time::timeout(timeout, reader).await;
        buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A connected MCP client session with one server: a `todo-mcp stdio` child process, or the
/// same stdio session in process.
pub struct McpClient {
    service: RunningService<RoleClient, ()>,
    /// The child's process id; `None` in process.
    pid: Option<u32>,
    stderr: StderrLog,
    /// Says which server this is in panic messages (its `DATABASE_URL`, or how it was started).
    label: String,
}

/// Start the server in process for `db_url`, as `todo-mcp stdio` would with
/// `DATABASE_URL=db_url`, `TODO_MCP_TOKEN=token` and the settings in `extra_env` (migrations
/// applied first), perform the MCP initialize handshake and return the session.
///
/// The server runs `todo_mcp::transport::stdio::serve_streams`, the binary's own stdio
/// session, on a thread and runtime of its own whose log is kept as a child's stderr is.
/// Settings only the process has (`TODO_MCP_NO_MIGRATE`, the HTTP server's) panic here:
/// such a test uses [`connect_stdio`].
pub async fn connect_in_process(
    db_url: &str,
    token: Option<&str>,
    extra_env: &[(&str, &str)],
) -> McpClient {
    let label = format!("in process, DATABASE_URL={db_url}");
    let settings = in_process::Settings::from_env(extra_env);
    let (client_io, stderr) = in_process::start(db_url, token, settings, &label);
    let service = match tokio::time::timeout(START_TIMEOUT, ().serve(client_io)).await {
        Ok(Ok(service)) => service,
        Ok(Err(e)) => {
            let log = stderr.finish(Duration::from_secs(5)).await;
            panic!(
                "MCP initialize with the server ({label}) failed: {e}\n--- server log ---\n{log}"
            );
        }
        Err(_) => panic!(
            "the server ({label}) did not complete MCP initialize within {START_TIMEOUT:?}\n\
             --- server log ---\n{}",
            stderr.tail()
        ),
    };
    McpClient {
        service,
        pid: None,
        stderr,
        label,
    }
}

/// Spawn `todo-mcp stdio` (see [`stdio_command`] for its environment), perform the MCP
/// initialize handshake and return the session. Panics with the server's stderr on failure.
/// For tests of the process itself; others use [`connect_in_process`].
pub async fn connect_stdio(
    db_url: &str,
    token: Option<&str>,
    extra_env: &[(&str, &str)],
) -> McpClient {
    connect_command(
        stdio_command(db_url, token, extra_env),
        &format!("DATABASE_URL={db_url}"),
    )
    .await
}

/// Like [`connect_stdio`] for a command built by the caller, such as a bundled binary started
/// the way its host starts it; `label` says which server it is in panic messages.
pub async fn connect_command(command: tokio::process::Command, label: &str) -> McpClient {
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not spawn `todo-mcp stdio` ({label}): {e}"));
    let pid = transport.id();
    let stderr = StderrLog::start(stderr.expect("stderr was requested piped"), pid);
    let service = match tokio::time::timeout(START_TIMEOUT, ().serve(transport)).await {
        Ok(Ok(service)) => service,
        Ok(Err(e)) => {
            let log = stderr.finish(Duration::from_secs(5)).await;
            panic!(
                "MCP initialize with `todo-mcp stdio` ({label}) failed: {e}\n\
                 --- server stderr ---\n{log}"
            );
        }
        Err(_) => panic!(
            "`todo-mcp stdio` ({label}) did not complete MCP initialize within \
             {START_TIMEOUT:?}\n--- server stderr ---\n{}",
            stderr.tail()
        ),
    };
    McpClient {
        service,
        pid,
        stderr,
        label: label.to_string(),
    }
}

impl McpClient {
    /// Call a tool and return the raw result; panics only on a JSON-RPC-level failure.
    /// `args` must be a JSON object, or `null` for no arguments.
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let shown = args.to_string();
        match self.try_call(tool, args).await {
            Ok(result) => result,
            Err(e) => panic!(
                "tools/call {tool} {shown} failed at the JSON-RPC level: {e}\n{}",
                self.context()
            ),
        }
    }

    /// Call a tool, returning JSON-RPC-level failures as `Err` (timeouts still panic).
    pub async fn try_call(&self, tool: &str, args: Value) -> Result<CallToolResult, ServiceError> {
        let mut params = CallToolRequestParams::new(tool.to_string());
        match args {
            Value::Null => {}
            Value::Object(map) => params = params.with_arguments(map),
            other => panic!("tool arguments must be a JSON object or null, got {other}"),
        }
        match tokio::time::timeout(CALL_TIMEOUT, self.service.call_tool(params)).await {
            Ok(result) => result,
            Err(_) => panic!(
                "tools/call {tool} got no answer within {CALL_TIMEOUT:?}\n{}",
                self.context()
            ),
        }
    }

    /// Call a tool that must succeed; returns its `structuredContent`.
    pub async fn call_ok(&self, tool: &str, args: Value) -> Value {
        let shown = args.to_string();
        let result = self.call(tool, args).await;
        if result.is_error == Some(true) {
            panic!(
                "tool {tool} {shown} returned an error: {}\n{}",
                result_text(&result),
                self.context()
            );
        }
        match result.structured_content {
            Some(value) => value,
            None => panic!(
                "tool {tool} {shown} returned no structuredContent; text content: {}",
                result_text(&result)
            ),
        }
    }

    /// Call a tool that must fail; returns the error text. Accepts a tool error
    /// (`isError: true`, its text content) or a JSON-RPC error (its message), since invalid
    /// arguments may surface either way.
    pub async fn call_err(&self, tool: &str, args: Value) -> String {
        let shown = args.to_string();
        match self.try_call(tool, args).await {
            Ok(result) if result.is_error == Some(true) => result_text(&result),
            Ok(result) => panic!(
                "tool {tool} {shown} was expected to fail but succeeded: structuredContent {}, text {}",
                result
                    .structured_content
                    .as_ref()
                    .map_or_else(|| "(none)".to_string(), Value::to_string),
                result_text(&result)
            ),
            Err(ServiceError::McpError(e)) => e.message.into_owned(),
            Err(e) => panic!(
                "tool {tool} {shown} was expected to return an error, but the request failed: \
                 {e}\n{}",
                self.context()
            ),
        }
    }

    /// All tools (following pagination).
    pub async fn list_tools(&self) -> Vec<Tool> {
        match tokio::time::timeout(CALL_TIMEOUT, self.service.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => panic!("tools/list failed: {e}\n{}", self.context()),
            Err(_) => panic!(
                "tools/list got no answer within {CALL_TIMEOUT:?}\n{}",
                self.context()
            ),
        }
    }

    /// The rmcp session, for requests without a helper here (resources, server info, ...).
    pub fn service(&self) -> &RunningService<RoleClient, ()> {
        &self.service
    }

    /// The server process id; panics in process (use [`connect_stdio`] for a child).
    pub fn pid(&self) -> u32 {
        self.pid.unwrap_or_else(|| {
            panic!(
                "the server ({}) has no process id: it runs in the test's process; a test that \
                 signals the server starts it with connect_stdio",
                self.label
            )
        })
    }

    /// Everything the server logged so far (a child's stderr).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// SIGKILL the server (no cleanup on its side, as in a crash) and wait until the session
    /// has noticed; returns the server's stderr.
    pub async fn kill(self) -> String {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("could not run `kill -KILL {pid}`: {e}"));
        assert!(status.success(), "`kill -KILL {pid}` failed: {status}");
        let McpClient {
            service, stderr, ..
        } = self;
        // The session ends when the child's stdout closes; it then reaps the child.
        if tokio::time::timeout(Duration::from_secs(15), service.waiting())
            .await
            .is_err()
        {
            panic!("the MCP session did not end within 15s of SIGKILLing todo-mcp (pid {pid})");
        }
        stderr.finish(Duration::from_secs(5)).await
    }

    /// Graceful shutdown as the MCP spec describes for stdio (close stdin, wait, then SIGTERM,
    /// then SIGKILL; in process: end of input, then the server's thread ends); returns the
    /// server's log.
    pub async fn close(self) -> String {
        let McpClient {
            mut service,
            stderr,
            ..
        } = self;
        match service.close_with_timeout(Duration::from_secs(20)).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "closing the MCP session did not finish within 20s\n--- server stderr ---\n{}",
                stderr.tail()
            ),
            Err(e) => panic!("the MCP client task failed while closing: {e}"),
        }
        stderr.finish(Duration::from_secs(5)).await
    }

    fn context(&self) -> String {
        format!(
            "server: pid {:?}, {}\n--- server log (tail) ---\n{}",
            self.pid,
            self.label,
            self.stderr.tail()
        )
    }
}

/// The text content blocks of a tool result, joined by newlines.
pub fn result_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}
