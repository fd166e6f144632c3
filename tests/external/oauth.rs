//! todo-mcp as an OAuth 2.1 resource server, against a real authorization server: Better Auth
//! (its JWT plugin and its MCP OAuth provider, [`support::better_auth`]). Its session JWTs
//! (EdDSA) and its OAuth access tokens (bound to todo-mcp's URL) act as their user; tokens
//! of another issuer, for another audience, expired, not yet valid, unsigned, tampered,
//! HS256-signed with the public key, or with an unknown `kid` are refused; the JWKS is
//! fetched a bounded number of times, follows key rotation and outlives its issuer's
//! downtime; `todo:read` and `todo:write` allow exactly their tools; the protected resource
//! metadata (RFC 9728) is served and every 401 points to it.

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::better_auth::{BetterAuth, free_port};
use support::jsonrpc::{Reply, client, mcp_request, tool_call};
use support::python::PyClient;
use support::samples;
use support::{HttpServer, PgTestDb, TOOL_NAMES, start_http, start_http_on};

/// Another service Better Auth issues tokens for: todo-mcp must refuse them.
const OTHER_RESOURCE: &str = "http://127.0.0.1:9/other-mcp";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One stateless `tools/call` with `token`.
async fn call(server: &HttpServer, token: &str, tool: &str, arguments: Value) -> Reply {
    let request = mcp_request(&server.mcp_url(), Some(token)).json(&tool_call(1, tool, arguments));
    Reply::read(request.send().await.expect("POST /mcp")).await
}

/// The structured result of a successful call.
async fn call_ok(server: &HttpServer, token: &str, tool: &str, arguments: Value) -> Value {
    let reply = call(server, token, tool, arguments).await;
    assert_eq!(reply.status, StatusCode::OK, "{tool}: {}", reply.body);
    let response = reply
        .response(1)
        .unwrap_or_else(|| panic!("{tool}: no response in {}", reply.body));
    let result = &response["result"];
    assert_eq!(result["isError"], false, "{tool}: {response}");
    result["structuredContent"].clone()
}

/// A 401 whose challenge says `invalid_token` and whose body gives `reason`.
async fn assert_refused(server: &HttpServer, token: &str, reason: &str, what: &str) {
    let reply = call(server, token, "list_tasks", json!({})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.body
    );
    let challenge = challenge(&reply);
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    assert!(
        reply.body.contains(reason),
        "{what}: expected {reason:?} in {}",
        reply.body
    );
}

fn challenge(reply: &Reply) -> String {
    reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no WWW-Authenticate on a {}: {}", reply.status, reply.body))
        .to_owned()
}

/// todo-mcp trusting Better Auth's JWT plugin as it comes: issuer and audience are Better
/// Auth's base URL, keys at its JWKS URL.
async fn serve_for_session_jwts(db: &PgTestDb, auth: &BetterAuth, extra: &[&str]) -> HttpServer {
    let env = [
        ("TODO_MCP_JWT_ISSUER", auth.base()),
        ("TODO_MCP_JWKS_URL", &auth.jwks_url()),
        ("TODO_MCP_JWT_AUDIENCE", auth.base()),
    ];
    start_http(db.url(), extra, &env).await
}

/// todo-mcp on `port` as the OAuth resource `http://127.0.0.1:{port}/mcp` of `issuer`
/// (its JWKS found from the issuer's metadata).
async fn serve_as_resource(db: &PgTestDb, port: u16, issuer: &str) -> HttpServer {
    let public_url = format!("http://127.0.0.1:{port}/mcp");
    start_http_on(
        &format!("127.0.0.1:{port}"),
        db.url(),
        &[],
        &[
            ("TODO_MCP_JWT_ISSUER", issuer),
            ("TODO_MCP_PUBLIC_URL", &public_url),
        ],
    )
    .await
}

