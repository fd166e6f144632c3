#!/usr/bin/env python3
"""Drive todo-mcp with the official MCP Python SDK (`mcp==2.3.0`), for the Rust tests.

usage: mcp_client.py TRANSPORT TARGET [--token TOKEN] [--list-tools] [--timeout SECONDS]
                     [--env KEY=VALUE ...]

TRANSPORT and TARGET:
  streamable  TARGET is the Streamable HTTP URL (`.../mcp`). Uses `mcp.Client` in its default
              auto mode, which probes `server/discover` before falling back to `initialize`.
  sse         TARGET is the legacy SSE URL (`.../sse`). Uses `sse_client` + `ClientSession`.
  stdio       TARGET is the todo-mcp binary, launched as `TARGET stdio` by `mcp.Client`; the
              token becomes TODO_MCP_TOKEN and each `--env KEY=VALUE` is passed to it.

Over HTTP the token is sent as `Authorization: Bearer TOKEN`; without `--token` no
Authorization header is sent.

With `--oauth-cookie COOKIE` (streamable only) the SDK's OAuth client does what a remote
connector does, with nothing configured by hand: it calls TARGET without a token, follows the
401 to the protected resource metadata, finds the authorization server, registers, sends the
user to authorize (PKCE, `resource`) and retries with the token. The "browser" here is the
user's, signed in at Better Auth (COOKIE is its session cookie): it opens the authorization URL
and accepts the consent page. The `connected` line then also has
`"oauth": {"authorize": URL, "token": {"header": {...}, "claims": {...}}}`.

Standard input holds a JSON list of tool calls, made in order in one session:
  [{"tool": "add_task", "arguments": {"title": "milk"}}, ...]
A string argument of the form "${N.path.to.field}" is replaced by that field of the
structured result of call N (0-based; list indices are numbers), e.g. "${0.task.id}".

Standard output gets JSON lines:
  {"connected": {"protocol_version": "...", "server_name": "..."}}
  {"tools": [ {name, title, description, inputSchema, outputSchema, annotations}, ... ]}
      (with --list-tools, right after connecting)
  {"tool": NAME, "arguments": {...}, "is_error": BOOL, "structured": ..., "text": "..."}
      (one per call; `arguments` as sent, references resolved)

Exit codes: 0 every call was answered (tool errors, `is_error: true`, included);
2 a protocol or transport failure (HTTP 401, JSON-RPC error, invalid result ...);
3 the whole run took longer than --timeout; 64 bad usage or input. The reason goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError

EXIT_PROTOCOL = 2
EXIT_TIMEOUT = 3
EXIT_USAGE = 64


class UsageError(Exception):
    """Bad arguments or a bad call script: not the server's fault."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("transport", choices=["streamable", "sse", "stdio"])
    parser.add_argument("target", help="URL (streamable, sse) or the todo-mcp binary (stdio)")
    parser.add_argument("--token", help="bearer token (HTTP) or TODO_MCP_TOKEN (stdio)")
    parser.add_argument("--list-tools", action="store_true", help="print tools/list after connecting")
    parser.add_argument("--timeout", type=float, default=60.0, help="limit for the whole run, seconds")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="stdio only")
    parser.add_argument("--oauth-cookie", help="sign in by OAuth as the user of this Better Auth session")
    return parser.parse_args()


def read_calls() -> list[dict[str, Any]]:
    try:
        calls = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        raise UsageError(f"stdin is not JSON: {e}") from e
    if not isinstance(calls, list):
        raise UsageError("stdin must hold a JSON list of calls")
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
            raise UsageError(f"call {i} must be an object with a string `tool`: {call!r}")
        if not isinstance(call.get("arguments", {}), dict):
            raise UsageError(f"call {i}: `arguments` must be an object: {call!r}")
    return calls


def resolve(value: Any, results: list[dict[str, Any]]) -> Any:
    """Replaces "${N.path}" strings by fields of earlier structured results."""
    if isinstance(value, dict):
        return {k: resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, results) for v in value]
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        index, *path = value[2:-1].split(".")
        if not index.isdigit() or int(index) >= len(results):
            raise UsageError(f"{value}: no earlier call {index}")
        current: Any = results[int(index)]["structured"]
        for part in path:
            try:
                current = current[int(part)] if isinstance(current, list) else current[part]
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise UsageError(f"{value}: no `{part}` in {current!r}") from e
        return current
    return value


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


