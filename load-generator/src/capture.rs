//! What the server really sends PostgreSQL, read off the wire: a TCP proxy between the
//! server and the database that decodes the frontend protocol (simple queries, and
//! Parse/Bind/Execute with their parameters, binary or text) and keeps every statement,
//! in order, by the user it ran for. The pgbench baseline replays them ([`crate::replay`]),
//! so it cannot drift from the server's SQL as a hand-written copy did.
//!
//! A connection's statements belong to the user its transaction names
//! (`SET LOCAL todo.user_id = '…'`, sent right after BEGIN); a statement outside a transaction
//! (the bearer token's lookup) to the user whose token hash it binds. The proxy needs the
//! plain protocol: the server's URL for it says `sslmode=disable`.

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A statement as the server sent it: its SQL and its parameters as SQL literals.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// A simple-protocol query (BEGIN and its SET LOCALs, ROLLBACK, an unpipelined COMMIT).
    Simple(String),
    /// An extended-protocol statement, executed once.
    Prepared { sql: String, params: Vec<Literal> },
}

/// A bound parameter, rendered for SQL text.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    /// The value's text form and its type's name (`uuid`, `text`, `timestamptz`…).
    Value {
        text: String,
        type_name: &'static str,
    },
}

/// Everything one capture saw, per connection in order.
#[derive(Default)]
struct Log {
    /// Numbers statements in the order the proxy read them, across connections.
    next: u64,
    /// While recording: what the server asked of PostgreSQL, message by message.
    wire: Wire,
    connections: Vec<Vec<(u64, Statement)>>,
}

impl Log {
    fn push(&mut self, connection: usize, statement: Statement) {
        let sequence = self.next;
        self.next += 1;
        self.connections[connection].push((sequence, statement));
    }
}

/// Counts of what the server sent while recording. A round trip is a turn of the
/// conversation: the server sends (one message or a pipelined run of them) after
/// PostgreSQL has answered; each Parse has PostgreSQL parse and plan a statement.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wire {
    pub round_trips: u64,
    pub parses: u64,
    pub executes: u64,
}