/// The titles `list_tasks` shows `token`'s user.
async fn titles(server: &HttpServer, token: &str) -> Vec<String> {
    let listed = call_ok(server, token, "list_tasks", json!({})).await;
    listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["title"].as_str().expect("title").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn better_auth_session_jwts_act_as_their_user_and_no_other() {
    let auth = BetterAuth::start("http://127.0.0.1:9/mcp", OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let alice = auth.sign_up("alice").await;
    let bob = auth.sign_up("bob").await;
    let alice_jwt = auth.session_jwt(&alice).await;
    let bob_jwt = auth.session_jwt(&bob).await;
    // Better Auth's ES256 and RS256 keys, made before todo-mcp first fetches the JWKS.
    let mut other_algorithms = Vec::new();
    for alg in ["ES256", "RS256"] {
        other_algorithms.push((alg, auth.sign(json!({ "sub": alice.user_id }), alg).await));
    }
    let server = serve_for_session_jwts(&db, &auth, &[]).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(alice_jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA", "Better Auth's default: {header}");

    let added = call_ok(
        &server,
        &alice_jwt,
        "add_task",
        json!({ "title": "alice's" }),
    )
    .await;
    assert_eq!(added["task"]["title"], "alice's");
    assert_eq!(titles(&server, &alice_jwt).await, ["alice's"]);
    assert_eq!(titles(&server, &bob_jwt).await, Vec::<String>::new());
    // The task belongs to Better Auth's user id, the token's `sub`.
    let owners = db.query_json("SELECT user_id FROM tasks").await;
    assert_eq!(owners, [json!({ "user_id": alice.user_id })]);

    // Better Auth's ES256 and RS256 keys verify too.
    for (alg, token) in &other_algorithms {
        assert_eq!(titles(&server, token).await, ["alice's"], "{alg}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let auth = BetterAuth::start("http://127.0.0.1:9/mcp", OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let server = serve_for_session_jwts(&db, &auth, &[]).await;
    let alice = auth.sign_up("alice").await;
    let good = auth.session_jwt(&alice).await;
    assert_eq!(titles(&server, &good).await, Vec::<String>::new());
    let sub = alice.user_id.as_str();

    let other_issuer = auth
        .sign(
            json!({ "sub": sub, "iss": "http://127.0.0.1:9/another-issuer" }),
            "EdDSA",
        )
        .await;
    assert_refused(&server, &other_issuer, "issuer", "another issuer").await;
    let other_audience = auth
        .sign(json!({ "sub": sub, "aud": OTHER_RESOURCE }), "EdDSA")
        .await;
    assert_refused(
        &server,
        &other_audience,
        "not for this server",
        "another audience",
    )
    .await;
    let expired = auth
        .sign(
            json!({ "sub": sub, "iat": now() - 7200, "exp": now() - 3600 }),
            "EdDSA",
        )
        .await;
    assert_refused(&server, &expired, "expired", "expired an hour ago").await;
    let early = auth
        .sign(
            json!({ "sub": sub, "nbf": now() + 3600, "exp": now() + 7200 }),
            "EdDSA",
        )
        .await;
    assert_refused(&server, &early, "not valid yet", "valid from in an hour").await;
    // Within the documented leeway (30 s), a clock a little behind is forgiven.
    let slightly_early = auth
        .sign(json!({ "sub": sub, "nbf": now() + 10 }), "EdDSA")
        .await;
    assert_eq!(titles(&server, &slightly_early).await, Vec::<String>::new());

    let [header, payload, signature]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let unsigned = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_refused(
        &server,
        &unsigned,
        "algorithm `none` is not accepted",
        "alg none",
    )
    .await;
    // Another user's id in a payload the signature was not made over.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"] = json!("mallory");
    let tampered = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_refused(
        &server,
        &tampered,
        "signature does not verify",
        "tampered payload",
    )
    .await;
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let bad_signature = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_refused(
        &server,
        &bad_signature,
        "signature does not verify",
        "flipped bit",
    )
    .await;

    // HS256 signed with the public key's bytes: the classic algorithm confusion.
    let jwks: Value = client()
        .get(auth.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ed_key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "EdDSA")
        .expect("an EdDSA key")
        .clone();
    let mut confused_header = Header::new(Algorithm::HS256);
    confused_header.kid = ed_key["kid"].as_str().map(str::to_owned);
    for secret in [
        ed_key["x"].as_str().unwrap().as_bytes().to_vec(),
        URL_SAFE_NO_PAD
            .decode(ed_key["x"].as_str().unwrap())
            .unwrap(),
        ed_key.to_string().into_bytes(),
    ] {
        let confused = jsonwebtoken::encode(
            &confused_header,
            &json!({ "sub": sub, "iss": auth.base(), "aud": auth.base(), "exp": now() + 600 }),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_refused(
            &server,
            &confused,
            "algorithm HS256 is not accepted",
            "HS256 with the public key",
        )
        .await;
    }
    // A key used with an algorithm it was not made for (the EdDSA kid, an ES256 signature).
    let es256 = auth.sign(json!({ "sub": sub }), "ES256").await;
    let es_payload_and_sig: Vec<&str> = es256.split('.').skip(1).collect();
    let es_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(es256.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let swapped_kid = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "ES256", "kid": ed_key["kid"] }).to_string()),
        es_payload_and_sig.join(".")
    );
    assert_eq!(es_header["alg"], "ES256");
    assert_refused(
        &server,
        &swapped_kid,
        "algorithm ES256 is not accepted",
        "ES256 on an EdDSA key",
    )
    .await;

    // None of the refused tokens created a user or a row.
    let users = db.query_json("SELECT id FROM users ORDER BY id").await;
    assert_eq!(users, [json!({ "id": alice.user_id })]);
}

/// A forged `kid` names no key: the JWKS is fetched again, but at most once per
/// `--jwks-refresh-min-interval` (5 s by default), however many such tokens arrive.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_kids_fetches_the_jwks_a_bounded_number_of_times() {
    let auth = BetterAuth::start("http://127.0.0.1:9/mcp", OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let alice = auth.sign_up("alice").await;
    let good = auth.session_jwt(&alice).await;
    // All 200 admitted at once (the default admits 40 and queues 40): this is about the
    // JWKS, not admission, whose 503s would come before the token is looked at.
    let server = serve_for_session_jwts(
        &db,
        &auth,
        &[
            "--jwks-refresh-min-interval",
            "30",
            "--max-in-flight",
            "256",
        ],
    )
    .await;
    assert_eq!(titles(&server, &good).await, Vec::<String>::new());
    let before = auth.jwks_fetches().await;
    let payload_and_signature: Vec<&str> = good.split('.').skip(1).collect();
    let forged: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD
                    .encode(json!({ "alg": "EdDSA", "kid": format!("forged-{i}") }).to_string()),
                payload_and_signature.join(".")
            )
        })
        .collect();
    let replies = futures_util::future::join_all(
        forged
            .iter()
            .map(|token| call(&server, token, "list_tasks", json!({}))),
    )
    .await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        assert!(
            reply
                .body
                .contains("no key of the issuer's JWKS has the token's kid"),
            "{}",
            reply.body
        );
    }
    let fetched = auth.jwks_fetches().await - before;
    assert!(
        fetched <= 1,
        "200 tokens with unknown kids fetched the JWKS {fetched} times (at most 1 per 30 s)"
    );
    // The good token still works, from the cache.
    assert_eq!(titles(&server, &good).await, Vec::<String>::new());
}

