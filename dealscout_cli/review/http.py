"""The little HTTP the review app needs over raw ASGI: a parsed request, a response, and
the guards every request passes (the token, the Host, and for a POST the CSRF field and
where it came from).

Why each guard:
- The token: anything on this machine can reach 127.0.0.1 (another user, a browser tab
  on any site); the random token in the printed URL (then an HttpOnly, SameSite=Strict
  cookie) is what says the seller opened it.
- The Host header: a DNS-rebinding page (evil.example resolving to 127.0.0.1) sends its
  own name as Host; only 127.0.0.1, localhost and the bound address are served.
- A POST also needs the page's CSRF field and, where the browser sends them, an Origin of
  this server and `Sec-Fetch-Site: same-origin`: another site cannot make the seller's
  browser approve or edit anything, even with the cookie attached.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_COOKIE = "dealscout_review"
MAX_BODY = 256 * 1024  # a listing form is a few KB; nothing bigger is ever posted

# The page may load only its own script, style and images: a model's text that escaped the
# template escaping would still not run (no inline script, no other origin).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    # The token is in the first URL: no other site sees it. (Not no-referrer: with it Chromium
    # sends `Origin: null` on the page's own form posts, which the cross-site check refuses.)
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no cookie
            cookie = SimpleCookie()
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=_first_values(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            cookies={name: morsel.value for name, morsel in cookie.items()},
        )

    def param(self, name: str) -> str:
        return self.form.get(name, self.query.get(name, ""))


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def redirect(location: str, *, status: int = 303) -> Response:
    return Response(status, headers=[(b"location", location.encode("latin-1"))])


def text(status: int, message: str) -> Response:
    return Response(status, message.encode(), "text/plain; charset=utf-8")


async def read_form(receive: Receive) -> dict[str, str] | None:
    """An application/x-www-form-urlencoded body, or None when it is too big or cut off."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return _first_values(b"".join(chunks).decode("utf-8", "replace"))


def _first_values(encoded: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(encoded, keep_blank_values=True).items()}


def same_secret(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def host_allowed(request: Request, port: int) -> bool:
    host = request.headers.get("host", "")
    return host in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}


def cross_site(request: Request, port: int) -> bool:
    """Whether a POST came from another site (by the browser's own headers, where sent)."""
    origin = request.headers.get("origin")
    if origin is not None and origin not in {
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",
        f"http://[::1]:{port}",
    }:
        return True
    fetch_site = request.headers.get("sec-fetch-site")
    return fetch_site is not None and fetch_site not in ("same-origin", "none")
