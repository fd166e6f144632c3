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

pub use crate::transport::jsonrpc::INVALID_REQUEST;

/// JSON-RPC's implementation-defined server error: the server is over capacity and did not
/// run the request (sent with 503 and `Retry-After`).
pub const SERVER_BUSY: i64 = -32000;

/// All a caller not yet signed in learns of an outage: the detail goes to the log.
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable, retry";

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

/// The answer to a body that is not one JSON-RPC 2.0 message (see
/// [`jsonrpc::read_message`](crate::transport::jsonrpc::read_message)), if it isn't.
pub fn refuse_non_message(body: &[u8]) -> Option<Response> {
    let refusal = crate::transport::jsonrpc::read_message(body).err()?;
    Some(refusal_response(&refusal))
}

/// A refused message as a 400 with its JSON-RPC error.
pub fn refusal_response(refusal: &crate::transport::jsonrpc::Refusal) -> Response {
    jsonrpc_error(StatusCode::BAD_REQUEST, refusal.code, &refusal.message)
}