/// Rotation: when the signing key is replaced, tokens of the new key work at once (their
/// unknown kid fetches the JWKS again), and tokens of the old key stop working as soon as
/// the server has seen a JWKS without it.
#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_are_followed_and_removed_keys_stop_working() {
    let auth = BetterAuth::start("http://127.0.0.1:9/mcp", OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let alice = auth.sign_up("alice").await;
    let old = auth.session_jwt(&alice).await;
    let server = serve_for_session_jwts(&db, &auth, &["--jwks-refresh-min-interval", "0.2"]).await;
    assert_eq!(titles(&server, &old).await, Vec::<String>::new());
    let old_kids = auth.published_kids().await;

    auth.remove_signing_keys().await;
    let new = auth.session_jwt(&alice).await;
    let new_kids = auth.published_kids().await;
    assert!(
        new_kids.iter().all(|kid| !old_kids.contains(kid)),
        "{old_kids:?} → {new_kids:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        titles(&server, &new).await,
        Vec::<String>::new(),
        "the new key's token"
    );
    assert_refused(
        &server,
        &old,
        "no key of the issuer's JWKS has the token's kid",
        "the removed key's token",
    )
    .await;
}

/// The issuer down: tokens whose key is cached keep working, past the cache's lifetime,
/// with the JWKS answering 503 and then with Better Auth gone altogether.
#[tokio::test(flavor = "multi_thread")]
async fn cached_keys_outlive_the_issuers_downtime() {
    let auth = BetterAuth::start("http://127.0.0.1:9/mcp", OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let alice = auth.sign_up("alice").await;
    let token = auth.session_jwt(&alice).await;
    let server = serve_for_session_jwts(
        &db,
        &auth,
        &[
            "--jwks-cache-ttl",
            "0.5",
            "--jwks-refresh-min-interval",
            "0.2",
        ],
    )
    .await;
    call_ok(&server, &token, "add_task", json!({ "title": "before" })).await;
    auth.set_jwks_down(true).await;
    let fetches = auth.jwks_fetches().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        titles(&server, &token).await,
        ["before"],
        "JWKS answering 503"
    );
    assert!(
        auth.jwks_fetches().await > fetches,
        "the stale cache was not refreshed"
    );
    auth.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        titles(&server, &token).await,
        ["before"],
        "Better Auth stopped"
    );
}

