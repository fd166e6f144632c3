//! `todo-mcp http` as a child process on an ephemeral loopback port.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cli;
use super::mcp::StderrLog;

/// How long the server may take to bind and say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `todo-mcp http`; killed when dropped.
pub struct HttpServer {
    child: tokio::process::Child,
    addr: SocketAddr,
    stderr: StderrLog,
}

/// Starts `todo-mcp http --listen 127.0.0.1:0 ARGS` on `db_url` and waits until it listens.
/// `args` may add `--no-auth`, `--allowed-host …`; `env` e.g. `TODO_MCP_JWT_SECRET`.
pub async fn start_http(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> HttpServer {
    start_http_on("127.0.0.1:0", db_url, args, env).await
}

/// [`start_http`] listening on `listen` (a port picked beforehand, for a server whose URL
/// must be known before it starts).
pub async fn start_http_on(
    listen: &str,
    db_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> HttpServer {
    let mut command = tokio::process::Command::new(cli::bin_path());
    command.args(["http", "--listen", listen]).args(args);
    start(command, db_url, args, env).await
}

/// [`start_http`] under an open-file limit of `open_files`, soft and hard (so the server
/// cannot raise it), as a small container or a careless unit file would leave it.
pub async fn start_http_with_open_files(
    open_files: u32,
    db_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> HttpServer {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
        .arg(cli::bin_path())
        .args(["http", "--listen", "127.0.0.1:0"])
        .args(args);
    start(command, db_url, args, env).await
}

async fn start(
    mut command: tokio::process::Command,
    db_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> HttpServer {
    cli::scrub_env(&mut command);
    command.env("DATABASE_URL", db_url);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not spawn `{} http`: {e}", cli::bin_path()));
    let pid = child.id();
    let stderr = StderrLog::start(child.stderr.take().expect("stderr piped"), pid);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(addr) = listening_address(&stderr.text()) {
            return HttpServer {
                child,
                addr,
                stderr,
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "`todo-mcp http {args:?}` exited ({status}) before listening\n--- stderr ---\n{}",
                stderr.finish(Duration::from_secs(5)).await
            );
        }
        assert!(
            Instant::now() < deadline,
            "`todo-mcp http` did not listen within {START_TIMEOUT:?}\n--- stderr ---\n{}",
            stderr.tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server logs `address=127.0.0.1:PORT` when it starts serving.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains("serving MCP over HTTP"))
        .find_map(|line| {
            let start = line.find("address=")? + "address=".len();
            line[start..].split_whitespace().next()?.parse().ok()
        })
}

impl HttpServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Streamable HTTP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// SIGKILL: the process dies mid-whatever, as a crashed replica does.
    pub async fn kill(mut self) -> String {
        let _ = self.child.kill().await;
        self.stderr.finish(Duration::from_secs(5)).await
    }

    /// SIGTERM, then waits (bounded) for a graceful exit; returns its status and stderr.
    pub async fn terminate(mut self, within: Duration) -> (ExitStatus, String) {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not send SIGTERM to {pid}");
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for todo-mcp http failed: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "todo-mcp http did not exit within {within:?} of SIGTERM\n--- stderr ---\n{}",
                    self.stderr.tail()
                );
            }
        };
        (status, self.stderr.finish(Duration::from_secs(5)).await)
    }
}
