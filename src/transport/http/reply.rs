//! Error answers outside a JSON-RPC exchange (refused before reaching the MCP server),
//! shaped as JSON-RPC errors so that clients can show them.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

/// An error given before the request's body was read (auth, Host guard, session check).
/// The connection cannot carry another request (hyper would close it unannounced, and a
/// client reusing it would see it drop instead of reading this answer), so say so.
pub fn refusal(status: StatusCode, code: i64, message: &str) -> Response {
    let mut response = jsonrpc_error(status, code, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// JSON-RPC's code for a body that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for a request that is not acceptable.
pub const INVALID_REQUEST: i64 = -32600;

/// Checks a POST body before rmcp sees it: rmcp answers a body it cannot read with 415
/// and plain text, where clients expect a JSON-RPC error. Reads the body within the limit.
pub async fn require_json_body(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                &format!("the request body is over {} bytes", super::MAX_BODY_BYTES),
            );
        }
    };
    if let Some(refusal) = refuse_non_message(&bytes) {
        return refusal;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The answer to a body that is not one JSON-RPC 2.0 message, if it isn't: 400 with
/// `-32700` if it is not JSON (bad UTF-8, bad escapes, nesting past serde_json's limit,
/// numbers out of range), 400 with `-32600` if it is JSON but not a message (batches
/// included: MCP dropped them in 2025-06-18).
pub fn refuse_non_message(body: &[u8]) -> Option<Response> {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            return Some(jsonrpc_error(
                StatusCode::BAD_REQUEST,
                PARSE_ERROR,
                &format!("parse error: {error}"),
            ));
        }
    };
    let problem = message_shape(&value).err()?;
    Some(jsonrpc_error(
        StatusCode::BAD_REQUEST,
        INVALID_REQUEST,
        problem,
    ))
}

fn message_shape(value: &serde_json::Value) -> Result<(), &'static str> {
    use serde_json::Value;
    let message = match value {
        Value::Object(message) => message,
        Value::Array(_) => {
            return Err(
                "invalid request: JSON-RPC batches are not supported; send one message per request",
            );
        }
        _ => return Err("invalid request: a JSON-RPC message must be a JSON object"),
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("invalid request: `jsonrpc` must be \"2.0\"");
    }
    let id_ok = match message.get("id") {
        None => true,
        Some(id) => id.is_string() || id.is_i64() || id.is_u64(),
    };
    if !id_ok {
        return Err("invalid request: `id` must be a string or an integer");
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
