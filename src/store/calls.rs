//! One tool call's transaction, from begin to the audit record.
//!
//! A call runs in a [`UserTx`] of its caller. On success its record is written in that
//! same transaction before the commit; on failure the transaction is rolled back and the
//! failure recorded in a transaction of its own. An attempt that failed without
//! committing anything (a deadlock, a serialization failure, a connection lost before
//! COMMIT) runs again, up to [`ATTEMPTS`] in all; one that met a pooled connection
//! already closed runs again at once, uncounted, up to once per pooled connection.
//! [`crate::transact!`] runs a call's body this way.

use super::audit::{self, CallRecord, Outcome};
use super::conversations::{self, ActivityLog};
use super::{ErrorKind, StoreError, UserId, UserTx, end, parse_uuid};
use crate::db::{Database, DbError};
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One tool invocation, as the audit trail needs it.
#[derive(Debug)]
pub struct Call {
    pub user: UserId,
    /// As the client named it, cut to [`TOOL_NAME_CHARS`] (a name the server does not
    /// have is the caller's to choose, and is logged and recorded).
    pub tool: String,
    /// The arguments exactly as the client sent them (what the audit record keeps).
    pub arguments: Value,
    pub started: Instant,
    /// Where its record goes, as the tool's definition declares.
    pub records_in: RecordIn,
    /// The attempts of its transaction that ran again, by why ([`retry_after`] counts them;
    /// the tools layer reports them as metrics once the call is over).
    pub retries: Retries,
}

/// The most characters of a called tool's name kept (MCP names are at most 128).
pub const TOOL_NAME_CHARS: usize = 128;

/// Why a call's transaction ran again: the retryable [`DbError`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Its pooled connection turned out closed before anything ran (see
    /// [`DbError::StaleConnection`]).
    StaleConnection,
    /// The connection broke before COMMIT.
    ConnectionLost,
    /// A serialization failure, deadlock or SQLite busy.
    Contention,
}

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [
        RetryReason::StaleConnection,
        RetryReason::ConnectionLost,
        RetryReason::Contention,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::ConnectionLost => "connection_lost",
            RetryReason::Contention => "contention",
        }
    }

    fn of(error: &StoreError) -> Option<RetryReason> {
        match error {
            StoreError::Db(DbError::StaleConnection(_)) => Some(RetryReason::StaleConnection),
            StoreError::Db(DbError::ConnectionLost(_)) => Some(RetryReason::ConnectionLost),
            StoreError::Db(DbError::Contention(_)) => Some(RetryReason::Contention),
            _ => None,
        }
    }
}

/// How many times a call's transaction ran again, per [`RetryReason`]. Atomics, since the
/// call is shared (`Arc`) while it runs; in a plain struct, so a call costs no allocation.
#[derive(Debug, Default)]
pub struct Retries([AtomicU32; RetryReason::ALL.len()]);

impl Retries {
    fn add(&self, reason: RetryReason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for each reason, in [`RetryReason::ALL`]'s order.
    pub fn counts(&self) -> impl Iterator<Item = (RetryReason, u32)> + '_ {
        RetryReason::ALL
            .into_iter()
            .map(|reason| (reason, self.0[reason as usize].load(Ordering::Relaxed)))
    }
}

/// Where a call's record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordIn {
    /// The caller's "Tool activity" conversation.
    ActivityLog,
    /// The conversation named by the call's optional `conversation_id` argument (else
    /// the activity log).
    NamedConversation,
    /// The call reads the history of the conversation its `conversation_id` names: the
    /// record goes to a log that is not the one read, so a read never grows what it reads.
    ReadLog,
}

impl RecordIn {
    pub const ALL: [RecordIn; 3] = [
        RecordIn::ActivityLog,
        RecordIn::NamedConversation,
        RecordIn::ReadLog,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RecordIn::ActivityLog => "activity_log",
            RecordIn::NamedConversation => "conversation_id",
            RecordIn::ReadLog => "read_log",
        }
    }
}

/// How many times a call's transaction runs at most when it keeps failing retryably.
pub const ATTEMPTS: u32 = 3;

/// Begins an attempt at the call's transaction and finds where its record goes.
pub async fn begin(db: &Database, call: &Call) -> Result<(UserTx, uuid::Uuid), StoreError> {
    let mut tx = UserTx::begin(db, &call.user).await?;
    match record_destination(&mut tx, call, true).await {
        Ok(destination) => Ok((tx, destination)),
        Err(error) => end(tx, Err(error)).await,
    }
}

/// Ends an attempt: on success writes the call's record in the same transaction and
/// commits; on failure rolls back ([`record_failure`] records it afterwards).
pub async fn finish<T: Serialize>(
    mut tx: UserTx,
    call: &Call,
    destination: uuid::Uuid,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    let recorded = match result {
        Ok(value) => {
            async {
                let json = serde_json::value::to_raw_value(&value)
                    .map_err(|e| StoreError::Conflict(format!("cannot encode the result: {e}")))?;
                let record = CallRecord {
                    tool: &call.tool,
                    arguments: &call.arguments,
                    outcome: Outcome::Success(&json),
                    duration: call.started.elapsed(),
                };
                audit::record(&mut tx, destination, record).await?;
                Ok(value)
            }
            .await
        }
        Err(error) => Err(error),
    };
    end(tx, recorded).await
}

