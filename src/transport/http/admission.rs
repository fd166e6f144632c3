//! Admission: past capacity, refuse early and cheaply instead of queueing for seconds.
//!
//! At most `max_in_flight` MCP requests (POSTs to `/mcp` and `/message`) are handled at
//! once. One more waits for a turn, up to `max_queue_wait`, while no more than
//! `max_in_flight` others wait; otherwise, and when the wait runs out, it is refused with
//! 503 and `Retry-After: 1` before it touches the database (not even its bearer token is
//! looked up). What is admitted then finds a pooled connection within a few calls' time,
//! so it runs at normal latency however many clients are knocking. GETs (SSE streams,
//! which hold no database connection while they wait) and everything else pass freely.
//!
//! A request holds its turn until its response body has been sent: a Streamable HTTP
//! answer is a stream that ends after the call's result.

use crate::metrics::{self, OverloadRefusal};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::reply;

/// How many requests run at once, and how long one may wait for its turn.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub max_in_flight: usize,
    pub max_queue_wait: Duration,
}

impl AdmissionLimits {
    /// Requests under way per pooled database connection, by default: enough to keep
    /// every connection busy (a request spends part of its time outside the database),
    /// few enough that the wait for a connection stays a few calls long.
    pub const IN_FLIGHT_PER_CONNECTION: usize = 4;
    pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(1);

    /// The defaults for a pool of `pool_size` connections.
    pub fn for_pool(pool_size: u32) -> Self {
        AdmissionLimits {
            max_in_flight: Self::IN_FLIGHT_PER_CONNECTION * (pool_size.max(1) as usize),
            max_queue_wait: Self::DEFAULT_QUEUE_WAIT,
        }
    }
}

/// The turns, shared by every request of one server.
#[derive(Clone)]
pub struct Admission {
    turns: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    limits: AdmissionLimits,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        let limits = AdmissionLimits {
            max_in_flight: limits.max_in_flight.max(1),
            ..limits
        };
        Admission {
            turns: Arc::new(Semaphore::new(limits.max_in_flight)),
            waiting: Arc::new(AtomicUsize::new(0)),
            limits,
        }
    }

    /// A turn: at once if one is free; else after waiting, if not too many wait already
    /// and one frees up within `max_queue_wait`.
    async fn turn(&self) -> Result<Turn, OverloadRefusal> {
        if let Ok(permit) = self.turns.clone().try_acquire_owned() {
            return Ok(Turn::new(permit));
        }
        // Counted up before the check, so that racing arrivals cannot all slip in.
        let waiting = Waiting::new(&self.waiting);
        if waiting.ahead >= self.limits.max_in_flight {
            return Err(OverloadRefusal::Busy);
        }
        match tokio::time::timeout(
            self.limits.max_queue_wait,
            self.turns.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Turn::new(permit)),
            // The semaphore is never closed; time ran out.
            Ok(Err(_)) | Err(_) => Err(OverloadRefusal::QueueTimeout),
        }
    }
}

/// A request's turn, counted in `requests_in_flight` while it lasts.
struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Turn {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::global().request_in_flight(true);
        Turn(permit)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        metrics::global().request_in_flight(false);
    }
}

/// A request waiting for its turn, counted while it waits, however the wait ends (a
/// client that hangs up drops the request's future mid-wait).
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// How many were waiting when this one began.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::AcqRel);
        metrics::global().request_waiting(true);
        Waiting { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        metrics::global().request_waiting(false);
    }
}

/// Admits an MCP POST, or refuses it (see the module docs).
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let turn = match admission.turn().await {
        Ok(turn) => turn,
        Err(reason) => return refuse(&admission, reason, request).await,
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    // The turn is given back when the body is done (or dropped, if the client left).
    let body = body.map_frame(move |frame| {
        let _ = &turn;
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

/// How much of a refused request's body is read, so that its connection can carry the
/// client's next request; a longer body is not read, and the connection is closed.
const DRAINED_BODY_BYTES: usize = 64 * 1024;

async fn refuse(admission: &Admission, reason: OverloadRefusal, request: Request) -> Response {
    metrics::global().overload_refused(reason);
    let message = match reason {
        OverloadRefusal::Busy => format!(
            "server busy: {} requests under way and as many waiting; this one was not run, \
             retry after 1 s",
            admission.limits.max_in_flight
        ),
        OverloadRefusal::QueueTimeout => format!(
            "server busy: no turn within {:?}; this request was not run, retry after 1 s",
            admission.limits.max_queue_wait
        ),
    };
    // Logged at most every few seconds: a flood of refusals must not flood the log too.
    if metrics::global().should_log_overload() {
        tracing::warn!(
            reason = reason.as_str(),
            max_in_flight = admission.limits.max_in_flight,
            "refusing requests: over capacity (--max-in-flight, --max-queue-wait); counted in \
             todo_mcp_overload_refusals_total"
        );
    }
    let drained = axum::body::to_bytes(request.into_body(), DRAINED_BODY_BYTES)
        .await
        .is_ok();
    let mut response = if drained {
        reply::jsonrpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            reply::SERVER_BUSY,
            &message,
        )
    } else {
        reply::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            reply::SERVER_BUSY,
            &message,
        )
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
