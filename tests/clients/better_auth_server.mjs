// A real Better Auth authorization server for todo-mcp's tests (tests/support/better_auth.rs).
//
// Better Auth itself (npm `better-auth`, its JWT plugin and `@better-auth/mcp`'s OAuth
// provider) on its own PostgreSQL database, served by node's http. Around it, only what a
// test needs to observe or steer the real thing:
//   GET  /test/stats      how many times the JWKS was fetched;
//   POST /test/jwks-down  {"down": true|false}: the JWKS answers 503 while down;
//   POST /test/sign       {"payload": {...}, "alg": "EdDSA"|"ES256"|"RS256"}: Better Auth's own
//                         server-side `signJWT` (its keys, its code) with the claims a test needs;
//   GET  /login, /consent pages the OAuth flow redirects a browser to (a test plays the browser).
//
// Configuration (environment): DATABASE_URL (PostgreSQL, migrated here), RESOURCE (todo-mcp's
// public URL, the MCP resource), OTHER_RESOURCE (a second resource Better Auth issues tokens
// for, which todo-mcp must refuse), PORT (0 for any). Prints one JSON line {"base": URL} on stdout
// once it listens; exits when stdin closes, so it never outlives its test.

import http from "node:http";
import { betterAuth } from "better-auth";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import { signJWT } from "better-auth/plugins/jwt";
import { getMigrations } from "better-auth/db/migration";
import { mcp } from "@better-auth/mcp";
import pg from "pg";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`better_auth_server: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const resource = env("RESOURCE");
const otherResource = env("OTHER_RESOURCE");
const databaseUrl = env("DATABASE_URL");
const port = Number(process.env.PORT ?? "0");

const server = http.createServer();
await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
// Several algorithms, so a test can have a token signed with each (`/test/sign`).
const jwtOptions = { jwks: { keyPairConfigs: [{ alg: "ES256" }, { alg: "RS256" }] } };
const options = {
  baseURL: base,
  secret: "todo-mcp-tests-better-auth-secret-0123456789",
  database: pool,
  emailAndPassword: { enabled: true },
  trustedOrigins: [base],
  logger: { level: "error" },
  plugins: [
    jwt(jwtOptions),
    mcp({
      loginPage: "/login",
      consentPage: "/consent",
      resource,
      scopes: ["openid", "profile", "email", "offline_access", "todo:read", "todo:write"],
      resources: [otherResource],
      clientRegistrationDefaultResources: [otherResource],
      allowDynamicClientRegistration: true,
      allowUnauthenticatedClientRegistration: true,
    }),
  ],
};
// Better Auth's own programmatic migrations, before it first looks at its tables.
const { runMigrations } = await getMigrations(options);
await runMigrations();
const auth = betterAuth(options);

const handler = toNodeHandler(auth);
let jwksFetches = 0;
let jwksDown = false;

const readJson = (req) =>
  new Promise((resolve, reject) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      try {
        resolve(body ? JSON.parse(body) : {});
      } catch (error) {
        reject(error);
      }
    });
  });

const send = (res, status, value) => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
};

server.on("request", async (req, res) => {
  const path = new URL(req.url, base).pathname;
  try {
    if (path === "/api/auth/jwks") {
      jwksFetches += 1;
      if (jwksDown) return send(res, 503, { error: "down for the test" });
    }
    if (path === "/test/stats") return send(res, 200, { jwks_fetches: jwksFetches });
    if (path === "/test/jwks-down" && req.method === "POST") {
      jwksDown = Boolean((await readJson(req)).down);
      return send(res, 200, { down: jwksDown });
    }
    if (path === "/test/sign" && req.method === "POST") {
      const { payload, alg } = await readJson(req);
      const context = await auth.$context;
      const token = await signJWT({ context }, { options: jwtOptions, payload, signingAlgorithm: alg });
      return send(res, 200, { token });
    }
    if (path === "/login" || path === "/consent") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(`<!doctype html><title>${path.slice(1)}</title>`);
    }
    return handler(req, res);
  } catch (error) {
    console.error(`better_auth_server: ${req.method} ${path}: ${error?.stack ?? error}`);
    return send(res, 500, { error: String(error?.message ?? error) });
  }
});

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
console.log(JSON.stringify({ base }));
