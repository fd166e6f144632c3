//! Hostile input (issue #4): a catalogue of bad inputs, sent as raw bytes on the stdio
//! server's stdin and as raw bodies to `POST /mcp`. Each must get a clear error (a tool error
//! whose text starts with its kind and names the field, a JSON-RPC error, or an HTTP refusal
//! whose body is a JSON-RPC error); the server must keep serving (a ping after every case);
//! and the database must not change. Tables are compared before and after every case; the
//! one exception is the failure record (role `tool`) that every call reaching the tool layer
//! leaves in the caller's "Tool activity" conversation, by design: those are counted, and
//! protocol-level refusals must leave none. Another user's ids answer exactly like unknown
//! ids. Then titles and queries full of SQL meta-characters and control characters must be
//! stored verbatim and searched literally.
//!
//! PostgreSQL only: tests/it/bad_input.rs checks argument errors on both backends.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use support::jsonrpc::{self, PROTOCOL};
use support::mcp::StderrLog;
use support::reliability::{self, Evidence};
use support::samples;
use support::{
    HttpServer, PgTestDb, connect_in_process, create_token, spawn_stdio_raw, start_http,
};

const TEST_FILE: &str = "tests/it/hostile_input.rs";
/// JSON-RPC error codes.
const PARSE: &[i64] = &[-32700];
const INVALID_REQUEST: &[i64] = &[-32600];
const PARSE_OR_INVALID: &[i64] = &[-32700, -32600];
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const MIB: usize = 1024 * 1024;
/// The HTTP server's body limit.
const MAX_BODY_BYTES: usize = 4 * MIB;
/// Every text user B owns contains this: an answer to A holding it is a leak.
const FOREIGN_MARKER: &str = "bob-secret";
/// How long one case may take to be answered (the 17 MiB ones included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------------------------

/// What a case must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// Reaches the tool, which refuses it: `isError: true`, text `kind: …` containing `names`.
    /// Leaves one failure record.
    Tool { kind: &'static str, names: String },
    /// A JSON-RPC error answering the request's id. `audited`: it reached the tool layer
    /// (an unknown tool name), which records the failure.
    Rpc { code: i64, audited: bool },
    /// Not a JSON-RPC request at all. HTTP: `status` with a JSON-RPC error body (one of
    /// `codes`, id null). Stdio: the same error as a line, or the line skipped without an
    /// answer (rmcp's stdio transport drops lines it cannot decode). Never recorded.
    Refused { status: u16, codes: &'static [i64] },
    /// A notification (or, over stdio, a response): no answer (HTTP 202), nothing runs,
    /// nothing recorded.
    Ignored,
}

impl Expect {
    /// How many failure records the case leaves.
    fn records(&self) -> usize {
        match self {
            Expect::Tool { .. } => 1,
            Expect::Rpc { audited, .. } => usize::from(*audited),
            Expect::Refused { .. } | Expect::Ignored => 0,
        }
    }

    /// The id whose answer the exchange must wait for.
    fn answered(&self, id: Option<i64>) -> Option<i64> {
        match self {
            Expect::Tool { .. } | Expect::Rpc { .. } => id,
            Expect::Refused { .. } | Expect::Ignored => None,
        }
    }
}

/// The same call with an unknown id, whose answer must equal the case's once ids are masked.
struct Twin {
    body: Vec<u8>,
    id: i64,
    /// Every spelling of the foreign and the unknown id, masked before comparing.
    ids: Vec<String>,
}

struct Case {
    name: String,
    body: Vec<u8>,
    /// The request id a server can read from the body.
    id: Option<i64>,
    stdio: Option<Expect>,
    http: Option<Expect>,
    /// Over HTTP, sent chunked (no Content-Length).
    chunked: bool,
    twin: Option<Twin>,
}

#[derive(Default)]
struct Catalogue {
    cases: Vec<Case>,
    last_id: i64,
}

fn call(id: i64, tool: &str, args: Value) -> Vec<u8> {
    jsonrpc::tool_call(id, tool, args).to_string().into_bytes()
}

fn chars(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// `add_task` whose title is `depth` levels of `open`…`inner`…`close`.
fn nested(id: i64, open: &str, inner: &str, close: &str, depth: usize) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"add_task","arguments":{{"title":{}{inner}{}}}}}}}"#,
        open.repeat(depth),
        close.repeat(depth)
    )
    .into_bytes()
}

impl Catalogue {
    fn id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        body: Vec<u8>,
        id: Option<i64>,
        stdio: Option<Expect>,
        http: Option<Expect>,
    ) -> &mut Case {
        self.cases.push(Case {
            name: name.into(),
            body,
            id,
            stdio,
            http,
            chunked: false,
            twin: None,
        });
        self.cases.last_mut().expect("a case was just pushed")
    }

    /// Refused before dispatch on both transports; `body` gets an id no one may answer.
    fn refused(
        &mut self,
        name: &str,
        status: u16,
        codes: &'static [i64],
        body: impl FnOnce(i64) -> Vec<u8>,
    ) {
        let id = self.id();
        let expect = Expect::Refused { status, codes };
        self.push(name, body(id), None, Some(expect.clone()), Some(expect));
    }

    /// A call its tool refuses, on both transports.
    fn tool(
        &mut self,
        name: &str,
        tool: &str,
        args: Value,
        kind: &'static str,
        names: impl Into<String>,
    ) {
        let id = self.id();
        let expect = Expect::Tool {
            kind,
            names: names.into(),
        };
        self.push(
            name,
            call(id, tool, args),
            Some(id),
            Some(expect.clone()),
            Some(expect),
        );
    }

    fn invalid(&mut self, name: &str, tool: &str, args: Value, names: impl Into<String>) {
        self.tool(name, tool, args, "invalid_argument", names);
    }

    /// A request answered by a JSON-RPC error, on both transports.
    fn rpc(&mut self, name: &str, code: i64, audited: bool, message: impl FnOnce(i64) -> Value) {
        let id = self.id();
        let expect = Expect::Rpc { code, audited };
        let body = message(id).to_string().into_bytes();
        self.push(name, body, Some(id), Some(expect.clone()), Some(expect));
    }

    /// A call naming user B's row (spelled by `spell`): `not_found`, exactly as the same call
    /// with an unknown id.
    #[allow(clippy::too_many_arguments)]
    fn foreign(
        &mut self,
        name: &str,
        tool: &str,
        entity: &str,
        foreign: &str,
        unknown: &str,
        spell: fn(&str) -> String,
        args: impl Fn(String) -> Value,
    ) {
        let id = self.id();
        let twin_id = self.id();
        let expect = Expect::Tool {
            kind: "not_found",
            names: format!("{entity} {foreign} not found"),
        };
        let twin = Twin {
            body: call(twin_id, tool, args(spell(unknown))),
            id: twin_id,
            ids: vec![
                foreign.to_owned(),
                spell(foreign),
                unknown.to_owned(),
                spell(unknown),
            ],
        };
        let case = self.push(
            name,
            call(id, tool, args(spell(foreign))),
            Some(id),
            Some(expect.clone()),
            Some(expect),
        );
        case.twin = Some(twin);
    }
}

/// What user A and user B own, made through the server before the catalogue runs.
struct Owner {
    task: String,
    conversation: String,
    activity_log: String,
    task_cursor: String,
    conversation_cursor: String,
}

