//! A TCP proxy in front of PostgreSQL that cuts one connection at a chosen moment: the
//! real network fault behind "the connection broke before / during COMMIT".
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and relays every connection to the real
//! server byte for byte. [`FaultProxy::arm`] names SQL to watch for in what a client runs
//! (`b"COMMIT"`, `b"INSERT INTO \"tasks\""`): the proxy reads the client's messages, and
//! the first client→server chunk that runs a statement whose text contains it (a simple
//! query, or the Bind of a prepared statement, named by the Parse that prepared it,
//! maybe long before) cuts that connection, once, either
//! * [`Cut::AfterForwarding`]: the chunk reaches PostgreSQL, which runs it (a COMMIT
//!   commits), but its reply is thrown away and the client's socket is closed: the
//!   acknowledgement is lost; or
//! * [`Cut::BeforeForwarding`]: the chunk never reaches PostgreSQL, which sees its client go
//!   away mid-transaction (and rolls it back); the client's socket is closed too.
//!
//! On the PostgreSQL side the proxy half-closes (FIN, never RST) and reads the server's
//! replies to the end, so what was forwarded is surely read and run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Where, relative to the matching chunk, a connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward the chunk, then drop the server's reply and close the client's socket.
    AfterForwarding,
    /// Close both sides without forwarding the chunk.
    BeforeForwarding,
}

#[derive(Debug)]
struct Armed {
    needle: Vec<u8>,
    cut: Cut,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Option<Armed>>,
    cuts: AtomicUsize,
    connections: AtomicUsize,
}

/// A running proxy; stops (and drops every relayed connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and relays to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds a loopback port");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            // Owned here, so aborting this task aborts every relay too.
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                while relays.try_join_next().is_some() {}
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                relays.spawn(relay(client, upstream, accepting.clone()));
            }
        });
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy for the PostgreSQL server of `db_url` (its first host and port).
    pub async fn for_database(db_url: &str) -> FaultProxy {
        let config: tokio_postgres::Config = db_url
            .parse()
            .unwrap_or_else(|e| panic!("cannot read {db_url}: {e}"));
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("{db_url} names no TCP host ({other:?})"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {host}:{port}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{host}:{port} resolves to nothing"));
        FaultProxy::start(upstream).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `db_url` with its host and port replaced by the proxy's.
    pub fn url(&self, db_url: &str) -> String {
        let (scheme, rest) = db_url
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {db_url}"));
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let userinfo = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{userinfo}{}{tail}", self.addr)
    }

    /// Cuts the next connection that sends a chunk containing `needle`, once.
    pub fn arm(&self, needle: &[u8], cut: Cut) {
        *self.shared.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Armed {
            needle: needle.to_vec(),
            cut,
        });
    }

    /// Disarms; true if it was still armed (nothing matched).
    pub fn disarm(&self) -> bool {
        self.shared
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays one connection until either side closes, or until the armed cut.
async fn relay(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // dropping `client` closes it: the client sees a refused connection
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, client_w) = client.into_split();
    let (server_r, mut server_w) = server.into_split();
    let cut_now = Arc::new(Notify::new());
    let was_cut = Arc::new(AtomicBool::new(false));
    let down = tokio::spawn(server_to_client(
        server_r,
        client_w,
        cut_now.clone(),
        was_cut.clone(),
    ));

    let mut buf = vec![0u8; 64 * 1024];
    let mut messages = Frontend::default();
    loop {
        let n = match client_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let run = messages.statements_run(chunk);
        let triggered = {
            let mut armed = shared.armed.lock().unwrap_or_else(|p| p.into_inner());
            if armed.as_ref().is_some_and(|a| {
                run.iter()
                    .any(|sql| sql.windows(a.needle.len()).any(|w| w == a.needle))
            }) {
                armed.take()
            } else {
                None
            }
        };
        match triggered {
            None => {
                if server_w.write_all(chunk).await.is_err() {
                    break;
                }
            }
            Some(armed) => {
                // Stop relaying replies *before* PostgreSQL can have answered this chunk.
                was_cut.store(true, Ordering::SeqCst);
                cut_now.notify_one();
                if armed.cut == Cut::AfterForwarding {
                    let _ = server_w.write_all(chunk).await;
                }
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    // FIN towards PostgreSQL: it reads everything forwarded, then the end of the stream.
    let _ = server_w.shutdown().await;
    drop(client_r);
    let _ = down.await;
}

async fn server_to_client(
    mut server_r: OwnedReadHalf,
    client_w: OwnedWriteHalf,
    cut_now: Arc<Notify>,
    was_cut: Arc<AtomicBool>,
) {
    let mut client_w = Some(client_w);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            biased;
            _ = cut_now.notified(), if client_w.is_some() => {
                // Dropping the write half closes the client's side of the connection.
                client_w = None;
            }
            read = server_r.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if was_cut.load(Ordering::SeqCst) {
                    // The lost acknowledgement: read to the end, relay nothing.
                    client_w = None;
                    continue;
                }
                if let Some(writer) = client_w.as_mut()
                    && writer.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
        }
    }
}

/// The client's side of the wire protocol, read as it passes: which statements each chunk
/// runs, by their SQL.
#[derive(Default)]
struct Frontend {
    /// Bytes of a message not complete yet.
    pending: Vec<u8>,
    /// Past the startup packet (and any SSL/GSS request before it).
    started: bool,
    /// The SQL of each statement prepared on this connection, by name.
    prepared: HashMap<Vec<u8>, Vec<u8>>,
}

impl Frontend {
    /// The SQL of every statement that the messages completed by `chunk` run: simple
    /// queries, and prepared statements bound.
    fn statements_run(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut run = Vec::new();
        loop {
            // Startup-phase messages have no type byte: a length, then a code.
            let header = if self.started { 5 } else { 4 };
            if self.pending.len() < header {
                break;
            }
            let length_at = header - 4;
            let mut length = [0u8; 4];
            length.copy_from_slice(&self.pending[length_at..header]);
            let total = length_at + u32::from_be_bytes(length) as usize;
            if total < header || self.pending.len() < total {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            if !self.started {
                // SSLRequest and GSSENCRequest come before the startup packet proper.
                let code = message
                    .get(4..8)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                self.started = !matches!(code, Some(80_877_103 | 80_877_104));
                continue;
            }
            let mut fields = message[5..].split(|byte| *byte == 0);
            match message[0] {
                b'Q' => run.extend(fields.next().map(<[u8]>::to_vec)),
                b'P' => {
                    if let (Some(name), Some(sql)) = (fields.next(), fields.next()) {
                        // Only prepared: it runs when bound.
                        self.prepared.insert(name.to_vec(), sql.to_vec());
                    }
                }
                b'B' => {
                    if let (Some(_portal), Some(name)) = (fields.next(), fields.next()) {
                        run.extend(self.prepared.get(name).cloned());
                    }
                }
                _ => {}
            }
        }
        run
    }
}
