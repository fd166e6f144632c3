//! `todo-mcp stdio` reads and writes its pipes in non-blocking mode, a mode that belongs to
//! the pipe and so to every process holding it: when the session ends the server must put
//! them back in blocking mode, or a shell writing to the same stdout after it would meet
//! EAGAIN.

use crate::support;

use rustix::fs::{OFlags, fcntl_getfl};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::cli::bin_path;
use support::sqlite::SqliteTestDb;

fn non_blocking(fd: impl AsFd) -> bool {
    fcntl_getfl(fd)
        .expect("fcntl(F_GETFL) on a pipe")
        .contains(OFlags::NONBLOCK)
}

#[test]
fn the_server_puts_its_pipes_back_in_blocking_mode_when_the_session_ends() {
    let db = SqliteTestDb::new();
    let (stdin_read, mut stdin_write) = std::io::pipe().expect("stdin pipe");
    let (stdout_read, stdout_write) = std::io::pipe().expect("stdout pipe");
    // Ends we keep: the same pipes, so the same mode flags, as the server's.
    let server_stdin = stdin_read.try_clone().expect("dup");
    let server_stdout = stdout_write.try_clone().expect("dup");
    let mut child = Command::new(bin_path())
        .arg("stdio")
        .env("DATABASE_URL", db.url())
        .env("TODO_MCP_LOG", "warn")
        .stdin(stdin_read)
        .stdout(stdout_write)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting todo-mcp stdio");

    let mut answers = BufReader::new(stdout_read);
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pipes","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ] {
        writeln!(stdin_write, "{line}").expect("writing to the server");
    }
    let mut answered = 0;
    while answered < 2 {
        let mut answer = String::new();
        let read = answers.read_line(&mut answer).expect("reading the server");
        assert!(read > 0, "the server closed stdout before answering");
        assert!(answer.contains(r#""result""#), "not a result: {answer}");
        answered += 1;
    }
    // While serving, both pipes are non-blocking (else the check below proves nothing).
    assert!(
        non_blocking(&server_stdin),
        "stdin was not read in non-blocking mode"
    );
    assert!(
        non_blocking(&server_stdout),
        "stdout was not written in non-blocking mode"
    );

    drop(stdin_write);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the server") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit at end of input"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the server exited with {status}");
    assert!(
        !non_blocking(&server_stdin),
        "the server left its stdin pipe in non-blocking mode"
    );
    assert!(
        !non_blocking(&server_stdout),
        "the server left its stdout pipe in non-blocking mode"
    );
}