fn catalogue(a: &Owner, b: &Owner, unknown: &str) -> Vec<Case> {
    let mut c = Catalogue::default();

    // --- Bytes that are not JSON, or not UTF-8 -----------------------------------------------
    c.refused("truncated JSON", 400, PARSE, |id| {
        format!(r#"{{"jsonrpc": "2.0", "id": {id}, "method": "#).into_bytes()
    });
    c.refused("not JSON", 400, PARSE, |_| b"not json".to_vec());
    c.refused("empty body", 400, PARSE, |_| Vec::new());
    c.refused("whitespace only", 400, PARSE, |_| b" \t  ".to_vec());
    c.refused("garbage after a request", 400, PARSE, |id| {
        [
            call(id, "add_task", json!({"title": "trailing"})),
            b" trailing".to_vec(),
        ]
        .concat()
    });
    c.refused("two requests back to back", 400, PARSE, |id| {
        let first = call(id, "add_task", json!({"title": "first of two"}));
        [
            first,
            call(id + 1000, "add_task", json!({"title": "second of two"})),
        ]
        .concat()
    });
    // Over stdio rmcp strips a byte order mark and serves the request; over HTTP it is not
    // JSON (RFC 8259 §8.1). Either is clear.
    let id = c.id();
    c.push(
        "byte order mark before a request",
        [
            b"\xEF\xBB\xBF".to_vec(),
            call(id, "add_task", json!({"title": ""})),
        ]
        .concat(),
        Some(id),
        Some(Expect::Tool {
            kind: "invalid_argument",
            names: "`title`: must not be empty".into(),
        }),
        Some(Expect::Refused {
            status: 400,
            codes: PARSE,
        }),
    );
    c.refused("invalid UTF-8 in a string", 400, PARSE, |id| {
        let head = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"add_task","arguments":{{"title":"bad "#
        );
        [head.as_bytes(), b"\xFF\xFE", br#""}}}"#].concat()
    });
    c.refused("overlong UTF-8 in a string", 400, PARSE, |id| {
        let head = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"add_task","arguments":{{"title":"slash "#
        );
        [head.as_bytes(), b"\xC0\xAF", br#""}}}"#].concat()
    });
    c.refused("invalid UTF-8 outside strings", 400, PARSE, |id| {
        [
            format!(r#"{{"jsonrpc":"2.0","id":{id},"#).as_bytes(),
            b"\xFF}",
        ]
        .concat()
    });
    c.refused("UTF-16 body", 400, PARSE, |id| {
        let text = String::from_utf8(call(id, "add_task", json!({"title": "utf-16"})))
            .expect("serde_json writes UTF-8");
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    });
    c.refused("raw NUL byte in a string", 400, PARSE, |id| {
        let text = String::from_utf8(call(id, "add_task", json!({"title": "nul HERE"})))
            .expect("serde_json writes UTF-8");
        text.replace("HERE", "\0").into_bytes()
    });
    c.refused("raw control characters in a string", 400, PARSE, |id| {
        let text = String::from_utf8(call(id, "add_task", json!({"title": "ctrl HERE"})))
            .expect("serde_json writes UTF-8");
        text.replace("HERE", "\u{1}\u{1b}[2J").into_bytes()
    });
    c.refused("lone surrogate escape", 400, PARSE, |id| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"add_task","arguments":{{"title":"\ud800"}}}}}}"#
        )
        .into_bytes()
    });
    c.refused("id out of range (1e400)", 400, PARSE_OR_INVALID, |_| {
        br#"{"jsonrpc":"2.0","id":1e400,"method":"tools/call","params":{"name":"add_task","arguments":{"title":"1e400"}}}"#.to_vec()
    });

    // --- JSON-RPC batches (removed in protocol 2025-06-18) ------------------------------------
    c.refused("batch of one ping", 400, INVALID_REQUEST, |id| {
        json!([{"jsonrpc": "2.0", "id": id, "method": "ping"}])
            .to_string()
            .into_bytes()
    });
    c.refused("batch with a write", 400, INVALID_REQUEST, |id| {
        json!([jsonrpc::add_task(id, "batched")])
            .to_string()
            .into_bytes()
    });
    c.refused("batch of 100 writes", 400, INVALID_REQUEST, |id| {
        let writes: Vec<Value> = (0..100)
            .map(|n| jsonrpc::add_task(id * 1000 + n, &format!("batched {n}")))
            .collect();
        Value::Array(writes).to_string().into_bytes()
    });
    c.refused("empty batch", 400, INVALID_REQUEST, |_| b"[]".to_vec());

    // --- JSON that is not a JSON-RPC request ---------------------------------------------------
    c.refused("a JSON string", 400, INVALID_REQUEST, |_| {
        br#""tools/call""#.to_vec()
    });
    c.refused("a JSON number", 400, INVALID_REQUEST, |_| b"42".to_vec());
    c.refused("JSON null", 400, INVALID_REQUEST, |_| b"null".to_vec());
    c.refused("no jsonrpc member", 400, INVALID_REQUEST, |id| {
        let mut message = jsonrpc::add_task(id, "no jsonrpc");
        message
            .as_object_mut()
            .expect("an object")
            .remove("jsonrpc");
        message.to_string().into_bytes()
    });
    c.refused("jsonrpc 1.0", 400, INVALID_REQUEST, |id| {
        let mut message = jsonrpc::add_task(id, "jsonrpc 1.0");
        message["jsonrpc"] = json!("1.0");
        message.to_string().into_bytes()
    });
    c.refused("id is an object", 400, INVALID_REQUEST, |_| {
        let mut message = jsonrpc::add_task(0, "object id");
        message["id"] = json!({"$ne": null});
        message.to_string().into_bytes()
    });
    c.refused("id is null", 400, INVALID_REQUEST, |_| {
        let mut message = jsonrpc::add_task(0, "null id");
        message["id"] = Value::Null;
        message.to_string().into_bytes()
    });
    // rmcp keeps numeric ids as i64; it refused larger ones in plain text.
    c.refused("id is 2^64-1", 400, INVALID_REQUEST, |_| {
        br#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"tools/list"}"#.to_vec()
    });
    c.refused("id is 2^63", 400, INVALID_REQUEST, |_| {
        br#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}"#.to_vec()
    });
    c.refused("method is a number", 400, INVALID_REQUEST, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": 5})
            .to_string()
            .into_bytes()
    });
    c.refused("params is an array", 400, INVALID_REQUEST, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": ["add_task", {"title": "positional"}]})
        .to_string()
        .into_bytes()
    });
    // A response is not a request: over stdio it is dropped (nothing to answer), as
    // JSON-RPC wants; over HTTP it is refused.
    let id = c.id();
    c.push(
        "a response sent to the server",
        json!({"jsonrpc": "2.0", "id": id, "result": {"task": {"title": "forged"}}})
            .to_string()
            .into_bytes(),
        None,
        Some(Expect::Ignored),
        Some(Expect::Refused {
            status: 400,
            codes: INVALID_REQUEST,
        }),
    );
    let expect = Expect::Ignored;
    c.push(
        "tools/call sent as a notification",
        json!({"jsonrpc": "2.0", "method": "tools/call",
               "params": {"name": "add_task", "arguments": {"title": "notified"}}})
        .to_string()
        .into_bytes(),
        None,
        Some(expect.clone()),
        Some(expect),
    );

    // --- Deep nesting (serde_json stops at 128 levels) ----------------------------------------
    c.refused("100,000 nested arrays", 400, PARSE_OR_INVALID, |id| {
        nested(id, "[", "", "]", 100_000)
    });
    c.refused("100,000 nested objects", 400, PARSE_OR_INVALID, |id| {
        nested(id, r#"{"a":"#, "1", "}", 100_000)
    });
    c.refused("100,000 unclosed arrays", 400, PARSE_OR_INVALID, |id| {
        nested(id, "[", "", "", 100_000)
    });
    let id = c.id();
    let expect = Expect::Tool {
        kind: "invalid_argument",
        names: "`title`: invalid type: array".into(),
    };
    c.push(
        "100 nested arrays as a title",
        nested(id, "[", "", "]", 100),
        Some(id),
        Some(expect.clone()),
        Some(expect),
    );

    // --- Huge lines and bodies (HTTP: 4 MiB limit; stdio: rmcp's 16 MiB line limit) ----------
    c.invalid(
        "1 MiB title",
        "add_task",
        json!({"title": chars('x', MIB)}),
        "`title`: is 1048576 characters; the limit is 500",
    );
    c.invalid(
        "1 MiB of 2-byte characters as a conversation title",
        "start_conversation",
        json!({"title": chars('é', MIB / 2)}),
        "`title`: is 524288 characters; the limit is 500",
    );
    c.invalid(
        "1 MiB message",
        "append_message",
        json!({"conversation_id": a.conversation, "role": "user", "content": chars('m', MIB)}),
        "`content`: is 1048576 characters; the limit is 100000",
    );
    let too_large = Expect::Refused {
        status: 413,
        codes: INVALID_REQUEST,
    };
    for (name, size) in [("5 MiB request", 5 * MIB), ("8 MiB request", 8 * MIB)] {
        let id = c.id();
        c.push(
            name,
            call(id, "add_task", json!({"title": chars('x', size)})),
            Some(id),
            Some(Expect::Tool {
                kind: "invalid_argument",
                names: format!("`title`: is {size} characters; the limit is 500"),
            }),
            Some(too_large.clone()),
        );
    }
    let id = c.id();
    c.push(
        "5 MiB request, chunked",
        call(id, "add_task", json!({"title": chars('x', 5 * MIB)})),
        Some(id),
        None,
        Some(too_large.clone()),
    )
    .chunked = true;
    let id = c.id();
    c.push(
        "17 MiB request (over the stdio line limit)",
        call(id, "add_task", json!({"title": chars('x', 17 * MIB)})),
        None,
        Some(Expect::Refused {
            status: 413,
            codes: INVALID_REQUEST,
        }),
        Some(too_large),
    );

    // --- A request, but not a well-formed tools/call -------------------------------------------
    c.rpc("arguments is a string", INVALID_PARAMS, false, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "add_task", "arguments": "title=milk"}})
    });
    c.rpc("arguments is an array", INVALID_PARAMS, false, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "add_task", "arguments": ["milk"]}})
    });
    c.rpc("tool name is a number", INVALID_PARAMS, false, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": 5, "arguments": {"title": "milk"}}})
    });
    c.rpc("no tool name", INVALID_PARAMS, false, |id| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"arguments": {"title": "milk"}}})
    });
    c.rpc(
        "tools/call without params",
        INVALID_PARAMS,
        false,
        |id| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call"}),
    );
    for tool in [
        "drop_tables",
        "",
        "add_task; DROP TABLE tasks; --",
        "../add_task",
    ] {
        c.rpc(
            &format!("unknown tool {tool:?}"),
            INVALID_PARAMS,
            true,
            |id| jsonrpc::tool_call(id, tool, json!({"title": "milk"})),
        );
    }
    c.rpc(
        "unknown method",
        METHOD_NOT_FOUND,
        false,
        |id| json!({"jsonrpc": "2.0", "id": id, "method": "tasks/delete_all", "params": {}}),
    );
    let id = c.id();
    let expect = Expect::Tool {
        kind: "invalid_argument",
        names: "`title`: must not be empty".into(),
    };
    c.push(
        "unknown members in the envelope and params",
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "user": "bob",
               "params": {"name": "add_task", "arguments": {"title": ""}, "user_id": "bob"}})
        .to_string()
        .into_bytes(),
        Some(id),
        Some(expect.clone()),
        Some(expect),
    );

    // --- Tool arguments: wrong types, unknown fields (no argument names a user), NUL bytes,
    // blanks, ids of the wrong shape, page sizes. Each: (case, tool, arguments, what the
    // `invalid_argument: ` text must contain). A table, so not reflowed.
    let nul = "must not contain NUL bytes";
    #[rustfmt::skip]
    let mut arguments: Vec<(String, &str, Value, String)> = [
        ("title is a number", "add_task", json!({"title": 5}), "`title`"),
        ("title is a boolean", "add_task", json!({"title": true}), "`title`"),
        ("title is an operator object", "add_task", json!({"title": {"$gt": ""}}), "`title`"),
        ("title is an array", "add_task", json!({"title": ["milk"]}), "`title`"),
        ("title is null", "add_task", json!({"title": null}), "`title`"),
        ("no title", "add_task", json!({}), "missing field `title`"),
        ("status is a number", "list_tasks", json!({"status": 1}), "`status`"),
        ("status with SQL", "list_tasks", json!({"status": "all'; --"}), "`status`"),
        ("query is a number", "list_tasks", json!({"query": 5}), "`query`"),
        ("completed is a string", "update_task",
         json!({"task_id": a.task, "completed": "yes"}), "`completed`"),
        ("expected_updated_at is not a time", "update_task",
         json!({"task_id": a.task, "title": "x", "expected_updated_at": "'; --"}), "`expected_updated_at`"),
        ("an impossible due date", "add_task",
         json!({"title": "x", "due": "2026-02-30"}), "`due`: `2026-02-30` is not a date"),
        ("a due date-time without an offset", "update_task",
         json!({"task_id": a.task, "due": "2026-12-01T09:00:00"}), "`due`"),
        ("an unknown priority", "add_task", json!({"title": "x", "priority": "critical"}), "`priority`"),
        ("a priority that is a number", "update_task", json!({"task_id": a.task, "priority": 3}), "`priority`"),
        ("a label over 60 characters", "add_task",
         json!({"title": "x", "labels": ["l".repeat(61)]}), "`labels`: is 61 characters; the limit is 60"),
        ("21 labels", "add_task",
         json!({"title": "x", "labels": (0..21).map(|i| format!("l{i}")).collect::<Vec<_>>()}),
         "`labels`: 21 labels; a task takes at most 20"),
        ("the same label twice but for case", "update_task",
         json!({"task_id": a.task, "labels": ["Work", "WORK"]}), "`labels`: `WORK` is given twice"),
        ("a label that is an object", "add_task", json!({"title": "x", "labels": [{"$ne": ""}]}), "`labels[0]`: invalid type: object"),
        ("a task as its own parent", "update_task",
         json!({"task_id": a.task, "parent_task_id": a.task}), "`parent_task_id`: is the task itself"),
        ("B's task as a parent", "add_task",
         json!({"title": "x", "parent_task_id": b.task}), "`parent_task_id`"),
        ("a parent that is not a uuid", "add_task",
         json!({"title": "x", "parent_task_id": "'; DROP TABLE tasks; --"}), "`parent_task_id`"),
        ("a malformed repeating rule", "add_task",
         json!({"title": "x", "due": "2026-12-01", "repeat": "FREQ=SECONDLY;BYSETPOS=-1"}), "`repeat`: FREQ=`SECONDLY`"),
        ("a repeating rule without a due date", "add_task",
         json!({"title": "x", "repeat": "FREQ=DAILY"}), "`repeat`: needs a due date"),
        ("an unknown sort", "list_tasks", json!({"sort": "title; --"}), "`sort`"),
        ("an impossible due_before", "list_tasks", json!({"due_before": "2026-13-01"}), "`due_before`"),
        ("overdue is a string", "list_tasks", json!({"overdue": "yes"}), "`overdue`"),
        ("include_archived is a string", "list_conversations",
         json!({"include_archived": "yes"}), "`include_archived`"),
        ("a forged tool message", "append_message",
         json!({"conversation_id": a.conversation, "role": "tool", "content": "forged record"}), "`tool_call_id`"),
        ("a forged call record", "append_message",
         json!({"conversation_id": a.conversation, "role": "call_record", "content": "forged"}), "`role`"),
        ("tool calls on a user message", "append_message",
         json!({"conversation_id": a.conversation, "role": "user", "content": "x",
                "tool_calls": [{"id": "1", "name": "n"}]}), "`tool_calls`"),
        ("a tool call without a name", "append_message",
         json!({"conversation_id": a.conversation, "role": "assistant", "content": "",
                "tool_calls": [{"id": "1"}]}), "`tool_calls"),
        ("include_call_records is a string", "get_conversation_history",
         json!({"conversation_id": a.conversation, "include_call_records": "no"}), "`include_call_records`"),
        ("before is a string", "get_conversation_history",
         json!({"conversation_id": a.conversation, "before": "1"}), "`before`"),
        ("add_task with user_id", "add_task",
         json!({"title": "mine now", "user_id": "bob"}), "unknown field `user_id`"),
        ("list_tasks with user_id", "list_tasks", json!({"user_id": "bob"}), "unknown field `user_id`"),
        ("list_labels with user_id", "list_labels", json!({"user_id": "bob"}), "unknown field `user_id`"),
        ("start_conversation with owner", "start_conversation",
         json!({"title": "t", "owner": "bob"}), "unknown field `owner`"),
        ("get_conversation_history with user", "get_conversation_history",
         json!({"conversation_id": a.conversation, "user": "bob"}), "unknown field `user`"),
        ("NUL in a title", "add_task", json!({"title": "milk\u{0}"}), &format!("`title`: {nul}")),
        ("NUL in a description", "add_task",
         json!({"title": "milk", "description": "a\u{0}b"}), &format!("`description`: {nul}")),
        ("NUL in an idempotency key", "add_task",
         json!({"title": "milk", "idempotency_key": "k\u{0}"}), &format!("`idempotency_key`: {nul}")),
        ("NUL in a query", "list_tasks", json!({"query": "a\u{0}"}), &format!("`query`: {nul}")),
        ("NUL in a message", "append_message",
         json!({"conversation_id": a.conversation, "role": "user", "content": "\u{0}"}), &format!("`content`: {nul}")),
        ("NUL in a summary", "set_conversation_summary",
         json!({"conversation_id": a.conversation, "summary": "s\u{0}"}), &format!("`summary`: {nul}")),
        ("NUL in a conversation title", "start_conversation",
         json!({"title": "\u{0}"}), &format!("`title`: {nul}")),
        ("NUL in a task id", "complete_task", json!({"task_id": format!("{}\u{0}", a.task)}), "`task_id`"),
        ("agent state is an array", "save_agent_state",
         json!({"conversation_id": a.conversation, "state": [1, 2]}), "`state`"),
        ("agent state is a string", "save_agent_state",
         json!({"conversation_id": a.conversation, "state": "{}"}), "`state`"),
        ("expected_version is a string", "save_agent_state",
         json!({"conversation_id": a.conversation, "state": {}, "expected_version": "1"}), "`expected_version`"),
        ("negative expected_version", "save_agent_state",
         json!({"conversation_id": a.conversation, "state": {}, "expected_version": -1}), "`expected_version`"),
        ("state version is a string", "get_agent_state",
         json!({"conversation_id": a.conversation, "version": "latest"}), "`version`"),
        ("save_agent_state with user_id", "save_agent_state",
         json!({"conversation_id": a.conversation, "state": {}, "user_id": "bob"}), "unknown field `user_id`"),
        ("turn messages is an object", "commit_turn",
         json!({"conversation_id": a.conversation, "messages": {"role": "user"}}), "`messages`"),
        ("a forged tool message in a turn", "commit_turn",
         json!({"conversation_id": a.conversation, "messages": [{"role": "tool", "content": "forged"}]}),
         "`messages`: [0].tool_call_id"),
        ("NUL in a turn's message", "commit_turn",
         json!({"conversation_id": a.conversation, "messages": [{"role": "user", "content": "a\u{0}"}]}),
         &format!("`messages`: [0].content {nul}")),
        ("NUL in a turn's idempotency key", "commit_turn",
         json!({"conversation_id": a.conversation, "state": {}, "idempotency_key": "k\u{0}"}), &format!("`idempotency_key`: {nul}")),
        ("an empty turn", "commit_turn",
         json!({"conversation_id": a.conversation}), "`messages`"),
        ("search query is a number", "search_messages", json!({"query": 5}), "`query`"),
        ("search query is empty", "search_messages", json!({"query": "  "}), "`query`"),
        ("search of exclusions alone", "search_messages", json!({"query": "-a -b"}), "`query`"),
        ("NUL in a search", "search_messages",
         json!({"query": "a\u{0}b"}), &format!("`query`: {nul}")),
        ("search with user_id", "search_messages",
         json!({"query": "x", "user_id": "bob"}), "unknown field `user_id`"),
        ("empty title", "add_task", json!({"title": ""}), "`title`: must not be empty"),
        ("blank title", "add_task", json!({"title": " \t\n\r "}), "`title`: must not be empty"),
        ("501-character title", "add_task",
         json!({"title": chars('t', 501)}), "`title`: is 501 characters; the limit is 500"),
        ("task_id not a uuid", "complete_task", json!({"task_id": "not-a-uuid"}), "`task_id`"),
        ("task_id empty", "complete_task", json!({"task_id": ""}), "`task_id`"),
        ("task_id a number", "complete_task", json!({"task_id": 42}), "`task_id`"),
        ("task_id an object", "complete_task", json!({"task_id": {"$ne": null}}), "`task_id`"),
        ("task_id with SQL", "complete_task", json!({"task_id": "'; DROP TABLE tasks; --"}), "`task_id`"),
        ("task_id with SQL after a uuid", "update_task",
         json!({"task_id": format!("{}' OR '1'='1", a.task), "title": "x"}), "`task_id`"),
        ("task_id a path", "complete_task", json!({"task_id": "../../etc/passwd"}), "`task_id`"),
        ("task_id not a uuid, to read", "get_task", json!({"task_id": "not-a-uuid"}), "`task_id`"),
        ("task_id with SQL, to read", "get_task", json!({"task_id": "' OR 1=1 --"}), "`task_id`"),
        ("task_id a LIKE pattern", "delete_task", json!({"task_id": "%"}), "`task_id`"),
        ("conversation_id not a uuid", "add_task",
         json!({"title": "x", "conversation_id": "42"}), "`conversation_id`"),
        ("conversation_id a LIKE pattern", "list_tasks",
         json!({"conversation_id": "%"}), "`conversation_id`"),
        ("conversation_id an object", "append_message",
         json!({"conversation_id": {"$ne": null}, "role": "user", "content": "hi"}), "`conversation_id`"),
        ("conversation_id an array", "archive_conversation",
         json!({"conversation_id": [a.conversation]}), "`conversation_id`"),
        ("conversation_id with SQL", "get_conversation_history",
         json!({"conversation_id": "' OR 1=1 --"}), "`conversation_id`"),
        ("history limit -5", "get_conversation_history",
         json!({"conversation_id": a.conversation, "limit": -5}), "`limit`"),
        ("list_tasks cursor: a number", "list_tasks", json!({"cursor": 5}), "`cursor`"),
    ]
    .into_iter()
    .map(|(name, tool, args, names)| (name.to_owned(), tool, args, names.to_owned()))
    .collect();
    let limits = [
        json!(-1),
        json!(0),
        json!(201),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(1e23),
        json!("10"),
        json!(u64::MAX),
    ];
    for limit in limits {
        arguments.push((
            format!("list_tasks limit {limit}"),
            "list_tasks",
            json!({ "limit": limit }),
            "`limit`".into(),
        ));
    }
    for limit in [json!(-1), json!(i64::MAX)] {
        arguments.push((
            format!("list_conversations limit {limit}"),
            "list_conversations",
            json!({ "limit": limit }),
            "`limit`".into(),
        ));
    }
    for before in [json!(0), json!(-1), json!(i64::MIN), json!(1.5)] {
        let args = json!({"conversation_id": a.conversation, "before": before});
        arguments.push((
            format!("history before {before}"),
            "get_conversation_history",
            args,
            "`before`".into(),
        ));
    }

    // --- Forged cursors ------------------------------------------------------------------------
    let random = |n: usize| {
        let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
        format!("t_{}", URL_SAFE_NO_PAD.encode(bytes))
    };
    let bad_cursor = "`cursor`: is not a cursor this list returned";
    for (tool, name, cursor) in [
        ("list_tasks", "not base64", "abc".to_owned()),
        ("list_tasks", "empty", String::new()),
        ("list_tasks", "12 random bytes", random(12)),
        ("list_tasks", "17 random bytes", random(17)),
        ("list_tasks", "punctuation", "t_!!!!".to_owned()),
        ("list_tasks", "SQL", "t_'; DROP TABLE tasks; --".to_owned()),
        ("list_tasks", "100 KB", random(75_000)),
        (
            "list_tasks",
            "a conversation cursor",
            a.conversation_cursor.clone(),
        ),
        (
            "list_tasks",
            "user B's conversation cursor",
            b.conversation_cursor.clone(),
        ),
        ("list_conversations", "a task cursor", a.task_cursor.clone()),
        (
            "list_conversations",
            "user B's task cursor",
            b.task_cursor.clone(),
        ),
        ("list_conversations", "not base64", "c_%%%".to_owned()),
    ] {
        arguments.push((
            format!("{tool} cursor: {name}"),
            tool,
            json!({ "cursor": cursor }),
            bad_cursor.into(),
        ));
    }
    for (name, tool, args, names) in arguments {
        c.tool(&name, tool, args, "invalid_argument", names);
    }
    // Every tool, from its sample call on A's rows (tests/support/samples.rs): a smuggled
    // `user_id` is refused by name before anything runs.
    let a_seed = samples::Seed {
        task: a.task.clone(),
        conversation: a.conversation.clone(),
        message: json!(1),
    };
    for (tool, mut args) in samples::all(&a_seed) {
        args["user_id"] = json!("bob");
        c.tool(
            &format!("{tool}'s sample with user_id"),
            tool,
            args,
            "invalid_argument",
            "unknown field `user_id`",
        );
    }
    c.tool(
        "unknown task id",
        "complete_task",
        json!({ "task_id": unknown }),
        "not_found",
        format!("task {unknown} not found"),
    );
    c.tool(
        "unknown conversation id",
        "get_conversation_history",
        json!({ "conversation_id": unknown }),
        "not_found",
        format!("conversation {unknown} not found"),
    );

    // --- User B's ids: exactly like unknown ids ------------------------------------------------
    type Spell = fn(&str) -> String;
    type Args = fn(String) -> Value;
    let same: Spell = |id| id.to_owned();
    let upper: Spell = |id| id.to_uppercase();
    let braced: Spell = |id| format!("{{{id}}}");
    let (task, conversation, log) = (&b.task, &b.conversation, &b.activity_log);
    #[rustfmt::skip]
    let foreign: [(&str, &str, &str, &String, Spell, Args); 26] = [
        ("B's task: read", "get_task", "task", task, same, |id| json!({ "task_id": id })),
        ("B's task, upper case: read", "get_task", "task", task, upper, |id| json!({ "task_id": id })),
        ("B's task: complete", "complete_task", "task", task, same, |id| json!({ "task_id": id })),
        ("B's task: rename", "update_task", "task", task, same,
         |id| json!({"task_id": id, "title": "taken over"})),
        ("B's task: complete via update", "update_task", "task", task, same,
         |id| json!({"task_id": id, "completed": true})),
        ("B's task: delete", "delete_task", "task", task, same, |id| json!({ "task_id": id })),
        ("B's task, upper case", "complete_task", "task", task, upper, |id| json!({ "task_id": id })),
        ("B's task, braced", "delete_task", "task", task, braced, |id| json!({ "task_id": id })),
        ("B's conversation: add a task to it", "add_task", "conversation", conversation, same,
         |id| json!({"title": "planted", "conversation_id": id})),
        ("B's conversation: list its tasks", "list_tasks", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: record list_labels in it", "list_labels", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: append", "append_message", "conversation", conversation, same,
         |id| json!({"conversation_id": id, "role": "user", "content": "planted"})),
        ("B's conversation: read", "get_conversation_history", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: summarize", "set_conversation_summary", "conversation", conversation, same,
         |id| json!({"conversation_id": id, "summary": "rewritten"})),
        ("B's conversation: archive", "archive_conversation", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: unarchive", "unarchive_conversation", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: pop its latest message", "pop_message", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: clear it", "clear_conversation", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: search it", "search_messages", "conversation", conversation, same,
         |id| json!({"query": "secret", "conversation_id": id})),
        ("B's conversation: read its agent state", "get_agent_state", "conversation", conversation, same,
         |id| json!({ "conversation_id": id })),
        ("B's conversation: save an agent state", "save_agent_state", "conversation", conversation, same,
         |id| json!({"conversation_id": id, "state": {"planted": true}})),
        ("B's conversation: commit a turn", "commit_turn", "conversation", conversation, same,
         |id| json!({"conversation_id": id, "messages": [{"role": "user", "content": "planted"}], "state": {}})),
        ("B's conversation, upper case: read", "get_conversation_history", "conversation", conversation, upper,
         |id| json!({ "conversation_id": id })),
        ("B's activity log: read", "get_conversation_history", "conversation", log, same,
         |id| json!({ "conversation_id": id })),
        ("B's activity log: append", "append_message", "conversation", log, same,
         |id| json!({"conversation_id": id, "role": "system", "content": "planted"})),
        ("B's activity log: record a task call in it", "add_task", "conversation", log, same,
         |id| json!({"title": "planted", "conversation_id": id})),
    ];
    for (name, tool, entity, id, spell, args) in foreign {
        c.foreign(name, tool, entity, id, unknown, spell, args);
    }

    c.cases
}

