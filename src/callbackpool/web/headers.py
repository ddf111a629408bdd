"""Response headers every answer carries: the one place security headers are set.

Pages keep every script in ``static/`` (no inline script, no inline event handler), so the
Content-Security-Policy can be strict: scripts, styles and fetches from this origin only;
forms posted only here, to the gateway's hosted form, to the callback URLs and, by their
redirects, to the shops' origins; framed only by this origin (the sandbox's "return twice"
loads a return into a frame of its own page).
A response that needs another policy sets its own (the API documentation does); the
middleware never overrides a header a response already has.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..compose import form_action_url
from ..config import Settings

# Responses under these paths may be cached (static files); all others are not stored.
CACHEABLE_PREFIXES = ("/static/",)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(
    *, form_targets: tuple[str, ...] = (), scripts: tuple[str, ...] = (), styles: str = "'self'"
) -> str:
    """The pages' policy; ``form_targets`` are the origins forms may be posted to besides
    this one, ``scripts`` the origins scripts may come from besides this one."""
    directives = {
        "default-src": "'none'",
        "script-src": " ".join(("'self'", *scripts)),
        "style-src": styles,
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "form-action": " ".join(("'self'", *dict.fromkeys(form_targets))),
        "frame-src": "'self'",
        "frame-ancestors": "'self'",
        "base-uri": "'none'",
        "object-src": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers of every answer of the service ``settings`` describe."""
    policy = content_security_policy(
        # The checkout posts the hosted form to the gateway; the gateway (or the sandbox's
        # return page) sends the browser back to the callback URLs under baseUrl, and those
        # (and the hosted page's Cancel) on to the shop: form-action holds for redirects too.
        form_targets=(
            origin(form_action_url(settings)),
            origin(settings.base_url),
            *settings.shop_origins,
        ),
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        # Same-origin requests keep their full Referer (and their real Origin, which the
        # cross-site check of browser POSTs reads); other sites get the origin alone, never a
        # page's query (a receipt key).
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "X-Frame-Options": "SAMEORIGIN",  # frame-ancestors, for browsers that predate it
    }
    if urlsplit(settings.base_url).scheme == "https":
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


class ResponseHeaders:
    def __init__(self, app: ASGIApp, *, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith(CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    response_headers.setdefault(name, value)
                if not cacheable:
                    # Answers carry tokens, receipts and payment states: no cache keeps them.
                    response_headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
