//! What every transport checks of an incoming message before rmcp sees it: that it is one
//! JSON-RPC 2.0 message, so that anything else gets a JSON-RPC error naming the problem.

use rmcp::model::ClientJsonRpcMessage;
use serde_json::Value;

/// JSON-RPC's code for a body that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for a request that is not acceptable.
pub const INVALID_REQUEST: i64 = -32600;

/// Why a message was refused: a JSON-RPC error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
}

/// `body` parsed, if it is one JSON-RPC 2.0 message: else `-32700` if it is not JSON (bad
/// UTF-8, bad escapes, nesting past serde_json's limit, numbers out of range), `-32600` if
/// it is JSON but not a message (batches included: MCP dropped them in 2025-06-18).
pub fn read_message(body: &[u8]) -> Result<Value, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|error| Refusal {
        code: PARSE_ERROR,
        message: format!("parse error: {error}"),
    })?;
    message_shape(&value).map_err(|problem| Refusal {
        code: INVALID_REQUEST,
        message: problem.to_owned(),
    })?;
    Ok(value)
}

/// The message as rmcp's type, from the value [`read_message`] returned (no second parse
/// of the text): `-32600` if rmcp cannot take it.
pub fn client_message(value: Value) -> Result<ClientJsonRpcMessage, Refusal> {
    serde_json::from_value(value).map_err(|error| Refusal {
        code: INVALID_REQUEST,
        message: format!("invalid request: {error}"),
    })
}

/// The JSON-RPC error object for a refused message (its id is unknown, so null).
pub fn error_response(refusal: &Refusal) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": refusal.code, "message": refusal.message },
    })
}

fn message_shape(value: &Value) -> Result<(), &'static str> {
    let message = match value {
        Value::Object(message) => message,
        Value::Array(_) => {
            return Err(
                "invalid request: JSON-RPC batches are not supported; send one message at a time",
            );
        }
        _ => return Err("invalid request: a JSON-RPC message must be a JSON object"),
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("invalid request: `jsonrpc` must be \"2.0\"");
    }
    // rmcp keeps a numeric id as an i64: a larger one would otherwise be refused with a
    // plain-text error, not a JSON-RPC one.
    let id_ok = match message.get("id") {
        None => true,
        Some(id) => id.is_string() || id.is_i64(),
    };
    if !id_ok {
        return Err("invalid request: `id` must be a string or an integer from -2^63 to 2^63-1");
    }
    match message.get("method") {
        Some(Value::String(_)) => match message.get("params") {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err("invalid request: `params` must be an object"),
        },
        Some(_) => Err("invalid request: `method` must be a string"),
        // A response to a request the server made (it has an id and a result or error).
        None if message.contains_key("id")
            && (message.contains_key("result") || message.contains_key("error")) =>
        {
            Ok(())
        }
        None => Err(
            "invalid request: a message needs a `method`, or an `id` with a `result` or `error`",
        ),
    }
}