// ---------------------------------------------------------------------------------------------
// What came back, and whether it is what the case expects
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Answer {
    /// HTTP status (none over stdio).
    status: Option<u16>,
    /// The JSON-RPC messages received for the request.
    messages: Vec<Value>,
    /// Output that is not JSON (a stdout line, an HTTP body).
    other: Vec<String>,
    /// The transport failed (the connection closed, nothing was answered in time).
    failed: Option<String>,
    /// Why the ping sent after it got no answer, if it did not.
    dead: Option<String>,
}

impl Answer {
    fn reply(&self, id: i64) -> Option<&Value> {
        self.messages.iter().find(|m| m["id"] == id)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            parts.push(format!("HTTP {status}"));
        }
        for message in &self.messages {
            parts.push(shorten(&message.to_string()));
        }
        for other in &self.other {
            parts.push(format!("not JSON: {}", shorten(other)));
        }
        if let Some(failed) = &self.failed {
            parts.push(format!("failed: {failed}"));
        }
        if parts.is_empty() {
            parts.push("no answer".into());
        }
        parts.join(" | ")
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 400;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The text of a tool result's content blocks.
fn tool_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

enum Verdict {
    /// The clear error (or documented outcome) the case expects.
    Clear,
    /// Acceptable, but not a clear error: said why.
    Tolerated(&'static str),
    Wrong(String),
}

/// The one reply to request `id`: over HTTP a 200 holding only it.
fn only_reply(answer: &Answer, id: Option<i64>, http: bool) -> Result<&Value, String> {
    let id = id.ok_or("the case has no request id")?;
    let reply = answer
        .reply(id)
        .ok_or_else(|| format!("no answer with id {id}"))?;
    if answer.messages.len() != 1 || !answer.other.is_empty() {
        return Err("more than its answer came back".into());
    }
    if http && answer.status != Some(200) {
        return Err("the HTTP status is not 200".into());
    }
    Ok(reply)
}

/// A JSON-RPC error not tied to a request: id null, a code among `codes`, a message.
fn is_refusal(message: &Value, codes: &[i64]) -> bool {
    message["jsonrpc"] == "2.0"
        && message["id"].is_null()
        && message["error"]["code"]
            .as_i64()
            .is_some_and(|code| codes.contains(&code))
        && message["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty())
}

fn judge(expect: &Expect, id: Option<i64>, answer: &Answer, http: bool) -> Verdict {
    let wrong = |what: String| Verdict::Wrong(format!("{what}; got {}", answer.describe()));
    match expect {
        Expect::Tool { kind, names } => match only_reply(answer, id, http) {
            Err(why) => wrong(format!("expected a tool error `{kind}: …{names}…` ({why})")),
            Ok(reply) => {
                let text = tool_text(&reply["result"]);
                if reply["result"]["isError"] == true
                    && text.starts_with(&format!("{kind}: "))
                    && text.contains(names.as_str())
                {
                    Verdict::Clear
                } else {
                    wrong(format!("expected a tool error `{kind}: …{names}…`"))
                }
            }
        },
        Expect::Rpc { code, .. } => match only_reply(answer, id, http) {
            Err(why) => wrong(format!("expected JSON-RPC error {code} ({why})")),
            Ok(reply) => {
                let error = &reply["error"];
                if error["code"] == *code
                    && error["message"]
                        .as_str()
                        .is_some_and(|m| !m.trim().is_empty())
                {
                    Verdict::Clear
                } else {
                    wrong(format!("expected JSON-RPC error {code}"))
                }
            }
        },
        Expect::Refused { status, codes } if http => {
            if answer.failed.is_some() && *status == 413 {
                // hyper may close the connection before the client sent the whole body.
                return Verdict::Tolerated("connection closed while the body was sent");
            }
            match answer.messages.as_slice() {
                [message]
                    if answer.status == Some(*status)
                        && answer.other.is_empty()
                        && is_refusal(message, codes) =>
                {
                    Verdict::Clear
                }
                _ => wrong(format!(
                    "expected HTTP {status} with a JSON-RPC error body (code {codes:?}, id null)"
                )),
            }
        }
        Expect::Refused { codes, .. } => match answer.messages.as_slice() {
            [] if answer.other.is_empty() && answer.failed.is_none() => {
                Verdict::Tolerated("skipped without an answer")
            }
            [message] if answer.other.is_empty() && is_refusal(message, codes) => Verdict::Clear,
            _ => wrong(format!(
                "expected a JSON-RPC error line (code {codes:?}, id null) or no answer"
            )),
        },
        Expect::Ignored => {
            let quiet = answer.messages.is_empty() && answer.other.is_empty();
            if quiet && answer.failed.is_none() && (!http || answer.status == Some(202)) {
                Verdict::Clear
            } else {
                wrong("expected no answer (HTTP 202) to a notification".into())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transports: raw bytes in, JSON-RPC messages out
// ---------------------------------------------------------------------------------------------

trait Transport {
    fn name(&self) -> &'static str;
    fn is_http(&self) -> bool;
    fn expectation<'c>(&self, case: &'c Case) -> Option<&'c Expect>;
    /// Sends `body` as one message, then a ping; returns what came back for the message
    /// (waiting for the answer to `id`, if given) and whether the ping was answered.
    async fn exchange(&mut self, body: &[u8], id: Option<i64>, chunked: bool) -> Answer;
    fn stderr(&self) -> String;
}

/// `todo-mcp stdio` driven by hand: lines in, lines out.
struct StdioRaw {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Vec<u8>>,
    stderr: StderrLog,
    next_ping: i64,
}

impl StdioRaw {
    async fn start(db_url: &str, token: &str) -> StdioRaw {
        let mut child = spawn_stdio_raw(db_url, Some(token), &[]);
        let stdin = child.stdin.take().expect("the child's stdin is piped");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let stderr = StderrLog::start(
            child.stderr.take().expect("the child's stderr is piped"),
            child.id(),
        );
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            line.pop();
                        }
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut stdio = StdioRaw {
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            next_ping: 1_000_000,
        };
        let mut answer = Answer::default();
        stdio
            .write(
                &jsonrpc::initialize(0).to_string().into_bytes(),
                &mut answer,
            )
            .await;
        stdio.read_until(&[0], &mut answer).await;
        let reply = answer.reply(0).cloned().unwrap_or_else(|| {
            panic!(
                "initialize over stdio got no answer: {}\n--- stderr ---\n{}",
                answer.describe(),
                stdio.stderr.tail()
            )
        });
        assert_eq!(
            reply["result"]["protocolVersion"], PROTOCOL,
            "initialize over stdio: {reply}"
        );
        stdio
            .write(
                &jsonrpc::initialized().to_string().into_bytes(),
                &mut answer,
            )
            .await;
        stdio
    }

    async fn write(&mut self, body: &[u8], answer: &mut Answer) {
        let Some(stdin) = self.stdin.as_mut() else {
            answer.failed = Some("stdin is closed".into());
            return;
        };
        let line = [body, b"\n"].concat();
        let written = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, written).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => answer.failed = Some(format!("writing to stdin failed: {e}")),
            Err(_) => answer.failed = Some(format!("stdin took no input for {ANSWER_TIMEOUT:?}")),
        }
    }

    /// Reads lines until every id in `wanted` was answered (or the time is up).
    async fn read_until(&mut self, wanted: &[i64], answer: &mut Answer) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        let mut found: Vec<Value> = Vec::new();
        while !wanted.iter().all(|id| found.iter().any(|m| m["id"] == *id)) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => {
                    answer.failed = Some(format!("no answer within {ANSWER_TIMEOUT:?}"));
                    break;
                }
                Ok(None) => {
                    answer.failed = Some("stdout closed: the server exited".into());
                    break;
                }
                Ok(Some(line)) => match serde_json::from_slice::<Value>(&line) {
                    Ok(message) => {
                        if wanted.iter().any(|id| message["id"] == *id) {
                            found.push(message.clone());
                        }
                        answer.messages.push(message);
                    }
                    Err(_) => answer
                        .other
                        .push(String::from_utf8_lossy(&line).into_owned()),
                },
            }
        }
        found
    }

