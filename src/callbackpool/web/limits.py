"""Limits on what a client may ask: the request body (a body over ``MAX_BODY_BYTES`` is
answered 413) and the rate of create-token requests (``RateLimiter``, answered 429).

The body limit is enforced as the body is read, so a declared ``Content-Length`` and a
chunked body are refused alike, and an endpoint that never reads a body is not disturbed.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RequestTooLarge

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.limit:
                raise RequestTooLarge(self.limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise RequestTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class RateLimiter:
    """At most ``per_minute`` requests a client, as a token bucket: a full minute's worth may
    come at once, then one more every ``60 / per_minute`` seconds. A refused request costs
    nothing, so a client that keeps trying too fast is let in as soon as it may be.

    The buckets live in this process: with several instances of the service behind a
    balancer a client may get up to that many times the rate (docs/security.md says why the
    limit is not kept in the shared database). Memory is bounded: a full bucket is forgotten,
    and past ``max_clients`` the longest idle are.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.interval = 60.0 / per_minute  # seconds a token takes to come back
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, client: str) -> float | None:
        """Count a request of ``client``: None if it may go ahead, else the seconds until it
        may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) / self.interval)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                self._forget_idle(now)
                return None
            self._buckets[client] = (tokens, now)
            return (1 - tokens) * self.interval

    def _forget_idle(self, now: float) -> None:
        refill = self.capacity * self.interval
        while self._buckets:
            oldest, (_, at) = next(iter(self._buckets.items()))
            if now - at < refill and len(self._buckets) <= self.max_clients:
                break
            del self._buckets[oldest]

    def __len__(self) -> int:
        return len(self._buckets)


def rate_key(address: str | None) -> str:
    """What the rate limit counts by: the client address, an IPv6 one by its /64 (a single
    host commonly holds a whole /64 and could otherwise take a fresh address per request)."""
    if address is None:
        return "-"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class SignInThrottle:
    """Failed sign-ins at the dashboard, per client: after ``free`` failures in a row each
    further one makes the client wait twice as long before it may try again (1 s, 2 s, 4 s, …
    up to ``max_wait`` seconds); a sign-in while it waits is refused unchecked. A success
    forgets the client's failures, and so does ``forget_after`` seconds without one.

    Like ``RateLimiter`` it lives in this process; memory is bounded by ``max_clients``.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        max_wait: float = 300.0,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.free = free
        self.max_wait = max_wait
        self.forget_after = forget_after
        self.clock = clock
        self.max_clients = max_clients
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float | None:
        """Seconds ``client`` must wait before its next sign-in is checked; None: it may try."""
        now = self.clock()
        with self._lock:
            _, last, until = self._failures.get(client, (0, now, now))
            if now - last > self.forget_after:
                self._failures.pop(client, None)
                return None
            return until - now if until > now else None

    def failed(self, client: str) -> float | None:
        """Count a failed sign-in of ``client``: the seconds it must now wait, or None."""
        now = self.clock()
        with self._lock:
            count, last, _ = self._failures.pop(client, (0, now, now))
            count = 1 if now - last > self.forget_after else count + 1
            wait = min(self.max_wait, 2.0 ** (count - self.free)) if count >= self.free else 0.0
            self._failures[client] = (count, now, now + wait)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            return wait or None

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
