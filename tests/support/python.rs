//! The official MCP Python SDK (`mcp==2.3.0`) as a test client: a Python that can import it,
//! and [`PyClient`], which runs the driver `tests/clients/mcp_client.py` as a subprocess over
//! Streamable HTTP, legacy SSE or stdio.
//!
//! Which Python ([`python`]):
//! * `TODO_MCP_TEST_PYTHON=/path/to/python` if set: it must import `mcp` (checked, else the
//!   tests fail saying so);
//! * otherwise a venv at `target/tmp/test-python` (under `CARGO_TARGET_DIR` if set), created
//!   on first use with `python3 -m venv` + `pip install mcp==2.3.0` and reused while `mcp` of
//!   that version imports there. Test processes running in parallel serialize its creation
//!   with a file lock (`target/tmp/test-python.lock`).
//!
//! A missing `python3`, `venv` module or `pip`, or a failing install, fails the test with the
//! command's output: these tests are never skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::cli;
use super::http::HttpServer;

/// The SDK version the tests are written against.
pub const MCP_VERSION: &str = "2.3.0";
/// Env var: a Python interpreter that already has `mcp` installed.
pub const ENV_PYTHON: &str = "TODO_MCP_TEST_PYTHON";
/// How long the driver may run (it also bounds itself with `--timeout`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The limit the driver is given for its whole run.
const DRIVER_TIMEOUT_SECS: u64 = 60;
const VENV_TIMEOUT: Duration = Duration::from_secs(300);
const PIP_TIMEOUT: Duration = Duration::from_secs(900);
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Imports everything the driver uses; prints the installed SDK version.
const CHECK_SCRIPT: &str = "import importlib.metadata, mcp\n\
from mcp import Client, ClientSession, StdioServerParameters\n\
from mcp.client.sse import sse_client\n\
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client\n\
print(importlib.metadata.version('mcp'))";

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// A Python interpreter that can import `mcp` (see the module docs). Blocks on first use,
/// possibly for the length of a `pip install`; panics with the reason if there is none.
pub fn python() -> PathBuf {
    match PYTHON.get_or_init(find_or_create) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// Where the tests' venv lives.
pub fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-python")
}

/// The driver script.
pub fn driver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_client.py")
}

fn find_or_create() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(ENV_PYTHON).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let version = mcp_version(&path).map_err(|e| {
            format!(
                "{ENV_PYTHON}={} cannot import the MCP Python SDK: {e}\nInstall it there \
                 (`{} -m pip install mcp=={MCP_VERSION}`), or unset {ENV_PYTHON} to let the \
                 tests create a venv at {}.",
                path.display(),
                path.display(),
                venv_dir().display()
            )
        })?;
        if version != MCP_VERSION {
            eprintln!(
                "todo-mcp tests: {ENV_PYTHON}={} has mcp {version}; the tests are written for \
                 {MCP_VERSION}",
                path.display()
            );
        }
        return Ok(path);
    }
    create_venv(&venv_dir())
}