    /// Closes stdin: the server must then exit by itself, successfully.
    async fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for todo-mcp stdio failed: {e}"),
            Err(_) => panic!(
                "todo-mcp stdio did not exit within 20 s of its stdin closing\n--- stderr ---\n{}",
                self.stderr.tail()
            ),
        };
        let log = self.stderr.finish(Duration::from_secs(5)).await;
        assert!(
            status.success(),
            "todo-mcp stdio exited with {status} after the catalogue\n--- stderr ---\n{log}"
        );
        log
    }
}

impl Transport for StdioRaw {
    fn name(&self) -> &'static str {
        "stdio"
    }

    fn is_http(&self) -> bool {
        false
    }

    fn expectation<'c>(&self, case: &'c Case) -> Option<&'c Expect> {
        case.stdio.as_ref()
    }

    async fn exchange(&mut self, body: &[u8], id: Option<i64>, _chunked: bool) -> Answer {
        let mut answer = Answer::default();
        self.write(body, &mut answer).await;
        self.next_ping += 1;
        let ping = self.next_ping;
        let ping_line = json!({"jsonrpc": "2.0", "id": ping, "method": "ping"}).to_string();
        self.write(ping_line.as_bytes(), &mut answer).await;
        let wanted: Vec<i64> = std::iter::once(ping).chain(id).collect();
        let found = self.read_until(&wanted, &mut answer).await;
        answer.messages.retain(|m| m["id"] != ping);
        match found.iter().find(|m| m["id"] == ping) {
            Some(pong) if pong["result"] == json!({}) => {}
            Some(pong) => answer.dead = Some(format!("the ping got {pong}")),
            None => {
                answer.dead = Some(format!(
                    "the ping got no answer ({})",
                    answer.failed.as_deref().unwrap_or("?")
                ))
            }
        }
        answer
    }

    fn stderr(&self) -> String {
        self.stderr.tail()
    }
}

