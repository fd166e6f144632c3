//! MCP over stdin/stdout. stdout carries only protocol messages; logs go to stderr.
//!
//! Lines are read here rather than by rmcp's stdio transport, which drops a line that is
//! not a JSON-RPC message without a word: each such line gets a JSON-RPC error (id null),
//! as JSON-RPC asks, written to stdout between the server's own messages.

use crate::auth::Authenticator;
use crate::db::Database;
use crate::store::Quotas;
use crate::store::scopes::Caller;
use crate::store::{UserId, users};
use crate::tools::{CheckCredential, Identity, Lapse, Recheck, TodoServer};
use crate::transport::jsonrpc::{self, INVALID_REQUEST, Refusal};
use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rustix::fs::fstat;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

/// The longest line read (rmcp's own stdio limit).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Messages queued in each direction before the other side waits.
const CHANNEL_CAPACITY: usize = 64;

/// One encoded line for stdout: a server message, or the refusal of a bad line.
type Line = Vec<u8>;

/// Serves one client until it closes stdin.
pub async fn serve(db: Database, caller: SessionCaller, quotas: Quotas) -> anyhow::Result<()> {
    let mut restore = RestoreBlocking::default();
    let served = serve_streams(
        db,
        caller,
        quotas,
        stdin(&mut restore),
        stdout(&mut restore),
    )
    .await;
    drop(restore);
    served
}

/// Serves one client over any pair of byte streams, line by line exactly as on stdio, until
/// `input` ends: [`serve`] gives it stdin and stdout; an in-process client (the test suite)
/// gives it one end of an in-memory duplex.
pub async fn serve_streams(
    db: Database,
    caller: SessionCaller,
    quotas: Quotas,
    input: impl AsyncRead + Send + Unpin + 'static,
    output: impl AsyncWrite + Send + Unpin + 'static,
) -> anyhow::Result<()> {
    tracing::info!(user = %caller.caller.user, scopes = %caller.caller.scopes.to_oauth(), "serving MCP on stdio");
    let identity = caller.identity(&db);
    let server = TodoServer::new(db, identity, quotas).await?;
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
    let (to_stdout, outgoing) = mpsc::channel::<Line>(CHANNEL_CAPACITY);
    let (from_server, server_messages) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);

    let writer = tokio::spawn(write_lines(output, outgoing));
    let forward = {
        let to_stdout = to_stdout.clone();
        tokio::spawn(forward_server_messages(server_messages, to_stdout))
    };
    let reader = tokio::spawn(read_lines(input, to_server, to_stdout));

    let transport = (
        PollSender::new(from_server),
        ReceiverStream::new(from_client),
    );
    let running = server
        .serve(transport)
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialization over stdio failed: {e}"))?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "stdio session ended");
    // The server is done: let the writer drain what it was given, then stop.
    reader.abort();
    let _ = forward.await;
    let _ = writer.await;
    Ok(())
}

/// Who a stdio session serves: the user named by its token (an API token or a JWT, refused
/// here when invalid, expired or revoked), or without one the single local user `local`.
/// Who a stdio session acts for: the caller its credential named at start, and that
/// credential, checked again during the session (see [`RECHECK_AFTER`]).
pub struct SessionCaller {
    caller: Caller,
    credential: Option<(String, Authenticator)>,
    recheck_after: Duration,
}

/// A call made longer than this after the credential's last check checks it again: a
/// token revoked, or a JWT expired, stops serving within this long of the change.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);

impl SessionCaller {
    /// Checks again after `every` instead of [`RECHECK_AFTER`] (for tests).
    pub fn recheck_after(mut self, every: Duration) -> Self {
        self.recheck_after = every;
        self
    }

    fn identity(self, db: &Database) -> Identity {
        let Some((token, authenticator)) = self.credential else {
            return Identity::Fixed(self.caller);
        };
        let (db, user) = (db.clone(), self.caller.user.clone());
        let token = Arc::new(token);
        let check: CheckCredential = Arc::new(move || {
            let (db, authenticator, token, user) = (
                db.clone(),
                authenticator.clone(),
                token.clone(),
                user.clone(),
            );
            Box::pin(async move {
                match authenticator.authenticate(&db, &token).await {
                    Ok(caller) if caller.user == user => Ok(()),
                    Ok(caller) => Err(Lapse::Refused(format!(
                        "it now names user {}, not {user}",
                        caller.user
                    ))),
                    Err(error) if error.is_unavailable() => {
                        tracing::warn!(%error, "cannot check the session's credential again");
                        Err(Lapse::Unavailable)
                    }
                    Err(error) => Err(Lapse::Refused(error.to_string())),
                }
            })
        });
        Identity::Rechecked(
            self.caller,
            Arc::new(Recheck::new(self.recheck_after, check)),
        )
    }
}

/// The session's caller: the user `token` names (refused: an error saying why), or the
/// single local user without one.
pub async fn session_caller(
    db: &Database,
    authenticator: &Authenticator,
    token: Option<&str>,
) -> anyhow::Result<SessionCaller> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => Ok(SessionCaller {
            caller: authenticator
                .authenticate(db, token)
                .await
                .context("TODO_MCP_TOKEN was refused")?,
            credential: Some((token.to_owned(), authenticator.clone())),
            recheck_after: RECHECK_AFTER,
        }),
        None => {
            tracing::warn!("no TODO_MCP_TOKEN set: serving the single local user `local`");
            let user = UserId::local();
            users::ensure(db, &user).await?;
            Ok(SessionCaller {
                caller: Caller::with_full_access(user),
                credential: None,
                recheck_after: RECHECK_AFTER,
            })
        }
    }
}