async def report_http_error(response: Any) -> None:
    if response.status_code >= 400:
        request = response.request
        print(
            f"mcp_client: HTTP {response.status_code} {response.reason_phrase} for {request.method} {request.url}",
            file=sys.stderr,
        )


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    """Yields (something with call_tool/list_tools, what the connection negotiated)."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token is not None else {}
    if args.oauth_cookie is not None:
        if args.transport != "streamable" or args.token is not None:
            raise UsageError("--oauth-cookie goes with streamable and without --token")
        from oauth_browser import signed_in_http_client

        async with signed_in_http_client(args.target, args.oauth_cookie) as (http, oauth):
            http.event_hooks["response"].append(report_http_error)
            transport = streamable_http_client(args.target, http_client=http)
            async with Client(transport, read_timeout_seconds=args.timeout) as client:
                info = client.server_info
                yield client, {
                    "protocol_version": client.protocol_version,
                    "server_name": info.name if info else None,
                    "oauth": oauth.report(),
                }
    elif args.transport == "streamable":
        async with create_mcp_http_client(headers=headers) as http:
            # The SDK turns an HTTP error carrying a JSON-RPC body into that JSON-RPC error,
            # dropping the status: say it on stderr so a failure names it.
            http.event_hooks["response"].append(report_http_error)
            transport = streamable_http_client(args.target, http_client=http)
            async with Client(transport, read_timeout_seconds=args.timeout) as client:
                info = client.server_info
                yield client, {
                    "protocol_version": client.protocol_version,
                    "server_name": info.name if info else None,
                }
    elif args.transport == "sse":
        async with sse_client(args.target, headers=headers, timeout=args.timeout) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=args.timeout) as session:
                init = await session.initialize()
                yield session, {
                    "protocol_version": init.protocol_version,
                    "server_name": init.server_info.name if init.server_info else None,
                }
    else:
        env = {}
        for pair in args.env:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UsageError(f"--env takes KEY=VALUE, got {pair!r}")
            env[key] = value
        if args.token is not None:
            env["TODO_MCP_TOKEN"] = args.token
        params = StdioServerParameters(command=args.target, args=["stdio"], env=env)
        async with Client(params, read_timeout_seconds=args.timeout) as client:
            info = client.server_info
            yield client, {
                "protocol_version": client.protocol_version,
                "server_name": info.name if info else None,
            }


async def run(args: argparse.Namespace, calls: list[dict[str, Any]]) -> None:
    async with connect(args) as (client, negotiated):
        emit({"connected": negotiated})
        if args.list_tools:
            listed = await client.list_tools()
            if listed.next_cursor is not None:
                raise UsageError("tools/list is paginated; this driver reads one page")
            emit({"tools": [tool.model_dump(by_alias=True, mode="json", exclude_unset=True) for tool in listed.tools]})
        results: list[dict[str, Any]] = []
        for call in calls:
            arguments = resolve(call.get("arguments", {}), results)
            result = await client.call_tool(call["tool"], arguments)
            line = {
                "tool": call["tool"],
                "arguments": arguments,
                "is_error": bool(result.is_error),
                "structured": result.structured_content,
                "text": text_of(result),
            }
            results.append(line)
            emit(line)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def describe(error: BaseException) -> str:
    if isinstance(error, MCPError):
        return f"JSON-RPC error {error.code}: {error.message}"
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        reason = getattr(response, "reason_phrase", "") or ""
        return f"HTTP {status} {reason}: {type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


def main() -> int:
    args = parse_args()
    try:
        calls = read_calls()
    except UsageError as e:
        print(f"mcp_client: {e}", file=sys.stderr)
        return EXIT_USAGE

    async def bounded() -> None:
        with anyio.fail_after(args.timeout):
            await run(args, calls)

    try:
        anyio.run(bounded)
    except BaseException as error:  # noqa: BLE001 - every failure is reported, none is hidden
        found = leaves(error)
        if any(isinstance(e, UsageError) for e in found):
            code = EXIT_USAGE
        elif any(isinstance(e, TimeoutError) for e in found):
            code = EXIT_TIMEOUT
        else:
            code = EXIT_PROTOCOL
        for leaf in found:
            print(f"mcp_client ({args.transport} {args.target}): {describe(leaf)}", file=sys.stderr)
        if code == EXIT_PROTOCOL:
            traceback.print_exception(error, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