/// `todo-mcp http`, driven with raw bodies and user A's bearer token.
struct HttpRaw {
    server: HttpServer,
    token: String,
    client: reqwest::Client,
    next_ping: i64,
}

impl HttpRaw {
    async fn post(&self, body: reqwest::Body) -> Answer {
        let mut answer = Answer::default();
        let request = self
            .client
            .post(self.server.mcp_url())
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                answer.failed = Some(format!("{e:?}"));
                return answer;
            }
        };
        answer.status = Some(response.status().as_u16());
        let sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        match response.bytes().await {
            Ok(body) => parse_body(&mut answer, sse, &String::from_utf8_lossy(&body)),
            Err(e) => answer.failed = Some(format!("reading the body: {e:?}")),
        }
        answer
    }

    /// A body over the server's limit (or chunked), by hand: a client that writes it all
    /// before reading (reqwest) may see the connection close under it instead of the
    /// server's answer, so this one reads while it writes.
    async fn post_raw(&self, body: &[u8], chunked: bool) -> Answer {
        let mut answer = Answer::default();
        let stream = match tokio::net::TcpStream::connect(self.server.addr()).await {
            Ok(stream) => stream,
            Err(e) => {
                answer.failed = Some(format!("connect: {e}"));
                return answer;
            }
        };
        let (mut reader, mut writer) = stream.into_split();
        let (framing, payload) = if chunked {
            let mut payload = Vec::with_capacity(body.len() + body.len() / 1000 + 16);
            for chunk in body.chunks(64 * 1024) {
                payload.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                payload.extend_from_slice(chunk);
                payload.extend_from_slice(b"\r\n");
            }
            payload.extend_from_slice(b"0\r\n\r\n");
            ("Transfer-Encoding: chunked".to_owned(), payload)
        } else {
            (format!("Content-Length: {}", body.len()), body.to_vec())
        };
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
             Mcp-Protocol-Version: {PROTOCOL}\r\n{framing}\r\nConnection: close\r\n\r\n",
            self.server.addr(),
            self.token,
        );
        let request = [head.into_bytes(), payload].concat();
        // Write errors are expected once the server has refused the body.
        let writing = tokio::spawn(async move { writer.write_all(&request).await });
        let mut response = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        let complete = loop {
            if let Some(complete) = http_response(&response) {
                break Some(complete);
            }
            match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break http_response(&response),
                Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            }
        };
        writing.abort();
        match complete {
            Some((status, sse, body)) => {
                answer.status = Some(status);
                parse_body(&mut answer, sse, &body);
            }
            None => {
                answer.failed = Some(format!(
                    "no complete HTTP response: {:?}",
                    shorten(&String::from_utf8_lossy(&response))
                ))
            }
        }
        answer
    }
}

