"""The HTTP status query client against a small server on the loopback: what it reads, and
that every way the gateway can fail becomes StatusQueryFailed, within the timeout."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from callbackpool.domain.gateway import GatewayTransaction, StatusQueryFailed
from callbackpool.gateways.status_query import MAX_ANSWER_BYTES, HttpStatusQuery

KEY = "query-key"
RECORD = {
    "PNRef": "804322218",
    "MerchantID": "demoMerchantWEB",
    "OrderID": "55016041050",
    "Amount": "10.00",
    "Result": "0",
    "custom": {"custom1": "the-payment-token"},
}


class Gateway(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        seen = self.server.seen  # type: ignore[attr-defined]
        seen.append((self.path, self.headers.get("Authorization")))
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "slow":
            time.sleep(1)
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, b'{"error": "authentication required"}')
            return
        pn_ref = parse_qs(urlsplit(self.path).query).get("PNRef", [""])[0]
        bodies = {
            "ok": json.dumps({**RECORD, "PNRef": pn_ref}).encode(),
            "garbage": b"<html>maintenance</html>",
            "huge": b'{"x": "' + b"x" * (MAX_ANSWER_BYTES + 10) + b'"}',
            "list": b"[]",
            "no-result": json.dumps({"PNRef": pn_ref}).encode(),
            "bad-amount": json.dumps({**RECORD, "Amount": "ten"}).encode(),
            "slow": json.dumps(RECORD).encode(),
        }
        if mode == "error":
            self._send(503, b"{}")
        elif pn_ref == "unknown":
            self._send(404, b'{"error": "unknown transaction"}')
        else:
            self._send(200, bodies[mode])

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    httpd.mode = "ok"  # type: ignore[attr-defined]
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def client(server: ThreadingHTTPServer, **options: Any) -> HttpStatusQuery:
    host, port = server.server_address[:2]
    settings: dict[str, Any] = {
        "url": f"http://{host!s}:{port}/sandbox/query",
        "api_key": KEY,
        "token_field": "custom1",
        "currency": "USD",
        "timeout": 1.0,
        **options,
    }
    return HttpStatusQuery(**settings)


def test_the_record_is_read_with_the_payment_token_from_its_custom_field(
    server: ThreadingHTTPServer,
) -> None:
    found = client(server).transaction("804 322&218")
    assert found == GatewayTransaction(
        pn_ref="804 322&218",
        result_code="0",
        amount=1000,
        merchant_id="demoMerchantWEB",
        payment_token="the-payment-token",
    )
    [(path, authorization)] = server.seen  # type: ignore[attr-defined]
    assert path == "/sandbox/query?PNRef=804+322%26218"
    assert authorization == f"Bearer {KEY}"


def test_another_custom_field_names_no_payment(server: ThreadingHTTPServer) -> None:
    found = client(server, token_field="custom2").transaction("1")
    assert found is not None
    assert found.payment_token is None


def test_an_unknown_transaction_is_none(server: ThreadingHTTPServer) -> None:
    assert client(server).transaction("unknown") is None


@pytest.mark.parametrize(
    ("mode", "options", "reason"),
    [
        ("error", {}, "HTTP 503"),
        ("ok", {"api_key": "wrong"}, "HTTP 401"),
        ("garbage", {}, "not JSON"),
        ("huge", {}, "too large"),
        ("list", {}, "not a JSON object"),
        ("no-result", {}, "lacks PNRef or Result"),
        ("bad-amount", {}, "unreadable Amount"),
        ("slow", {"timeout": 0.3}, "did not answer"),
    ],
)
def test_every_failure_is_a_status_query_failure(
    server: ThreadingHTTPServer, mode: str, options: dict[str, Any], reason: str
) -> None:
    server.mode = mode  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(StatusQueryFailed, match=reason):
        client(server, **options).transaction("1")
    assert time.monotonic() - started < 1.5


def test_a_gateway_that_is_not_there_is_a_failure() -> None:
    query = HttpStatusQuery(
        url="http://127.0.0.1:9/query", api_key=None, token_field="custom1", currency="USD"
    )
    with pytest.raises(StatusQueryFailed, match="did not answer"):
        query.transaction("1")
