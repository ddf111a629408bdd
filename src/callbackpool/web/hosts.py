"""The ``Host`` header: only the service's own hosts are answered, and no URL the service
writes is built from it.

A request naming another host (``allowedHosts``; by default ``baseUrl``'s host and loopback's)
is refused with 400 before any route sees it, except the health probes, which orchestrators
send to a bare address. Pages name their assets by path (``asset``), and the redirect that
adds or drops a trailing slash goes to ``baseUrl``, so a forged Host can neither poison a
cache with another site's script nor send a customer elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

UNCHECKED_PATHS = frozenset({"/healthz", "/readyz"})


class AllowedHosts:
    """400 for a request whose Host is not one of ``hosts`` ("*" allows any, "*.example.com"
    its subdomains)."""

    def __init__(self, app: ASGIApp, *, hosts: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = frozenset(host for host in hosts if not host.startswith("*"))
        self.suffixes = tuple(host[1:] for host in hosts if host.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http" or scope["path"] in UNCHECKED_PATHS:
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        if host in self.exact or (host and host.endswith(self.suffixes)):
            await self.app(scope, receive, send)
            return
        answer = JSONResponse(
            {"success": False, "message": "The Host header names no host this service answers"},
            status_code=400,
        )
        await answer(scope, receive, send)


def host_name(header: str) -> str:
    """``Example.com:8000`` → ``example.com``; ``[::1]:8000`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def redirect_slashes_to(router: Router, base_url: str) -> None:
    """Starlette's trailing-slash redirect (a path that matches no route but would with its
    trailing slash added or dropped), to ``base_url`` instead of the request's Host."""
    not_found = router.default
    router.redirect_slashes = False
    base = base_url.rstrip("/")

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = path.rstrip("/") if path.endswith("/") else f"{path}/"
            toggled = {**scope, "path": other}
            if any(route.matches(toggled)[0] is not Match.NONE for route in router.routes):
                query = scope.get("query_string", b"").decode("latin-1")
                location = f"{base}{other}" + (f"?{query}" if query else "")
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = default