/// A complete HTTP/1.1 response with a Content-Length (as refusals have): status, whether
/// it is SSE, body.
fn http_response(raw: &[u8]) -> Option<(u16, bool, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let length: usize = header("content-length:")?.parse().ok()?;
    let body = raw.get(end + 4..end + 4 + length)?;
    let sse = header("content-type:").is_some_and(|v| v.starts_with("text/event-stream"));
    Some((status, sse, String::from_utf8_lossy(body).into_owned()))
}

/// The JSON-RPC messages of a response body: SSE `data:` lines, or one JSON value.
fn parse_body(answer: &mut Answer, sse: bool, body: &str) {
    let mut parse = |data: &str| match serde_json::from_str::<Value>(data) {
        Ok(message) => answer.messages.push(message),
        Err(_) => answer.other.push(data.to_owned()),
    };
    if sse {
        body.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .filter(|data| !data.is_empty())
            .for_each(&mut parse);
    } else if !body.trim().is_empty() {
        parse(body);
    }
}

impl Transport for HttpRaw {
    fn name(&self) -> &'static str {
        "HTTP"
    }

    fn is_http(&self) -> bool {
        true
    }

    fn expectation<'c>(&self, case: &'c Case) -> Option<&'c Expect> {
        case.http.as_ref()
    }

    async fn exchange(&mut self, body: &[u8], _id: Option<i64>, chunked: bool) -> Answer {
        let mut answer = if chunked || body.len() > MAX_BODY_BYTES {
            self.post_raw(body, chunked).await
        } else {
            self.post(reqwest::Body::from(body.to_vec())).await
        };
        self.next_ping += 1;
        let ping = self.next_ping;
        let pong = self
            .post(
                json!({"jsonrpc": "2.0", "id": ping, "method": "ping"})
                    .to_string()
                    .into(),
            )
            .await;
        if pong.status != Some(200) || pong.reply(ping).map(|m| &m["result"]) != Some(&json!({})) {
            answer.dead = Some(format!("the ping got {}", pong.describe()));
        }
        answer
    }

    fn stderr(&self) -> String {
        let log = self.server.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------------

/// Everything a tool can write, except the calls' records (`tool` messages) and their
/// count (`failure_budgets`).
const TABLES: [(&str, &str); 10] = [
    ("users", "SELECT * FROM users ORDER BY id"),
    ("api_tokens", "SELECT * FROM api_tokens ORDER BY id"),
    ("tasks", "SELECT * FROM tasks ORDER BY id"),
    ("conversations", "SELECT * FROM conversations ORDER BY id"),
    (
        "messages",
        "SELECT * FROM messages WHERE role <> 'tool' ORDER BY id",
    ),
    ("mcp_sessions", "SELECT * FROM mcp_sessions ORDER BY 1"),
    (
        "agent_states",
        "SELECT * FROM agent_states ORDER BY conversation_id, version",
    ),
    (
        "turns",
        "SELECT * FROM turns ORDER BY user_id, idempotency_key",
    ),
    (
        "task_labels",
        "SELECT * FROM task_labels ORDER BY task_id, label_key",
    ),
    (
        "task_requests",
        "SELECT * FROM task_requests ORDER BY task_id",
    ),
];

/// Every row of [`TABLES`], as JSON.
async fn snapshot(db: &PgTestDb) -> Value {
    let mut tables = serde_json::Map::new();
    for (name, select) in TABLES {
        tables.insert(name.to_owned(), Value::Array(db.query_json(select).await));
    }
    Value::Object(tables)
}

/// Rows of a SELECT as JSON, on an open connection (per-case checks must be quick).
async fn rows(sql: &Client, select: &str) -> Vec<Value> {
    let wrapped = format!("SELECT row_to_json(t)::text FROM ({select}) AS t");
    let rows = sql.query(&wrapped, &[]).await.unwrap_or_else(|e| {
        let reason = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
        panic!("SQL failed: {reason}\nSQL: {select}")
    });
    rows.iter()
        .map(|row| {
            let text: String = row.get(0);
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("row_to_json gave {text:?}: {e}"))
        })
        .collect()
}

/// A digest of each of [`TABLES`] and the id of the latest `tool` message.
async fn digest(sql: &Client) -> (Value, i64) {
    let columns: Vec<String> = TABLES
        .iter()
        .map(|(name, select)| {
            format!(
                "(SELECT md5(coalesce(string_agg(x::text, '|'), '')) FROM ({select}) x) AS {name}"
            )
        })
        .collect();
    let select = format!(
        "SELECT {}, (SELECT coalesce(max(id), 0) FROM messages WHERE role = 'tool') AS last_tool",
        columns.join(", ")
    );
    let mut row = rows(sql, &select).await.remove(0);
    let last = row["last_tool"].as_i64().expect("a message id");
    row.as_object_mut().expect("a row").remove("last_tool");
    (row, last)
}

/// The `tool` messages written after `last`.
async fn records_after(sql: &Client, last: i64) -> Vec<Value> {
    rows(
        sql,
        &format!(
            "SELECT id, user_id, tool_calls->>'tool' AS tool, tool_calls->'ok' AS ok, \
                    tool_calls->'error'->>'kind' AS kind \
             FROM messages WHERE role = 'tool' AND id > {last} ORDER BY id"
        ),
    )
    .await
}