/// stdin for the async reader. A pipe (what MCP clients give a server) is read in
/// non-blocking mode through the runtime's event loop; tokio's own stdin, for anything else
/// (a file, a terminal, a socket), reads on a blocking thread, a thread hop per message.
fn stdin(restore: &mut RestoreBlocking) -> Pin<Box<dyn AsyncRead + Send>> {
    let input = std::io::stdin();
    match restore.non_blocking_pipe(input.as_fd(), pipe::Receiver::from_file) {
        Some(pipe) => Box::pin(pipe),
        None => Box::pin(tokio::io::stdin()),
    }
}

/// stdout for the async writer: a pipe in non-blocking mode, as for [`stdin`], unless
/// stderr shares it (`2>&1`): the log's plain blocking writes to stderr must not meet
/// non-blocking mode, which belongs to the pipe, not to one descriptor.
fn stdout(restore: &mut RestoreBlocking) -> Pin<Box<dyn AsyncWrite + Send>> {
    let output = std::io::stdout();
    let shared_with_stderr = match (fstat(output.as_fd()), fstat(std::io::stderr().as_fd())) {
        (Ok(out), Ok(err)) => (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino),
        _ => true,
    };
    let pipe = if shared_with_stderr {
        None
    } else {
        restore.non_blocking_pipe(output.as_fd(), pipe::Sender::from_file)
    };
    match pipe {
        Some(pipe) => Box::pin(pipe),
        None => Box::pin(tokio::io::stdout()),
    }
}

/// The pipes put in non-blocking mode, put back in blocking mode when the session ends:
/// the mode belongs to the pipe, which other processes may share (a shell running this
/// server inside a pipeline writes to the same stdout after it).
#[derive(Default)]
struct RestoreBlocking(Vec<OwnedFd>);

impl RestoreBlocking {
    /// `open` (tokio's `from_file`, which checks that `fd` is a pipe and sets non-blocking
    /// mode) on a duplicate of `fd`; `None` when it is not a pipe.
    fn non_blocking_pipe<P>(
        &mut self,
        fd: BorrowedFd<'_>,
        open: impl FnOnce(File) -> std::io::Result<P>,
    ) -> Option<P> {
        let kept = fd.try_clone_to_owned().ok()?;
        let pipe = open(File::from(fd.try_clone_to_owned().ok()?)).ok()?;
        self.0.push(kept);
        Some(pipe)
    }
}

impl Drop for RestoreBlocking {
    fn drop(&mut self) {
        for fd in &self.0 {
            if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
                let _ = rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::NONBLOCK);
            }
        }
    }
}

/// Reads stdin line by line: JSON-RPC messages go to the server, anything else is answered
/// with a JSON-RPC error. Ends at end of input, which ends the session.
async fn read_lines(
    input: impl AsyncRead + Unpin,
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
    to_stdout: mpsc::Sender<Line>,
) {
    let mut input = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "reading stdin failed; ending the session");
                return;
            }
        }
        let refusal = if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
            if !skip_rest_of_line(&mut input).await {
                return;
            }
            Some(Refusal {
                code: INVALID_REQUEST,
                message: format!("invalid request: the line is over {MAX_LINE_BYTES} bytes"),
            })
        } else {
            // A byte order mark is tolerated, as rmcp's own reader does.
            let message = line.trim_ascii();
            let message = message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message);
            if message.is_empty() {
                continue;
            }
            match jsonrpc::read_message(message).and_then(jsonrpc::client_message) {
                Err(refusal) => Some(refusal),
                Ok(message) => {
                    if to_server.send(message).await.is_err() {
                        return;
                    }
                    None
                }
            }
        };
        if let Some(refusal) = refusal {
            tracing::info!(code = refusal.code, message = %refusal.message, "refused a line on stdin");
            let answer = encode(&jsonrpc::error_response(&refusal));
            if let Some(answer) = answer
                && to_stdout.send(answer).await.is_err()
            {
                return;
            }
        }
    }
}

/// Discards input up to and including the next newline; false at end of input.
async fn skip_rest_of_line(input: &mut BufReader<impl AsyncRead + Unpin>) -> bool {
    loop {
        let buffer = match input.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(buffer) => buffer,
        };
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return true;
            }
            None => {
                let len = buffer.len();
                input.consume(len);
            }
        }
    }
}

async fn forward_server_messages(
    mut messages: mpsc::Receiver<ServerJsonRpcMessage>,
    to_stdout: mpsc::Sender<Line>,
) {
    while let Some(message) = messages.recv().await {
        if let Some(line) = encode(&message)
            && to_stdout.send(line).await.is_err()
        {
            return;
        }
    }
}

/// A message as one JSON line (JSON never holds a raw newline).
fn encode(message: &impl serde::Serialize) -> Option<Line> {
    match serde_json::to_vec(message) {
        Ok(mut line) => {
            line.push(b'\n');
            Some(line)
        }
        Err(error) => {
            tracing::error!(%error, "could not encode a message for stdout");
            None
        }
    }
}

/// Writes each line, flushing after each (a client waits on every answer).
async fn write_lines(mut output: impl AsyncWrite + Unpin, mut lines: mpsc::Receiver<Line>) {
    while let Some(line) = lines.recv().await {
        let written = async {
            output.write_all(&line).await?;
            output.flush().await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(%error, "writing stdout failed; the client is gone");
            return;
        }
    }
}
