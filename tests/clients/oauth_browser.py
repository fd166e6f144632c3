"""The OAuth side of mcp_client.py's `--oauth-cookie`: the official SDK's OAuth client
(`mcp.client.auth.OAuthClientProvider`) with a "browser" that is the user's, signed in at
Better Auth, and accepts its consent page as the user would."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# A loopback redirect nobody listens on: the browser reads the code from the redirect itself.
REDIRECT_URI = "http://127.0.0.1:9/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """The user's browser: opens the authorization URL with the session cookie, accepts the
    consent page, and keeps the code the authorization server redirects back with."""

    def __init__(self, cookie: str) -> None:
        self.cookie = cookie
        self.authorize: str | None = None
        self.result: AuthorizationCodeResult | None = None

    async def open(self, authorization_url: str) -> None:
        self.authorize = authorization_url
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            response = await http.get(authorization_url, headers={"cookie": self.cookie})
            if response.status_code not in (302, 303):
                raise RuntimeError(f"authorize answered {response.status_code}: {response.text}")
            consent = urlparse(urljoin(authorization_url, response.headers["location"]))
            if consent.path != "/consent":
                raise RuntimeError(f"authorize sent the browser to {consent.geturl()}, not to consent")
            origin = f"{consent.scheme}://{consent.netloc}"
            accepted = await http.post(
                f"{origin}/api/auth/oauth2/consent",
                headers={"cookie": self.cookie, "origin": origin},
                json={"accept": True, "oauth_query": consent.query},
            )
            if accepted.status_code != 200:
                raise RuntimeError(f"consent answered {accepted.status_code}: {accepted.text}")
            callback = urlparse(accepted.json()["url"])
            query = {k: v[0] for k, v in parse_qs(callback.query).items()}
            if "code" not in query:
                raise RuntimeError(f"no code in the redirect {callback.geturl()}")
            self.result = AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("the callback came before the browser was sent anywhere")
        return self.result


class OAuthRun:
    def __init__(self, browser: Browser, storage: MemoryStorage) -> None:
        self.browser = browser
        self.storage = storage

    def report(self) -> dict[str, Any]:
        if self.storage.tokens is None:
            raise RuntimeError("connected without an OAuth token: the server asked for none")
        header, claims = (_decode(part) for part in self.storage.tokens.access_token.split(".")[:2])
        return {"authorize": self.browser.authorize, "token": {"header": header, "claims": claims}}


def _decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@asynccontextmanager
async def signed_in_http_client(server_url: str, cookie: str) -> AsyncIterator[tuple[httpx2.AsyncClient, OAuthRun]]:
    storage = MemoryStorage()
    browser = Browser(cookie)
    provider = OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(
            client_name="todo-mcp tests: Python SDK",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30, follow_redirects=True) as http:
        yield http, OAuthRun(browser, storage)