/// Every row user B owns, the records of B's calls included, as text.
async fn foreign_rows(sql: &Client) -> BTreeSet<String> {
    rows(
        sql,
        "SELECT 'tasks' AS source, x::text AS content FROM tasks x WHERE user_id = 'bob' \
         UNION ALL SELECT 'conversations', x::text FROM conversations x WHERE user_id = 'bob' \
         UNION ALL SELECT 'messages', x::text FROM messages x WHERE user_id = 'bob' \
         UNION ALL SELECT 'api_tokens', x::text FROM api_tokens x WHERE user_id = 'bob'",
    )
    .await
    .into_iter()
    .map(|row| row.to_string())
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Running it
// ---------------------------------------------------------------------------------------------

/// Two users on a fresh database: A sends the catalogue, B owns rows A must not reach.
struct World {
    db: PgTestDb,
    token_a: String,
    a: Owner,
    b: Owner,
    /// A well-formed id nobody has.
    unknown: String,
}

impl World {
    async fn new() -> World {
        let db = PgTestDb::new().await;
        let token_a = create_token(db.url(), "alice");
        let token_b = create_token(db.url(), "bob");
        let a = seed(&db, &token_a, "alice").await;
        let b = seed(&db, &token_b, "bob").await;
        World {
            db,
            token_a,
            a,
            b,
            unknown: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Two tasks, a conversation with a message and a summary, made through the server.
async fn seed(db: &PgTestDb, token: &str, user: &str) -> Owner {
    let client = connect_in_process(db.url(), Some(token), &[]).await;
    let secret = format!("{user}-secret");
    let task = client
        .call_ok(
            "add_task",
            json!({"title": format!("{secret} task one"), "description": format!("{secret} notes")}),
        )
        .await["task"]["id"]
        .as_str()
        .expect("add_task returns the task's id")
        .to_owned();
    client
        .call_ok("add_task", json!({"title": format!("{secret} task two")}))
        .await;
    let conversation = client
        .call_ok(
            "start_conversation",
            json!({"title": format!("{secret} conversation")}),
        )
        .await["conversation"]["id"]
        .as_str()
        .expect("start_conversation returns the conversation's id")
        .to_owned();
    client
        .call_ok(
            "append_message",
            json!({"conversation_id": conversation, "role": "user", "content": format!("{secret} message")}),
        )
        .await;
    client
        .call_ok(
            "set_conversation_summary",
            json!({"conversation_id": conversation, "summary": format!("{secret} summary")}),
        )
        .await;
    let task_cursor = client.call_ok("list_tasks", json!({"limit": 1})).await["next_cursor"]
        .as_str()
        .expect("two tasks in pages of one: a next cursor")
        .to_owned();
    let conversation_cursor = client
        .call_ok("list_conversations", json!({"limit": 1}))
        .await["next_cursor"]
        .as_str()
        .expect("several conversations in pages of one: a next cursor")
        .to_owned();
    let all = client
        .call_ok("list_conversations", json!({"limit": 200}))
        .await;
    let activity_log = all["conversations"]
        .as_array()
        .expect("a list of conversations")
        .iter()
        .find(|c| c["title"] == "Tool activity")
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no \"Tool activity\" conversation in {all}"))
        .to_owned();
    client.close().await;
    Owner {
        task,
        conversation,
        activity_log,
        task_cursor,
        conversation_cursor,
    }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    clear: usize,
    /// Cases answered acceptably but not with an error: "name: why".
    tolerated: Vec<String>,
    failures: Vec<String>,
    /// Answers holding user B's data, and B's rows changed.
    cross_user: usize,
    /// Failure records the cases should have left, and those they left.
    records_expected: usize,
    records_found: usize,
    writes_lost: usize,
}

impl Tally {
    fn assert_clean(&self, transport: &str, stderr: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} hostile inputs over {transport} were not handled as they must be:\n\n{}\n\
             --- server stderr (tail) ---\n{stderr}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n\n"),
        );
    }
}

/// Sends every case the transport has an expectation for and checks, for each: the answer,
/// that the server still answers a ping, and what it wrote.
async fn run_catalogue<T: Transport>(t: &mut T, world: &World, sql: &Client, tally: &mut Tally) {
    let cases = catalogue(&world.a, &world.b, &world.unknown);
    for case in &cases {
        let Some(expect) = t.expectation(case) else {
            continue;
        };
        tally.cases += 1;
        let (tables_before, last_record) = digest(sql).await;
        let answer = t
            .exchange(&case.body, expect.answered(case.id), case.chunked)
            .await;
        let mut problems = Vec::new();
        let mut clear = false;
        match judge(expect, case.id, &answer, t.is_http()) {
            Verdict::Clear => clear = true,
            Verdict::Tolerated(why) => tally.tolerated.push(format!("{}: {why}", case.name)),
            Verdict::Wrong(why) => problems.push(why),
        }
        if let Some(dead) = &answer.dead {
            problems.push(format!("the server stopped serving: {dead}"));
        }
        let mut expected_records = expect.records();
        let mut seen = format!("{:?} {:?}", answer.messages, answer.other);
        if let Some(twin) = &case.twin {
            // The same call with an unknown id: the answers must not tell the two apart.
            let twin_answer = t.exchange(&twin.body, Some(twin.id), false).await;
            expected_records += 1;
            let masked = |answer: &Answer, id: i64| {
                let result = answer
                    .reply(id)
                    .map_or_else(|| answer.describe(), |m| m["result"].to_string());
                twin.ids
                    .iter()
                    .fold(result, |text, id| text.replace(id.as_str(), "<id>"))
            };
            let (mine, unknown) = (
                masked(&answer, case.id.unwrap_or_default()),
                masked(&twin_answer, twin.id),
            );
            if mine != unknown {
                problems.push(format!(
                    "answers unlike an unknown id: {} vs {}",
                    shorten(&mine),
                    shorten(&unknown)
                ));
            }
            seen.push_str(&format!("{:?}", twin_answer.messages));
        }
        if seen.contains(FOREIGN_MARKER) {
            tally.cross_user += 1;
            problems.push(format!(
                "the answer holds user B's data: {}",
                shorten(&seen)
            ));
        }

        let (tables_after, _) = digest(sql).await;
        let changed: Vec<&String> = tables_before
            .as_object()
            .expect("a row")
            .iter()
            .filter(|(table, md5)| tables_after[table.as_str()] != **md5)
            .map(|(table, _)| table)
            .collect();
        if !changed.is_empty() {
            problems.push(format!("it changed {changed:?}"));
        }
        let records = records_after(sql, last_record).await;
        tally.records_expected += expected_records;
        tally.records_found += records.len();
        if records.len() != expected_records {
            problems.push(format!(
                "{} failure records written, expected {expected_records}: {records:?}",
                records.len()
            ));
        }
        for record in &records {
            let kind_ok = match expect {
                Expect::Tool { kind, .. } => record["kind"] == *kind,
                _ => true,
            };
            if record["ok"] != false || record["user_id"] != "alice" || !kind_ok {
                problems.push(format!(
                    "its record should be alice's, ok: false, with the error's kind: {record}"
                ));
            }
        }

        if problems.is_empty() {
            tally.clear += usize::from(clear);
        } else {
            tally.failures.push(format!(
                "[{}] {} ({} bytes: {})\n  {}",
                t.name(),
                case.name,
                case.body.len(),
                shorten(&String::from_utf8_lossy(&case.body)),
                problems.join("\n  ")
            ));
        }
    }
}

/// Titles that would break a query built by pasting strings, or a LIKE without escapes.
const SQL_TITLES: [&str; 14] = [
    "'; DROP TABLE tasks; --",
    "Robert'); DROP TABLE users; --",
    "' OR '1'='1",
    "100% sure",
    "%",
    "snake_case",
    "_",
    "back\\slash",
    "\\",
    "\\%\\_ pre-escaped",
    "$$; SELECT pg_sleep(10); $$",
    "\"double\" 'single' `back`",
    "/* comment */ -- comment",
    "semi;colon",
];

/// Control and unusual characters inside a title: stored as they are.
const CONTROL_TITLES: [&str; 11] = [
    "bell \u{7} here",
    "escape \u{1b}[31mred\u{1b}[0m",
    "delete \u{7f} here",
    "unit \u{1f} separator",
    "no-break\u{a0}space",
    "zero\u{200b}width",
    "right-to-left \u{202e}override",
    "crab 🦀",
    "line\nbreak",
    "tab\tinside",
    "carriage\rreturn",
];

/// Searches: each must match its characters literally.
const SQL_QUERIES: [&str; 9] = [
    "%",
    "_",
    "\\",
    "'",
    "' OR '1'='1",
    "%_%",
    "'; DROP TABLE tasks; --",
    "\\%",
    "$$",
];

/// Successful calls: the structured result of the call with `id`, or why there is none.
fn success(answer: &Answer, id: i64) -> Result<Value, String> {
    match answer.reply(id) {
        Some(reply) if reply["result"]["isError"] == false => reply["result"]
            .get("structuredContent")
            .cloned()
            .ok_or_else(|| format!("no structuredContent: {reply}")),
        _ => Err(answer.describe()),
    }
}