/// Whether to run a failed attempt again, after a pause if so.
pub async fn retry_after(
    db: &Database,
    call: &Call,
    attempt: &mut u32,
    stale_connections: &mut u32,
    error: &StoreError,
) -> bool {
    if let StoreError::Db(DbError::StaleConnection(cause)) = error
        && *stale_connections < db.max_connections()
    {
        tracing::info!(tool = %call.tool, user = %call.user, %cause, "retrying the call's transaction on another connection: its pooled one was closed");
        *stale_connections += 1;
        call.retries.add(RetryReason::StaleConnection);
        return true;
    }
    if !error.is_retryable() || *attempt >= ATTEMPTS {
        return false;
    }
    tracing::info!(tool = %call.tool, user = %call.user, attempt = *attempt, %error, "retrying the call's transaction");
    if let Some(reason) = RetryReason::of(error) {
        call.retries.add(reason);
    }
    tokio::time::sleep(backoff(*attempt)).await;
    *attempt += 1;
    true
}

/// The pause before attempt `attempt + 1`: growing, and jittered so that the
/// transactions that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos())
            % 10,
    );
    Duration::from_millis(u64::from(attempt) * 10 + jitter)
}

/// What became of a failed call's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureRecord {
    Stored,
    /// Not stored: the user's failed calls had used this hour's budget. `this_hour`
    /// counts them, this one included.
    OverBudget {
        this_hour: i32,
    },
    /// Not stored: the database refused or could not be reached (logged).
    Lost,
}

/// Records a failed call, in a transaction of its own (the call's was rolled back), if
/// its user's failed calls have not had `budget` records this hour already.
pub async fn record_failure(
    db: &Database,
    call: &Call,
    kind: ErrorKind,
    message: &str,
    budget: i32,
) -> FailureRecord {
    let result: Result<FailureRecord, StoreError> = async {
        let mut tx = UserTx::begin(db, &call.user).await?;
        let recorded = async {
            let this_hour = audit::count_failure_record(&mut tx).await?;
            if this_hour > budget {
                // The count itself is kept (committed), so the hour's total stays exact.
                return Ok(FailureRecord::OverBudget { this_hour });
            }
            let destination = record_destination(&mut tx, call, false).await?;
            let record = CallRecord {
                tool: &call.tool,
                arguments: &call.arguments,
                outcome: Outcome::Failure { kind, message },
                duration: call.started.elapsed(),
            };
            audit::record(&mut tx, destination, record).await?;
            Ok(FailureRecord::Stored)
        }
        .await;
        end(tx, recorded).await
    }
    .await;
    result.unwrap_or_else(|error| {
        tracing::warn!(tool = %call.tool, user = %call.user, %error, "could not record a failed call");
        FailureRecord::Lost
    })
}

/// Where a call's record goes (see [`RecordIn`]).
///
/// `strict`: on the success path an unknown `conversation_id` is the call's error (met
/// when the record is written); when recording a failure it just falls back to the
/// activity log.
async fn record_destination(
    tx: &mut UserTx,
    call: &Call,
    strict: bool,
) -> Result<uuid::Uuid, StoreError> {
    let calls_log = ActivityLog::Calls.id(&call.user);
    let named = call
        .arguments
        .get("conversation_id")
        .and_then(Value::as_str);
    let Some(named) = named else {
        return Ok(calls_log);
    };
    match call.records_in {
        RecordIn::ActivityLog => return Ok(calls_log),
        RecordIn::ReadLog => {
            return Ok(match parse_uuid("conversation_id", named) {
                Ok(read) => ActivityLog::for_reading(&call.user, read),
                Err(_) => calls_log,
            });
        }
        RecordIn::NamedConversation => {}
    }
    let owned = match parse_uuid("conversation_id", named) {
        // Not looked up: the record's own insert refuses a conversation that is not the
        // caller's (its foreign key), which fails the call and rolls it back whole
        // ([`audit::record`]), a round trip sooner.
        Ok(id) if strict => Ok(id),
        Ok(id) => conversations::get(tx, id).await.map(|_| id),
        Err(error) => Err(error),
    };
    match owned {
        Ok(id) => Ok(id),
        Err(error) if strict => Err(error),
        Err(StoreError::Db(error)) => Err(StoreError::Db(error)),
        Err(_) => Ok(calls_log),
    }
}

/// Runs one tool call's transaction: `$body`, a block using `$tx: &mut UserTx` and
/// evaluating to `Result<T, StoreError>`, between [`begin`] and [`finish`], again while
/// [`retry_after`] says so. Evaluates to the final `Result<T, StoreError>`. (A macro, not
/// a function taking an async closure: the closure's borrowed future could not be proven
/// `Send` for every lifetime, which rmcp requires of a tool's future.)
#[macro_export]
macro_rules! transact {
    ($db:expr, $call:expr, |$tx:ident| $body:block) => {{
        let db: &$crate::db::Database = $db;
        let call: &$crate::store::calls::Call = $call;
        let mut attempt = 1;
        let mut stale_connections = 0;
        loop {
            let outcome = match $crate::store::calls::begin(db, call).await {
                Ok((mut tx, destination)) => {
                    let result: Result<_, $crate::store::StoreError> = async {
                        let $tx = &mut tx;
                        $body
                    }
                    .await;
                    $crate::store::calls::finish(tx, call, destination, result).await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Err(error)
                    if $crate::store::calls::retry_after(
                        db,
                        call,
                        &mut attempt,
                        &mut stale_connections,
                        &error,
                    )
                    .await => {}
                outcome => break outcome,
            }
        }
    }};
}
