"""Response headers every answer carries: the one place security headers are set."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The hardened set (Content-Security-Policy, Referrer-Policy, frame-ancestors) belongs here
# too; the pages keep every script in static files so that a strict policy can be set.
DEFAULT_HEADERS: Mapping[str, str] = {"X-Content-Type-Options": "nosniff"}


class ResponseHeaders:
    def __init__(self, app: ASGIApp, *, headers: Mapping[str, str] = DEFAULT_HEADERS) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    response_headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
