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

/// rmcp answers a POST body that is not JSON with 415 and plain text; clients expect a
/// JSON-RPC parse error (400), as `/message` gives. Reads the body within `limit`.
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
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            &format!("parse error: {error}"),
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
