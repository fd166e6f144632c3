//! The server under test: the real `todo-mcp` binary, run as the user would run it.

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long `todo-mcp http` may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// `todo-mcp token create` processes run at once while issuing tokens.
const TOKEN_CONCURRENCY: usize = 8;

/// How to start the server: the binary, its database and its settings.
pub struct ServerBinary {
    path: PathBuf,
    database_url: String,
    pool_size: Option<u32>,
    log_filter: Option<String>,
    log_dir: PathBuf,
}

impl ServerBinary {
    pub fn new(
        path: PathBuf,
        database_url: String,
        pool_size: Option<u32>,
        log_filter: Option<String>,
        log_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        if !path.is_file() {
            bail!(
                "no server binary at {}: build it with `cargo build --release` or pass --server-bin",
                path.display()
            );
        }
        Ok(ServerBinary {
            path,
            database_url,
            pool_size,
            log_filter,
            log_dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same server on another database URL, logging into `log_dir`.
    pub fn with_database(&self, database_url: String, log_dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(ServerBinary {
            path: self.path.clone(),
            database_url,
            pool_size: self.pool_size,
            log_filter: self.log_filter.clone(),
            log_dir,
        })
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The binary with this run's environment and nothing inherited that would change it.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.path);
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && (key == "DATABASE_URL" || key.starts_with("TODO_MCP_"))
            {
                command.env_remove(key);
            }
        }
        command.env("DATABASE_URL", &self.database_url);
        command.env("NO_COLOR", "1");
        // A sequential add_task run makes ~1,000 tasks a second for one user: the default
        // quota (10,000 tasks) would end it in quota errors; the bench measures speed.
        command.env("TODO_MCP_MAX_TASKS_PER_USER", i32::MAX.to_string());
        if let Some(size) = self.pool_size {
            command.env("TODO_MCP_POOL_SIZE", size.to_string());
        }
        if let Some(filter) = &self.log_filter {
            command.env("TODO_MCP_LOG", filter);
        }
        command.kill_on_drop(true);
        command
    }

    /// A new log file in the run's log directory, for a server's stderr.
    pub fn log_file(&self, name: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
        let path = self.log_dir.join(name);
        let file = std::fs::File::create(&path)
            .with_context(|| format!("creating the server log {}", path.display()))?;
        Ok((path, file))
    }

    /// `todo-mcp --version`.
    pub async fn version(&self) -> anyhow::Result<String> {
        let output = self.run(&["--version"]).await?;
        Ok(output.trim().to_owned())
    }

    /// Applies the migrations, so that the servers started next find the schema current.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.run(&["migrate"]).await.map(drop)
    }

    /// Issues one token per user with `todo-mcp token create --user U`, in `users`' order.
    pub async fn create_tokens(&self, users: &[String]) -> anyhow::Result<Vec<String>> {
        futures_util::stream::iter(users)
            .map(|user| async move {
                let token = self.run(&["token", "create", "--user", user]).await?;
                let token = token.trim().to_owned();
                if token.is_empty() {
                    bail!("`todo-mcp token create --user {user}` printed no token");
                }
                Ok(token)
            })
            .buffered(TOKEN_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Runs the binary with `args` to completion; its stdout on success.
    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {} {}", self.path.display(), args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "`todo-mcp {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`todo-mcp {}` printed non-UTF-8", args.join(" ")))
    }

    /// Starts `todo-mcp http` on an ephemeral loopback port and waits until it listens.
    pub async fn start_http(&self) -> anyhow::Result<HttpServer> {
        let (log_path, log) = self.log_file("server-http.log")?;
        let mut child = self
            .command()
            .args(["http", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} http", self.path.display()))?;
        let pid = child
            .id()
            .context("the server exited as soon as it started")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = listening_address(&text) {
                return Ok(HttpServer {
                    child,
                    addr,
                    pid,
                    log_path,
                });
            }
            if let Some(status) = child.try_wait().context("checking on the server")? {
                bail!(
                    "`todo-mcp http` exited ({status}) before listening:\n{}",
                    tail(&text, 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "`todo-mcp http` did not listen within {START_TIMEOUT:?}:\n{}",
                    tail(&text, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `todo-mcp http`.
pub struct HttpServer {
    child: tokio::process::Child,
    addr: SocketAddr,
    pid: u32,
    log_path: PathBuf,
}

impl HttpServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGTERM, then waits for the graceful exit (killing it if it does not come).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", self.pid);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the server to exit")?;
                if !status.success() {
                    bail!("the server exited with {status} after SIGTERM");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.context("killing the server")?;
                bail!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }
}

/// The tool durations the server logged (`call ok tool=… duration_ms=…`, one line per
/// call at the default log level) from `since` on: time spent inside the tool call,
/// transaction and audit record included, transport and authentication excluded.
pub fn logged_tool_durations(
    log: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> crate::stats::Samples {
    let mut samples = crate::stats::Samples::default();
    for line in log.lines().filter(|line| line.contains(" call ok ")) {
        let logged_at = line
            .split_whitespace()
            .next()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if logged_at.is_none_or(|at| at < since) {
            continue;
        }
        let field = |name: &str| {
            let start = line.find(name)? + name.len();
            line[start..].split_whitespace().next()
        };
        let (Some(tool), Some(millis)) = (
            field(" tool="),
            field(" duration_ms=").and_then(|m| m.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if let Ok(duration) = Duration::try_from_secs_f64(millis / 1000.0) {
            samples.record(tool, duration);
        }
    }
    samples
}
