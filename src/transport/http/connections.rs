//! The accept loop: every connection bounded in number and in time.
//!
//! `axum::serve` keeps a connection as long as its client likes: one that never finishes
//! its request headers, or sits idle between requests, holds a file descriptor forever,
//! and a few hundred of them exhaust the process's. Here each connection needs a permit
//! ([`ConnectionLimits::max_connections`]; past it, new connections get a 503 and are
//! closed at once, established ones are untouched), and a watchdog closes it when:
//! - a request has begun arriving (its first byte read) but its headers have not been
//!   served within [`ConnectionLimits::header_read_timeout`] (slow clients), or
//! - no request has been under way for [`ConnectionLimits::keep_alive_timeout`] (idle).
//!
//! A request counts as under way from its headers until its response's body has been
//! sent or dropped, so a long SSE stream is never cut for being quiet. A request's own
//! running time is bounded by the router's timeout, not here.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many connections a listener holds, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// From a request's first byte to its complete headers.
    pub header_read_timeout: Duration,
    /// With no request under way.
    pub keep_alive_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 16_384,
        }
    }
}

impl ConnectionLimits {
    /// These limits with at most as many connections as `open_files` descriptors leave
    /// room for once `reserved` (database connections, listeners, logs) are set aside.
    pub fn within_open_files(mut self, open_files: u64, reserved: u64) -> Self {
        let room = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
        if room < self.max_connections {
            tracing::warn!(
                configured = self.max_connections,
                open_files,
                "--max-connections is more than the open-file limit allows: serving at most \
                 {room} connections (raise the hard limit: LimitNOFILE= under systemd, \
                 --ulimit nofile= in Docker, `ulimit -Hn` in a shell)"
            );
            self.max_connections = room.max(1);
        }
        self
    }
}

/// Raises this process's open-file soft limit to its hard limit (each connection is a
/// descriptor) and returns the limit now in force, if the platform reports one.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return None; // unlimited
    };
    // macOS reports an unlimited hard limit but refuses a soft one above OPEN_MAX.
    let target = hard.unwrap_or(soft.max(10_240));
    if target > soft {
        let raised = rustix::process::Rlimit {
            current: Some(target),
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = soft, to = target, "raised the open-file limit");
                return Some(target);
            }
            Err(error) => {
                tracing::warn!(%error, soft, target, "cannot raise the open-file limit");
            }
        }
    }
    Some(soft)
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets each connection finish
/// its requests (the caller bounds how long it waits for that).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut refusals = Refusals::default();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(&error).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.count(limits.max_connections);
            refuse(tcp);
            continue;
        };
        // Answers are small writes (SSE frames); with Nagle's algorithm on, each can wait
        // ~40 ms for the client's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            tcp,
            activity: activity.clone(),
            started: false,
        });
        let service = CountedService {
            app: app.clone(),
            activity: activity.clone(),
        };
        let stop = stop.clone();
        connections.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%remote, %error, "connection ended with an error");
                        }
                        break;
                    }
                    reason = activity.expired(&limits) => {
                        tracing::debug!(%remote, reason, "closing the connection");
                        break;
                    }
                    () = stop.cancelled(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Connections refused at the cap, logged at most once per [`Refusals::EVERY`].
#[derive(Default)]
struct Refusals {
    since_logged: u64,
    logged: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn count(&mut self, max_connections: usize) {
        crate::metrics::global().connection_refused();
        self.since_logged += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= Self::EVERY) {
            tracing::warn!(
                max_connections,
                refused = self.since_logged,
                "at the connection limit: refusing new connections with 503 until some close"
            );
            self.since_logged = 0;
            self.logged = Some(Instant::now());
        }
    }
}

/// Past the cap: a 503 if the socket takes it at once, then close. Never waits.
fn refuse(tcp: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
        Content-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\n\
        too many connections, retry\n";
    let _ = tcp.try_write(BUSY);
}

/// An accept that failed for want of descriptors (or memory) would fail again at once:
/// pause, so that the loop does not spin while connections close.
async fn pause_after_accept_error(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What the watchdog of one connection knows: whether a request is under way, since
/// when none is, and whether the next one has begun to arrive.
struct Activity {
    start: Instant,
    /// Requests whose response has not finished.
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the last request finished (0: none yet).
    idle_since: AtomicU64,
    /// Milliseconds after `start` when the next request's first byte came; `NONE` if none.
    request_began: AtomicU64,
    /// An HTTP/2 connection: requests are framed streams, and PINGs or window updates
    /// arrive between them, so a byte does not mean a request has begun.
    multiplexed: AtomicBool,
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            request_began: AtomicU64::new(NONE),
            multiplexed: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: if no request is under way, one has begun.
    fn read(&self, first: bool, bytes: &[u8]) {
        if first && bytes.starts_with(b"PRI * HTTP/2.0") {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.request_began.load(Ordering::Relaxed) == NONE
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            self.request_began.store(self.now(), Ordering::Release);
            self.changed.notify_waiters();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// When the watchdog must close the connection if nothing changes, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let began = self.request_began.load(Ordering::Acquire);
        let (from, limit, why) = if began == NONE {
            (
                self.idle_since.load(Ordering::Acquire),
                limits.keep_alive_timeout,
                "idle past the keep-alive timeout",
            )
        } else {
            (
                began,
                limits.header_read_timeout,
                "request headers not received within the header-read timeout",
            )
        };
        Some((self.start + Duration::from_millis(from) + limit, why))
    }

    /// Resolves when the connection has been idle, or slow with a request's headers, too long.
    async fn expired(&self, limits: &ConnectionLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read: a change after this line wakes us.
            changed.as_mut().enable();
            match self.deadline(limits) {
                None => changed.await,
                Some((deadline, why)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            if self.deadline(limits).is_some_and(|(now, _)| now <= Instant::now()) {
                                return why;
                            }
                        }
                        () = &mut changed => {}
                    }
                }
            }
        }
    }
}

/// Held by a request until its response's body is finished or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            activity.request_began.store(NONE, Ordering::Release);
            activity.changed.notify_waiters();
        }
    }
}

/// The TCP stream, telling [`Activity`] when bytes arrive.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
    /// Whether any byte has arrived yet (the first tell HTTP/2 from HTTP/1).
    started: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let bytes = &buf.filled()[before..];
            if !bytes.is_empty() {
                let first = !self.started;
                self.started = true;
                self.activity.read(first, bytes);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The router, with each request counted as under way until its response body ends.
#[derive(Clone)]
struct CountedService {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for CountedService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let response = tower_service::Service::call(&mut self.app.clone(), request.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(CountedBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted as under way while it is sent.
struct CountedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