/// Better Auth's OAuth provider, as a remote connector uses it: access tokens bound to
/// todo-mcp's URL (RFC 8707) with the scopes the user consented to; the JWKS found from
/// the issuer's metadata (`TODO_MCP_JWT_ISSUER` alone).
#[tokio::test(flavor = "multi_thread")]
async fn oauth_access_tokens_are_bound_to_this_server_and_scoped() {
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}/mcp");
    let auth = BetterAuth::start(&public_url, OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let issuer = auth.issuer();
    let server = serve_as_resource(&db, port, &issuer).await;
    let alice = auth.sign_up("alice").await;

    let full = auth
        .oauth_access_token(&alice, &public_url, "todo:read todo:write")
        .await;
    call_ok(&server, &full, "add_task", json!({ "title": "via OAuth" })).await;
    assert_eq!(titles(&server, &full).await, ["via OAuth"]);

    // A token Better Auth issued for another service is not for this one.
    let elsewhere = auth
        .oauth_access_token(&alice, OTHER_RESOURCE, "todo:read todo:write")
        .await;
    assert_refused(
        &server,
        &elsewhere,
        "not for this server",
        "a token for another resource",
    )
    .await;

    // Each scope allows exactly its tools; a refusal says which scope the tool needs.
    let read = auth
        .oauth_access_token(&alice, &public_url, "todo:read")
        .await;
    assert_eq!(titles(&server, &read).await, ["via OAuth"]);
    assert_insufficient_scope(&server, &read, "add_task", "todo:write").await;
    assert_insufficient_scope(&server, &read, "complete_task", "todo:write").await;
    let write = auth
        .oauth_access_token(&alice, &public_url, "todo:write")
        .await;
    call_ok(
        &server,
        &write,
        "add_task",
        json!({ "title": "write only" }),
    )
    .await;
    assert_insufficient_scope(&server, &write, "list_tasks", "todo:read").await;
    let neither = auth.oauth_access_token(&alice, &public_url, "openid").await;
    assert_insufficient_scope(&server, &neither, "list_tasks", "todo:read").await;
    assert_insufficient_scope(&server, &neither, "add_task", "todo:write").await;
    assert_eq!(titles(&server, &full).await, ["write only", "via OAuth"]);
}

/// 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`, nothing run.
async fn assert_insufficient_scope(server: &HttpServer, token: &str, tool: &str, scope: &str) {
    let reply = call(
        server,
        token,
        tool,
        json!({ "title": "refused", "task_id": "x" }),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{tool}: {}",
        reply.body
    );
    let challenge = challenge(&reply);
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains(&format!("scope=\"{scope}\"")),
        "{tool}: WWW-Authenticate {challenge:?}"
    );
    assert!(
        reply
            .body
            .contains(&format!("{tool} needs the {scope} scope")),
        "{}",
        reply.body
    );
}