/// A running capture proxy.
pub struct CaptureProxy {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Log>>,
    /// Statements are kept only while this is set (the prepared statements are tracked
    /// throughout: a connection opened before may run them later).
    recording: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CaptureProxy {
    /// Listens on loopback, forwarding each connection to `upstream` (host:port).
    pub async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the capture proxy")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let recording = Arc::new(AtomicBool::new(false));
        let (accept_log, accept_errors, accept_recording) =
            (log.clone(), errors.clone(), recording.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let index = {
                    let mut log = lock(&accept_log);
                    log.connections.push(Vec::new());
                    log.connections.len() - 1
                };
                let (log, errors, upstream, recording) = (
                    accept_log.clone(),
                    accept_errors.clone(),
                    upstream.clone(),
                    accept_recording.clone(),
                );
                tokio::spawn(async move {
                    let decoding = errors.clone();
                    if let Err(error) =
                        relay(client, &upstream, index, log, recording, decoding).await
                    {
                        eprintln!("load: capture proxy, connection {index}: {error:#}");
                        lock(&errors).push(format!("connection {index}: {error:#}"));
                    }
                });
            }
        });
        Ok(CaptureProxy {
            addr,
            log,
            recording,
            errors,
            accept,
        })
    }

    /// Keeps the statements from now on.
    pub fn start_recording(&self) {
        self.recording.store(true, Ordering::SeqCst);
    }

    /// `url` (a PostgreSQL URL) through this proxy, without TLS.
    pub fn url_through(&self, url: &str) -> anyhow::Result<String> {
        let mut parsed = reqwest::Url::parse(url).context("parsing the database URL")?;
        parsed
            .set_host(Some("127.0.0.1"))
            .context("setting the proxy host")?;
        parsed
            .set_port(Some(self.addr.port()))
            .map_err(|()| anyhow::anyhow!("cannot set the proxy port"))?;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(key, _)| key != "sslmode")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("sslmode", "disable");
        Ok(parsed.to_string())
    }

    /// Stops accepting and returns every user's statements, in order. Fails if a
    /// connection could not be decoded.
    pub fn finish(self) -> anyhow::Result<Captured> {
        self.accept.abort();
        self.recording.store(false, Ordering::SeqCst);
        let errors = lock(&self.errors).clone();
        if !errors.is_empty() {
            bail!("the capture proxy failed: {}", errors.join("; "));
        }
        let log = std::mem::take(&mut *lock(&self.log));
        Ok(Captured {
            connections: log.connections,
            wire: log.wire,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a capture saw.
pub struct Captured {
    connections: Vec<Vec<(u64, Statement)>>,
    /// What the server sent while recording.
    pub wire: Wire,
}

/// One unit of work as the server ran it: a transaction (BEGIN to COMMIT or ROLLBACK), or
/// a statement outside one.
#[derive(Debug, Clone)]
pub struct Unit {
    pub statements: Vec<Statement>,
}

impl Captured {
    /// Each user's units in the order their connections ran them, by the user each names
    /// (`users`: the user ids, and the SHA-256 of each one's token for lookups outside a
    /// transaction). Units naming no known user are counted in the second value.
    pub fn by_user(&self, users: &[(String, Vec<u8>)]) -> (HashMap<String, Vec<Unit>>, usize) {
        let mut by_user: HashMap<String, Vec<(u64, Unit)>> = HashMap::new();
        let mut unknown = 0;
        for statements in &self.connections {
            let mut open: Option<(Option<String>, u64, Vec<Statement>)> = None;
            for (sequence, statement) in statements {
                let sequence = *sequence;
                let user_in_begin = begin_user(statement);
                match (&mut open, statement) {
                    (None, Statement::Simple(sql)) if is_begin(sql) => {
                        open = Some((user_in_begin, sequence, vec![statement.clone()]));
                    }
                    // The server's COMMIT is prepared, pipelined behind the call's record.
                    (
                        Some((_, _, body)),
                        Statement::Simple(sql) | Statement::Prepared { sql, .. },
                    ) if is_end(sql) => {
                        body.push(statement.clone());
                        let Some((user, began, statements)) = open.take() else {
                            continue;
                        };
                        match user.filter(|u| users.iter().any(|(id, _)| id == u)) {
                            Some(user) => by_user
                                .entry(user)
                                .or_default()
                                .push((began, Unit { statements })),
                            None => unknown += 1,
                        }
                    }
                    // The server sends its SET LOCALs as queries of their own after BEGIN.
                    (Some((user, _, body)), _) => {
                        if user.is_none() {
                            *user = user_in_begin;
                        }
                        body.push(statement.clone())
                    }
                    (None, Statement::Prepared { params, .. }) => {
                        let owner = users.iter().find(|(_, hash)| {
                            params.iter().any(|p| {
                                matches!(p, Literal::Value { text, type_name: "bytea" }
                                    if *text == format!("\\x{}", hex(hash)))
                            })
                        });
                        match owner {
                            Some((user, _)) => by_user.entry(user.clone()).or_default().push((
                                sequence,
                                Unit {
                                    statements: vec![statement.clone()],
                                },
                            )),
                            None => unknown += 1,
                        }
                    }
                    (None, Statement::Simple(_)) => unknown += 1,
                }
            }
        }
        // A user's units ran on several pooled connections: in the order they began.
        let by_user = by_user
            .into_iter()
            .map(|(user, mut units)| {
                units.sort_by_key(|(began, _)| *began);
                (user, units.into_iter().map(|(_, unit)| unit).collect())
            })
            .collect();
        (by_user, unknown)
    }
}

fn is_begin(sql: &str) -> bool {
    sql.trim_start().to_ascii_uppercase().starts_with("BEGIN")
}

fn is_end(sql: &str) -> bool {
    let upper = sql.trim().to_ascii_uppercase();
    upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK")
}

/// The user a transaction names: `SET LOCAL todo.user_id = 'x'` (or `set_config`), in a
/// query of its own or in a BEGIN batch.
fn begin_user(statement: &Statement) -> Option<String> {
    let Statement::Simple(sql) = statement else {
        return None;
    };
    let at = sql.find("todo.user_id")?;
    let rest = &sql[at..];
    let start = rest.find('\'')? + 1;
    let mut user = String::new();
    let mut chars = rest[start..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                user.push('\'');
                continue;
            }
            return Some(user);
        }
        user.push(c);
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The wire
// ---------------------------------------------------------------------------------------------

/// A prepared statement's SQL and parameter types (filled from ParameterDescription when
/// Parse left them unspecified).
#[derive(Default, Clone)]
struct Prepared {
    sql: String,
    types: Vec<u32>,
}

/// A Bind waiting for its statement's types, or ready.
struct PendingBind {
    statement: String,
    formats: Vec<i16>,
    values: Vec<Option<Vec<u8>>>,
}

/// One connection's decoding state, shared by its two directions.
#[derive(Default)]
struct Session {
    statements: HashMap<String, Prepared>,
    /// Statement names whose Describe awaits the server's ParameterDescription.
    describing: std::collections::VecDeque<String>,
}

async fn relay(
    client: TcpStream,
    upstream: &str,
    index: usize,
    log: Arc<Mutex<Log>>,
    recording: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to {upstream}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let session = Arc::new(Mutex::new(Session::default()));
    let backend_session = session.clone();
    // Whether PostgreSQL has sent anything since the server last did: the server's next
    // bytes then begin a round trip.
    let answered = Arc::new(AtomicBool::new(true));
    let backend_answered = answered.clone();
    let backward = tokio::spawn(async move {
        let mut decoder = Decoder::new(true);
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            backend_answered.store(true, Ordering::SeqCst);
            // Decoded before it is forwarded: the client may Bind as soon as it has it.
            for (kind, body) in decoder.feed(&buffer[..read])? {
                if kind == b't' {
                    let types = parameter_types(&body)?;
                    let mut session = lock(&backend_session);
                    if let Some(name) = session.describing.pop_front()
                        && let Some(statement) = session.statements.get_mut(&name)
                        && statement.types.iter().all(|t| *t == 0)
                    {
                        statement.types = types;
                    }
                }
            }
            client_write.write_all(&buffer[..read]).await?;
        }
    });
    let mut decoder = Decoder::new(false);
    let mut buffer = vec![0; 64 * 1024];
    let mut pending: Vec<PendingBind> = Vec::new();
    let result: anyhow::Result<()> = async {
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                return Ok(());
            }
            if answered.swap(false, Ordering::SeqCst) && recording.load(Ordering::SeqCst) {
                lock(&log).wire.round_trips += 1;
            }
            server_write.write_all(&buffer[..read]).await?;
            for (kind, body) in decoder.feed(&buffer[..read])? {
                let mut reader = Reader(&body);
                match kind {
                    b'Q' => {
                        let sql = reader.cstr()?;
                        if recording.load(Ordering::SeqCst) {
                            lock(&log).push(index, Statement::Simple(sql));
                        }
                    }
                    b'P' => {
                        if recording.load(Ordering::SeqCst) {
                            lock(&log).wire.parses += 1;
                        }
                        let name = reader.cstr()?;
                        let sql = reader.cstr()?;
                        let count = reader.i16()?;
                        let types = (0..count)
                            .map(|_| reader.i32().map(|t| t as u32))
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        lock(&session)
                            .statements
                            .insert(name, Prepared { sql, types });
                    }
                    b'D' => {
                        let target = reader.u8()?;
                        let name = reader.cstr()?;
                        if target == b'S' {
                            lock(&session).describing.push_back(name);
                        }
                    }
                    b'B' => {
                        let _portal = reader.cstr()?;
                        let statement = reader.cstr()?;
                        let format_count = reader.i16()?;
                        let formats = (0..format_count)
                            .map(|_| reader.i16())
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        let value_count = reader.i16()?;
                        let mut values = Vec::with_capacity(value_count as usize);
                        for _ in 0..value_count {
                            let length = reader.i32()?;
                            values.push(if length < 0 {
                                None
                            } else {
                                Some(reader.bytes(length as usize)?.to_vec())
                            });
                        }
                        pending.push(PendingBind {
                            statement,
                            formats,
                            values,
                        });
                    }
                    b'E' => {
                        // The Bind before it names what runs; types may come later (a
                        // ParameterDescription the proxy has not read yet), so decode at
                        // Sync.
                    }
                    b'S' | b'H' if !recording.load(Ordering::SeqCst) => pending.clear(),
                    b'S' | b'H' => {
                        let session = lock(&session).statements.clone();
                        let mut log = lock(&log);
                        log.wire.executes += pending.len() as u64;
                        for bind in pending.drain(..) {
                            // What cannot be decoded fails the capture, not the connection.
                            let rendered = session
                                .get(&bind.statement)
                                .with_context(|| {
                                    format!("Bind names unknown statement {:?}", bind.statement)
                                })
                                .and_then(|prepared| {
                                    Ok((prepared, render_params(prepared, &bind)?))
                                });
                            let (prepared, params) = match rendered {
                                Ok(rendered) => rendered,
                                Err(error) => {
                                    lock(&errors).push(format!("connection {index}: {error:#}"));
                                    continue;
                                }
                            };
                            log.push(
                                index,
                                Statement::Prepared {
                                    sql: prepared.sql.clone(),
                                    params,
                                },
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    .await;
    backward.abort();
    result
}

/// Splits a byte stream into protocol messages. The frontend's first message (startup)
/// has no type byte.
struct Decoder {
    buffer: Vec<u8>,
    started: bool,
}

impl Decoder {
    fn new(backend: bool) -> Self {
        Decoder {
            buffer: Vec::new(),
            started: backend,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<(u8, Vec<u8>)>> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        loop {
            if !self.started {
                if self.buffer.len() < 8 {
                    break;
                }
                let length = u32::from_be_bytes(self.buffer[..4].try_into()?) as usize;
                if self.buffer.len() < length {
                    break;
                }
                let code = u32::from_be_bytes(self.buffer[4..8].try_into()?);
                if code == 80_877_103 || code == 80_877_104 {
                    bail!(
                        "the server asked for TLS or GSS encryption: capture needs sslmode=disable"
                    );
                }
                self.buffer.drain(..length);
                self.started = true;
                continue;
            }
            if self.buffer.len() < 5 {
                break;
            }
            let length = u32::from_be_bytes(self.buffer[1..5].try_into()?) as usize;
            if self.buffer.len() < 1 + length {
                break;
            }
            let kind = self.buffer[0];
            let body = self.buffer[5..1 + length].to_vec();
            self.buffer.drain(..1 + length);
            messages.push((kind, body));
        }
        Ok(messages)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        if self.0.len() < n {
            bail!("truncated message");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.bytes(2)?.try_into()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.bytes(4)?.try_into()?))
    }
    fn cstr(&mut self) -> anyhow::Result<String> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .context("unterminated string")?;
        let text = String::from_utf8(self.0[..end].to_vec())?;
        self.0 = &self.0[end + 1..];
        Ok(text)
    }
}

fn parameter_types(body: &[u8]) -> anyhow::Result<Vec<u32>> {
    let mut reader = Reader(body);
    let count = reader.i16()?;
    (0..count).map(|_| reader.i32().map(|t| t as u32)).collect()
}

fn render_params(prepared: &Prepared, bind: &PendingBind) -> anyhow::Result<Vec<Literal>> {
    bind.values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let Some(value) = value else {
                return Ok(Literal::Null);
            };
            let format = match bind.formats.len() {
                0 => 0,
                1 => bind.formats[0],
                _ => bind.formats[i],
            };
            let oid = prepared.types.get(i).copied().unwrap_or(0);
            if let Some((element, array_type)) = array_element(oid) {
                let text = if format == 0 {
                    String::from_utf8(value.clone())?
                } else {
                    binary_array_text(element, value)?
                };
                return Ok(Literal::Value {
                    text,
                    type_name: array_type,
                });
            }
            let type_name = type_name(oid).with_context(|| {
                format!(
                    "parameter ${} of `{}` has type OID {oid}, which the capture cannot render",
                    i + 1,
                    prepared.sql
                )
            })?;
            let text = if format == 0 {
                String::from_utf8(value.clone())?
            } else {
                binary_text(oid, value)?
            };
            Ok(Literal::Value { text, type_name })
        })
        .collect()
}

fn type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1043 => "varchar",
        1082 => "date",
        1114 => "timestamp",
        1184 => "timestamptz",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}

/// An array type's element type and name.
fn array_element(oid: u32) -> Option<(u32, &'static str)> {
    Some(match oid {
        1000 => (16, "bool[]"),
        1001 => (17, "bytea[]"),
        1005 => (21, "int2[]"),
        1007 => (23, "int4[]"),
        1009 => (25, "text[]"),
        1015 => (1043, "varchar[]"),
        1016 => (20, "int8[]"),
        2951 => (2950, "uuid[]"),
        _ => return None,
    })
}

/// A one-dimensional binary array's text form: `{"a","b",NULL}`.
fn binary_array_text(element: u32, value: &[u8]) -> anyhow::Result<String> {
    let mut reader = Reader(value);
    let dimensions = reader.i32()?;
    let _has_nulls = reader.i32()?;
    let _element_oid = reader.i32()?;
    if dimensions == 0 {
        return Ok("{}".into());
    }
    if dimensions != 1 {
        bail!("a {dimensions}-dimensional array parameter");
    }
    let length = reader.i32()?;
    let _lower_bound = reader.i32()?;
    let mut items = Vec::with_capacity(length.max(0) as usize);
    for _ in 0..length {
        let size = reader.i32()?;
        if size < 0 {
            items.push("NULL".to_owned());
            continue;
        }
        let text = binary_text(element, reader.bytes(size as usize)?)?;
        items.push(format!(
            "\"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    Ok(format!("{{{}}}", items.join(",")))
}

/// A binary parameter's text form.
fn binary_text(oid: u32, value: &[u8]) -> anyhow::Result<String> {
    let postgres_epoch = || {
        NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .context("the PostgreSQL epoch")
    };
    Ok(match oid {
        16 => (value.first() == Some(&1)).to_string(),
        17 => format!("\\x{}", hex(value)),
        20 => i64::from_be_bytes(value.try_into()?).to_string(),
        21 => i16::from_be_bytes(value.try_into()?).to_string(),
        23 => i32::from_be_bytes(value.try_into()?).to_string(),
        700 => f32::from_be_bytes(value.try_into()?).to_string(),
        701 => f64::from_be_bytes(value.try_into()?).to_string(),
        25 | 1043 | 114 => String::from_utf8(value.to_vec())?,
        3802 => String::from_utf8(value.get(1..).unwrap_or_default().to_vec())?,
        2950 => uuid::Uuid::from_slice(value)?.hyphenated().to_string(),
        1082 => {
            let days = i32::from_be_bytes(value.try_into()?);
            (postgres_epoch()? + chrono::Duration::days(i64::from(days)))
                .date_naive()
                .to_string()
        }
        1114 | 1184 => {
            let micros = i64::from_be_bytes(value.try_into()?);
            let at: DateTime<Utc> = postgres_epoch()? + chrono::Duration::microseconds(micros);
            at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
        }
        _ => bail!("no binary decoding for type OID {oid}"),
    })
}