/// `python -c CHECK_SCRIPT`: the installed `mcp` version, or why it does not import.
fn mcp_version(python: &Path) -> Result<String, String> {
    let mut command = Command::new(python);
    command.args(["-c", CHECK_SCRIPT]);
    let out = cli::try_run_with_timeout(command, "python -c 'import mcp'", CHECK_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!(
            "`{} -c 'import mcp ...'` failed\n{}",
            python.display(),
            cli::describe_output(&out)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates (or reuses) the venv at `dir`, holding a file lock so that parallel test processes
/// create it once.
fn create_venv(dir: &Path) -> Result<PathBuf, String> {
    // Held until this function returns: the lock is released when it is dropped.
    let _lock = super::lock_install_dir(dir)?;

    let python = dir.join("bin").join("python");
    if python.exists() {
        match mcp_version(&python) {
            Ok(version) if version == MCP_VERSION => return Ok(python),
            Ok(version) => eprintln!(
                "todo-mcp tests: {} has mcp {version}, not {MCP_VERSION}: recreating it",
                dir.display()
            ),
            Err(e) => eprintln!(
                "todo-mcp tests: {} is unusable, recreating it: {e}",
                dir.display()
            ),
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("could not remove the old {}: {e}", dir.display()))?;
    }

    let started = Instant::now();
    eprintln!(
        "todo-mcp tests: creating a venv with mcp=={MCP_VERSION} at {} (once)",
        dir.display()
    );
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    run_step(venv, "python3 -m venv", VENV_TIMEOUT).map_err(|e| {
        format!(
            "{e}\nThe HTTP client tests need Python 3 with its venv module (Debian: `apt-get \
             install python3 python3-venv`), or {ENV_PYTHON} naming a Python that has \
             mcp=={MCP_VERSION}."
        )
    })?;
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", &format!("mcp=={MCP_VERSION}")]);
    run_step(pip, &format!("pip install mcp=={MCP_VERSION}"), PIP_TIMEOUT)?;
    let version = mcp_version(&python).map_err(|e| {
        format!(
            "mcp=={MCP_VERSION} was installed into {} but does not import: {e}",
            dir.display()
        )
    })?;
    if version != MCP_VERSION {
        return Err(format!(
            "`pip install mcp=={MCP_VERSION}` into {} left mcp {version}",
            dir.display()
        ));
    }
    eprintln!(
        "todo-mcp tests: venv ready at {} in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(python)
}

fn run_step(command: Command, what: &str, timeout: Duration) -> Result<(), String> {
    let out = cli::try_run_with_timeout(command, what, timeout)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed\n{}", cli::describe_output(&out)))
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// How the driver reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP at `/mcp`, through `mcp.Client`'s default auto mode.
    Streamable,
    /// The legacy HTTP+SSE transport at `/sse` + `/message`.
    Sse,
    /// `todo-mcp stdio`, launched by the SDK.
    Stdio,
}

impl Transport {
    /// The driver's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Streamable => "streamable",
            Transport::Sse => "sse",
            Transport::Stdio => "stdio",
        }
    }
}

/// One run of the Python driver: a transport, a target and a credential.
#[derive(Debug, Clone)]
pub struct PyClient {
    transport: Transport,
    target: String,
    token: Option<String>,
    /// Sign in by OAuth as this Better Auth session's user (streamable only).
    oauth_cookie: Option<String>,
    env: Vec<(String, String)>,
    list_tools: bool,
}

/// What a driver run printed, and how it ended.
#[derive(Debug)]
pub struct RawRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A successful driver run, parsed.
#[derive(Debug)]
pub struct Session {
    /// `{protocol_version, server_name}` as the connection negotiated them.
    pub connected: Value,
    /// tools/list, when asked for with [`PyClient::list_tools`].
    pub tools: Option<Vec<Value>>,
    /// One per call, in order.
    pub calls: Vec<CallResult>,
}

/// One tool call's result as the SDK gave it.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub tool: String,
    /// The arguments as sent (`${N.path}` references resolved).
    pub arguments: Value,
    pub is_error: bool,
    /// `structured_content` (null when there was none).
    pub structured: Value,
    /// The text content blocks, joined by newlines.
    pub text: String,
}

impl CallResult {
    /// The structured content of a call that must have succeeded.
    pub fn ok(&self) -> &Value {
        assert!(
            !self.is_error,
            "{} should have succeeded, it failed: {}",
            self.tool, self.text
        );
        &self.structured
    }

    /// The text of a call that must have failed with a tool error.
    pub fn err(&self) -> &str {
        assert!(
            self.is_error,
            "{} should have failed, it returned {}",
            self.tool, self.structured
        );
        &self.text
    }
}

/// `{"tool": tool, "arguments": arguments}`, one entry of a driver script.
pub fn call(tool: &str, arguments: Value) -> Value {
    serde_json::json!({ "tool": tool, "arguments": arguments })
}

impl PyClient {
    /// Streamable HTTP to the server's `/mcp`.
    pub fn streamable(server: &HttpServer) -> PyClient {
        PyClient::new(Transport::Streamable, server.mcp_url())
    }

    /// Legacy SSE to the server's `/sse`.
    pub fn sse(server: &HttpServer) -> PyClient {
        PyClient::new(Transport::Sse, format!("{}/sse", server.base_url()))
    }

    /// Streamable HTTP or SSE to `server`.
    pub fn http(transport: Transport, server: &HttpServer) -> PyClient {
        match transport {
            Transport::Streamable => PyClient::streamable(server),
            Transport::Sse => PyClient::sse(server),
            Transport::Stdio => panic!("PyClient::http takes an HTTP transport"),
        }
    }

    /// `todo-mcp stdio` on `db_url`, launched by the SDK.
    pub fn stdio(db_url: &str) -> PyClient {
        let mut client = PyClient::new(Transport::Stdio, cli::bin_path().to_string());
        client.env = vec![
            ("DATABASE_URL".into(), db_url.into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        client
    }

    fn new(transport: Transport, target: String) -> PyClient {
        PyClient {
            transport,
            target,
            token: None,
            oauth_cookie: None,
            env: Vec::new(),
            list_tools: false,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` (stdio: `TODO_MCP_TOKEN=TOKEN`).
    pub fn token(mut self, token: &str) -> PyClient {
        self.token = Some(token.to_string());
        self
    }

    /// No token: the SDK's OAuth client discovers the authorization server from the 401 and
    /// signs in as the user whose Better Auth session cookie this is (the `connected` line
    /// then reports the authorization request and the token).
    pub fn oauth_cookie(mut self, cookie: &str) -> PyClient {
        self.oauth_cookie = Some(cookie.to_string());
        self
    }

    /// Also prints tools/list.
    pub fn list_tools(mut self) -> PyClient {
        self.list_tools = true;
        self
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Runs the driver with `calls` (see [`call`]) and returns what it printed, whatever
    /// its exit status. Panics if it cannot start or outlives [`CLIENT_TIMEOUT`].
    pub async fn run_raw(&self, calls: &[Value]) -> RawRun {
        let python = tokio::task::spawn_blocking(python)
            .await
            .unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("finding Python was cancelled: {e}"),
            });
        let mut command = tokio::process::Command::new(&python);
        command
            .arg(driver_script())
            .arg(self.transport.name())
            .arg(&self.target)
            .args(["--timeout", &DRIVER_TIMEOUT_SECS.to_string()]);
        if let Some(token) = &self.token {
            command.args(["--token", token]);
        }
        if let Some(cookie) = &self.oauth_cookie {
            command.args(["--oauth-cookie", cookie]);
        }
        if self.list_tools {
            command.arg("--list-tools");
        }
        for (key, value) in &self.env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        cli::scrub_env(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));
        let script = serde_json::to_vec(calls).expect("calls serialize");
        let mut stdin = child.stdin.take().expect("stdin piped");
        stdin
            .write_all(&script)
            .await
            .unwrap_or_else(|e| panic!("could not write the calls to mcp_client.py: {e}"));
        drop(stdin);
        let out = match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("waiting for mcp_client.py failed: {e}"),
            Err(_) => panic!(
                "mcp_client.py {} {} did not finish within {CLIENT_TIMEOUT:?}",
                self.transport.name(),
                self.target
            ),
        };
        RawRun {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the driver, which must connect and get an answer to every call (tool errors
    /// included); panics with its output otherwise.
    pub async fn run(&self, calls: &[Value]) -> Session {
        let raw = self.run_raw(calls).await;
        let context = || {
            format!(
                "mcp_client.py {} {} (calls: {})\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.transport.name(),
                self.target,
                Value::from(calls.to_vec()),
                raw.status,
                raw.stdout,
                raw.stderr
            )
        };
        assert!(raw.status.success(), "the MCP client failed\n{}", context());
        let mut lines = raw.stdout.lines().map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("non-JSON line {line:?}: {e}\n{}", context()))
        });
        let connected = lines
            .next()
            .and_then(|first| first.get("connected").cloned())
            .unwrap_or_else(|| panic!("no `connected` line first\n{}", context()));
        let mut tools = None;
        let mut results = Vec::new();
        for line in lines {
            if let Some(listed) = line.get("tools") {
                let listed = listed.as_array().expect("tools is a list").clone();
                tools = Some(listed);
                continue;
            }
            let field = |name: &str| {
                line.get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("call line without `{name}`: {line}\n{}", context()))
            };
            results.push(CallResult {
                tool: field("tool")
                    .as_str()
                    .expect("tool is a string")
                    .to_string(),
                arguments: field("arguments"),
                is_error: field("is_error").as_bool().expect("is_error is a bool"),
                structured: field("structured"),
                text: field("text")
                    .as_str()
                    .expect("text is a string")
                    .to_string(),
            });
        }
        assert_eq!(
            results.len(),
            calls.len(),
            "one result line per call expected\n{}",
            context()
        );
        assert_eq!(
            tools.is_some(),
            self.list_tools,
            "tools/list printed iff asked for\n{}",
            context()
        );
        Session {
            connected,
            tools,
            calls: results,
        }
    }
}