/// Titles full of SQL meta-characters and control characters are stored verbatim (checked
/// in the table), searches match them literally, and user B's cursors page through A's own
/// rows only.
async fn round_trip<T: Transport>(t: &mut T, world: &World, sql: &Client, tally: &mut Tally) {
    let mut id = 50_000;
    let name = t.name();
    let fail = |tally: &mut Tally, what: String| {
        tally.failures.push(format!("[{name}] round trip: {what}"))
    };
    // Titles.
    for title in SQL_TITLES.iter().chain(&CONTROL_TITLES) {
        tally.cases += 1;
        id += 1;
        let answer = t
            .exchange(
                &call(id, "add_task", json!({ "title": title })),
                Some(id),
                false,
            )
            .await;
        let task = match success(&answer, id) {
            Ok(result) => result["task"].clone(),
            Err(why) => {
                fail(tally, format!("add_task {title:?} failed: {why}"));
                continue;
            }
        };
        let stored = rows(
            sql,
            &format!(
                "SELECT title, user_id FROM tasks WHERE id = '{}'",
                task["id"]
                    .as_str()
                    .unwrap_or("00000000-0000-0000-0000-000000000000")
            ),
        )
        .await;
        match stored.as_slice() {
            [] => {
                tally.writes_lost += 1;
                fail(
                    tally,
                    format!("add_task {title:?} was acknowledged but not stored"),
                );
            }
            [row]
                if row["title"] == *title
                    && task["title"] == *title
                    && row["user_id"] == "alice" =>
            {
                tally.clear += 1;
            }
            _ => fail(
                tally,
                format!("add_task {title:?}: answered {task}, stored {stored:?}"),
            ),
        }
    }
    // An idempotency key made of meta-characters: the retry finds the first task.
    tally.cases += 1;
    let key = "'; DROP TABLE tasks; -- %_\\";
    let mut made = Vec::new();
    for _ in 0..2 {
        id += 1;
        let args = json!({"title": "keyed", "idempotency_key": key});
        let answer = t
            .exchange(&call(id, "add_task", args), Some(id), false)
            .await;
        made.push(success(&answer, id).map(|r| r["task"]["id"].clone()));
    }
    let keyed = rows(sql, "SELECT id::text FROM tasks WHERE title = 'keyed'").await;
    match (&made[0], &made[1]) {
        (Ok(first), Ok(again)) if first == again && keyed.len() == 1 => tally.clear += 1,
        _ => fail(
            tally,
            format!("idempotency key {key:?}: answers {made:?}, rows {keyed:?}"),
        ),
    }
    // Searches.
    let mine = rows(
        sql,
        "SELECT id::text AS id, title, coalesce(description, '') AS description \
         FROM tasks WHERE user_id = 'alice'",
    )
    .await;
    for query in SQL_QUERIES {
        tally.cases += 1;
        id += 1;
        let needle = query.to_lowercase();
        let expected: BTreeSet<String> = mine
            .iter()
            .filter(|task| {
                ["title", "description"].iter().any(|field| {
                    task[*field]
                        .as_str()
                        .is_some_and(|text| text.to_lowercase().contains(&needle))
                })
            })
            .filter_map(|task| task["id"].as_str().map(str::to_owned))
            .collect();
        let args = json!({"query": query, "limit": 200});
        let answer = t
            .exchange(&call(id, "list_tasks", args), Some(id), false)
            .await;
        let found: Result<BTreeSet<String>, String> = success(&answer, id).map(|result| {
            result["tasks"]
                .as_array()
                .map(|tasks| {
                    tasks
                        .iter()
                        .filter_map(|task| task["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        });
        match found {
            Ok(found) if found == expected => tally.clear += 1,
            other => fail(
                tally,
                format!("query {query:?} should find exactly {expected:?}, got {other:?}"),
            ),
        }
    }
    // B's cursors, and a well-formed one nobody issued, are refused: a cursor is bound to
    // the user and the list it was issued for (a MAC), so none can bound a list of A's.
    let forged = format!("t_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()));
    let refused = "invalid_argument: invalid `cursor`: is not a cursor this list returned";
    for (tool, cursor) in [
        ("list_tasks", world.b.task_cursor.clone()),
        ("list_conversations", world.b.conversation_cursor.clone()),
        ("list_tasks", forged),
    ] {
        tally.cases += 1;
        id += 1;
        let args = json!({"cursor": cursor, "limit": 200});
        let answer = t.exchange(&call(id, tool, args), Some(id), false).await;
        match success(&answer, id) {
            Err(why) if why.contains(refused) => tally.clear += 1,
            Err(why) => fail(
                tally,
                format!("{tool} with cursor {cursor:?} failed without naming the cursor: {why}"),
            ),
            Ok(result) => {
                tally.cross_user += usize::from(result != Value::Null);
                fail(
                    tally,
                    format!("{tool} accepted cursor {cursor:?}, not issued to alice: {result}"),
                );
            }
        }
    }
}

/// The whole check over one transport: catalogue (database unchanged), then round trip.
async fn hostile_input<T: Transport>(t: &mut T, world: &World) -> Tally {
    let sql = world.db.client().await;
    let mut tally = Tally::default();
    let foreign_before = foreign_rows(&sql).await;
    let before = snapshot(&world.db).await;
    let (_, first_record) = digest(&sql).await;

    run_catalogue(t, world, &sql, &mut tally).await;

    let after = snapshot(&world.db).await;
    for (table, _) in TABLES {
        if before[table] != after[table] {
            tally.failures.push(format!(
                "[{}] the catalogue changed table {table}:\nbefore {}\nafter  {}",
                t.name(),
                shorten(&before[table].to_string()),
                shorten(&after[table].to_string())
            ));
        }
    }
    let counts = rows(
        &sql,
        &format!(
            "SELECT count(*) AS total, count(*) FILTER (WHERE tool_calls->>'ok' = 'false') AS failed, \
                    count(*) FILTER (WHERE user_id = 'alice') AS alices \
             FROM messages WHERE role = 'tool' AND id > {first_record}"
        ),
    )
    .await
    .remove(0);
    let expected = tally.records_expected as i64;
    if counts != json!({"total": expected, "failed": expected, "alices": expected}) {
        tally.failures.push(format!(
            "[{}] the catalogue should leave exactly {expected} failure records, all alice's: {counts}",
            t.name()
        ));
    }

    round_trip(t, world, &sql, &mut tally).await;

    let foreign_after = foreign_rows(&sql).await;
    let touched = foreign_before.symmetric_difference(&foreign_after).count();
    if touched > 0 {
        tally.cross_user += touched;
        tally.failures.push(format!(
            "[{}] user B's rows changed: {:?}",
            t.name(),
            foreign_before
                .symmetric_difference(&foreign_after)
                .map(|row| shorten(row))
                .collect::<Vec<_>>()
        ));
    }
    tally
}

/// What the evidence says; also shows the cases that passed without a clear error.
fn outcome(tally: &Tally, transport: &str) -> String {
    for tolerated in &tally.tolerated {
        eprintln!("hostile input over {transport}, not a clear error but tolerated: {tolerated}");
    }
    let skipped = tally
        .tolerated
        .iter()
        .filter(|t| t.ends_with("skipped without an answer"))
        .count();
    let closed = tally.tolerated.len() - skipped;
    let mut text = format!(
        "{} of {} inputs over {transport} got a clear error naming the problem (or, for SQL \
         meta-characters, were stored verbatim and searched literally)",
        tally.clear, tally.cases
    );
    if skipped > 0 {
        text.push_str(&format!(
            "; {skipped} lines that are not JSON-RPC were skipped unanswered"
        ));
    }
    if closed > 0 {
        text.push_str(&format!(
            "; {closed} oversized bodies were cut off by closing the connection"
        ));
    }
    text.push_str(&format!(
        "; a ping answered after every case; nothing written but {} failure records",
        tally.records_found
    ));
    text
}

/// After the catalogue the server still answers `tools/list` with every tool.
async fn assert_still_lists_every_tool(transport: &mut impl Transport) {
    let answer = transport
        .exchange(
            br#"{"jsonrpc":"2.0","id":99999,"method":"tools/list"}"#,
            Some(99_999),
            false,
        )
        .await;
    let tools = answer.reply(99_999).map(|m| m["result"]["tools"].clone());
    assert_eq!(
        tools.as_ref().and_then(Value::as_array).map(Vec::len),
        Some(support::TOOL_NAMES.len()),
        "tools/list after the catalogue: {}",
        answer.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_over_stdio() {
    let world = World::new().await;
    let mut stdio = StdioRaw::start(world.db.url(), &world.token_a).await;
    let tally = hostile_input(&mut stdio, &world).await;
    let stderr = stdio.stderr();
    tally.assert_clean("stdio", &stderr);
    // The server still lists its tools, then exits cleanly when its client goes away.
    assert_still_lists_every_tool(&mut stdio).await;
    stdio.finish().await;

    reliability::record(Evidence {
        class: "hostile input over stdio",
        test: TEST_FILE,
        cases: tally.cases,
        clear_errors: tally.clear,
        writes_lost: tally.writes_lost,
        cross_user: tally.cross_user,
        outcome: &outcome(&tally, "stdio"),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_over_http() {
    let world = World::new().await;
    let server = start_http(world.db.url(), &[], &[]).await;
    let mut http = HttpRaw {
        server,
        token: world.token_a.clone(),
        client: jsonrpc::client(),
        next_ping: 1_000_000,
    };
    let tally = hostile_input(&mut http, &world).await;
    tally.assert_clean("HTTP", &Transport::stderr(&http));
    assert_still_lists_every_tool(&mut http).await;
    let (status, log) = http.server.terminate(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "todo-mcp http exited with {status}\n{log}"
    );

    reliability::record(Evidence {
        class: "hostile input over HTTP",
        test: TEST_FILE,
        cases: tally.cases,
        clear_errors: tally.clear,
        writes_lost: tally.writes_lost,
        cross_user: tally.cross_user,
        outcome: &outcome(&tally, "HTTP"),
    });
}