/// RFC 9728 metadata at the root and the path-inserted well-known URL, and every 401
/// pointing to it (with `error` only when a token was sent).
#[tokio::test(flavor = "multi_thread")]
async fn protected_resource_metadata_is_served_and_named_by_every_401() {
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}/mcp");
    let issuer = "https://auth.example.test/api/auth";
    let db = PgTestDb::new().await;
    let server = serve_as_resource(&db, port, issuer).await;
    let metadata_url = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    for url in [
        metadata_url.clone(),
        format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource"),
    ] {
        let metadata: Value = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            metadata,
            json!({
                "resource": public_url,
                "authorization_servers": [issuer],
                "scopes_supported": ["todo:read", "todo:write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "todo-mcp",
            }),
            "{url}"
        );
    }
    let bare = Reply::read(
        mcp_request(&server.mcp_url(), None)
            .json(&tool_call(1, "list_tasks", json!({})))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    let bare = challenge(&bare);
    assert!(
        bare.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{bare}"
    );
    assert!(bare.contains("scope=\"todo:read todo:write\""), "{bare}");
    assert!(!bare.contains("error="), "no token, no error: {bare}");
    let sse = client()
        .get(format!("{}/sse", server.base_url()))
        .bearer_auth("tmcp_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::UNAUTHORIZED);
    let sse = sse.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        sse.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{sse}"
    );
    assert!(sse.contains("error=\"invalid_token\""), "{sse}");
}

/// What Claude's or ChatGPT's remote connector does, played by the official Python SDK's
/// OAuth client with nothing configured but the user's signed-in browser: `/mcp` without a
/// token → 401 → protected resource metadata → Better Auth's metadata → dynamic registration
/// → authorization with PKCE and `resource` → consent → token → every tool.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdks_oauth_client_discovers_signs_in_and_uses_every_tool() {
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}/mcp");
    let auth = BetterAuth::start(&public_url, OTHER_RESOURCE).await;
    let db = PgTestDb::new().await;
    let issuer = auth.issuer();
    let server = serve_as_resource(&db, port, &issuer).await;
    let alice = auth.sign_up("alice").await;
    // Every tool's sample call (tests/support/samples.rs), on rows the script plants first.
    let calls = samples::python_script();
    let session = PyClient::streamable(&server)
        .oauth_cookie(&alice.cookie)
        .run(&calls)
        .await;
    for result in &session.calls {
        result.ok();
    }
    let mut called: Vec<&str> = session.calls.iter().map(|c| c.tool.as_str()).collect();
    called.sort();
    called.dedup();
    let mut every = TOOL_NAMES.clone();
    every.sort();
    assert_eq!(called, every, "the script calls every tool");

    // The SDK found Better Auth from todo-mcp's metadata and asked for this resource.
    let oauth = &session.connected["oauth"];
    let authorize = oauth["authorize"].as_str().expect("authorize URL");
    assert!(
        authorize.starts_with(&format!("{issuer}/oauth2/authorize?")),
        "{authorize}"
    );
    let asked = reqwest::Url::parse(authorize).unwrap();
    let param = |name: &str| {
        asked
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("resource").as_deref(), Some(public_url.as_str()));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    let scope = param("scope").unwrap_or_default();
    assert!(
        scope.contains("todo:read") && scope.contains("todo:write"),
        "{scope}"
    );
    // The token it got: Better Auth's, bound to todo-mcp, for Alice.
    let token = &oauth["token"];
    assert_eq!(token["header"]["typ"], "at+jwt", "{token}");
    assert_eq!(token["header"]["alg"], "EdDSA", "{token}");
    assert_eq!(token["claims"]["iss"], issuer.as_str(), "{token}");
    assert_eq!(token["claims"]["aud"], public_url.as_str(), "{token}");
    assert_eq!(token["claims"]["sub"], alice.user_id.as_str(), "{token}");
    // It registered itself (dynamic client registration), and acted as Alice.
    let clients = auth
        .db()
        .query_json(r#"SELECT name FROM "oauthClient""#)
        .await;
    assert_eq!(clients, [json!({ "name": "todo-mcp tests: Python SDK" })]);
    let owners = db
        .query_json("SELECT DISTINCT user_id FROM conversations")
        .await;
    assert_eq!(owners, [json!({ "user_id": alice.user_id })]);
}
