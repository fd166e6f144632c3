//! The audit trail: every tool call, success or failure, becomes a `tool` message.

use super::conversations::{Message, insert_message};
use super::{StoreError, UserId};
use crate::db::Tx;
use serde_json::{Value, json};
use std::time::Duration;

/// Results larger than this (serialized) are recorded by size only: the data they carry
/// is in its own rows, and a history read of 50 long messages must not copy them all.
pub const RESULT_RECORD_LIMIT: usize = 16 * 1024;

/// How a call ended.
pub enum Outcome<'a> {
    Success(&'a Value),
    Failure { kind: &'a str, message: &'a str },
}

/// One tool invocation, as recorded in `messages.tool_calls`.
pub struct CallRecord<'a> {
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub outcome: Outcome<'a>,
    pub duration: Duration,
}

impl CallRecord<'_> {
    /// The JSON stored in `tool_calls`:
    /// `{tool, arguments, ok, result | error: {kind, message}, duration_ms}`.
    pub fn to_json(&self) -> Value {
        let duration_ms = (self.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        match &self.outcome {
            Outcome::Success(result) => {
                let size = serde_json::to_vec(result).map(|b| b.len()).unwrap_or(0);
                let result = if size <= RESULT_RECORD_LIMIT {
                    (*result).clone()
                } else {
                    json!({ "omitted": true, "bytes": size })
                };
                json!({
                    "tool": self.tool,
                    "arguments": self.arguments,
                    "ok": true,
                    "result": result,
                    "duration_ms": duration_ms,
                })
            }
            Outcome::Failure { kind, message } => json!({
                "tool": self.tool,
                "arguments": self.arguments,
                "ok": false,
                "error": { "kind": kind, "message": message },
                "duration_ms": duration_ms,
            }),
        }
    }

    fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Success(_) => format!("{} succeeded", self.tool),
            Outcome::Failure { message, .. } => format!("{} failed: {message}", self.tool),
        }
    }
}

/// Writes the record into `conversation` (which must be the user's).
pub async fn record(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    call: &CallRecord<'_>,
) -> Result<Message, StoreError> {
    insert_message(
        tx,
        user,
        conversation,
        "tool",
        &call.summary(),
        Some(call.to_json()),
    )
    .await
}
