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
    Success(Value),
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
    pub fn into_json(self) -> Value {
        let duration_ms = (self.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        match self.outcome {
            Outcome::Success(result) => {
                let size = serialized_size(&result);
                let result = if size <= RESULT_RECORD_LIMIT {
                    result
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

/// The length of a value's JSON, counted without building the text.
fn serialized_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Writes the record into `conversation` (which must be the user's).
pub async fn record(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    call: CallRecord<'_>,
) -> Result<Message, StoreError> {
    let content = call.summary().replace('\0', NUL_STANDIN);
    let mut tool_calls = call.into_json();
    replace_nul(&mut tool_calls);
    insert_message(tx, user, conversation, "tool", &content, Some(tool_calls)).await
}

/// Refused input may carry NUL bytes, which PostgreSQL's text and jsonb cannot store; the
/// record keeps everything else, with U+FFFD in their place.
const NUL_STANDIN: &str = "\u{FFFD}";

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => *text = text.replace('\0', NUL_STANDIN),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, value)| (key.replace('\0', NUL_STANDIN), value))
                    .collect();
            }
            fields.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_replaced_everywhere() {
        let mut value = json!({ "ti\0tle": ["a\0b", { "k": "\0" }], "n": 1 });
        replace_nul(&mut value);
        assert_eq!(
            value,
            json!({ "ti\u{FFFD}tle": ["a\u{FFFD}b", { "k": "\u{FFFD}" }], "n": 1 })
        );
    }

    #[test]
    fn size_is_the_length_of_the_json() {
        let value = json!({ "task": { "title": "milk", "tags": [1, 2, "é"] } });
        assert_eq!(
            serialized_size(&value),
            serde_json::to_vec(&value).unwrap().len()
        );
    }
}
