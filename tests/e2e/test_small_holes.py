"""The small holes of "Hostile customers", each over real HTTP against ``callbackpool serve``
(with ``--access-log``), on SQLite and on PostgreSQL: invalid text is a 422, a non-ASCII
form hash is the sandbox's own refusal, failed sign-ins are held back, sign-out revokes the
session, the access log masks tokens, and unknown Host headers are refused."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from callbackpool.web.auth import SESSION_COOKIE

from ..conftest import DATABASES
from ..databases import url_of
from ..servers import stop_server
from .conftest import ADMIN_TOKEN, Server, start_server

pytestmark = pytest.mark.slow

API = "/api/v1/payments"
MERCHANT_KEY = "e2e-merchant-key-holes-0123456789"
# A lone surrogate, as JSON writes it: json.loads takes it, no UTF-8 database stores it.
LONE_SURROGATE = '"\\ud800"'


@dataclass(frozen=True)
class Service:
    database: str
    server: Server

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=30, **options)

    def log(self) -> str:
        return self.server.log.read_text(errors="replace")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    database: str = request.param
    config: dict[str, Any] = {
        "merchantApiKeys": [MERCHANT_KEY],
        "shopOrigins": ["https://shop.example"],
        "createTokenRatePerMinute": 0,
        # Each test signs in from an address of its own, as a proxy on loopback says.
        "trustedProxies": ["127.0.0.1/32"],
    }
    kept: str | None = None
    if database == "postgres":
        config["databaseUrl"] = url_of(DATABASES.create())
        kept = DATABASES.created.pop()
    try:
        folder = tmp_path_factory.mktemp(f"holes-{database}")
        process, server = start_server(folder, arguments=["--access-log"], **config)
        try:
            yield Service(database=database, server=server)
        finally:
            stop_server(process)
        log = server.log.read_text()
        assert process.returncode in (0, -signal.SIGTERM), log
        assert "Traceback" not in log
    finally:
        if kept is not None:
            DATABASES.created.append(kept)
            DATABASES.drop_created()


def post_json(client: httpx.Client, path: str, text: str, **headers: str) -> httpx.Response:
    return client.post(
        path, content=text.encode(), headers={"Content-Type": "application/json", **headers}
    )


# --- 1. invalid text is a 422 naming the field --------------------------------------------


def test_a_lone_surrogate_in_the_customers_email_is_a_422_naming_the_field(
    service: Service,
) -> None:
    body = '{"amount": 1000, "customerData": {"email": ' + LONE_SURROGATE + "}}"
    with service.client() as client:
        answer = post_json(client, f"{API}/create-token", body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == {
            "customerData.email": "is not valid text (a lone UTF-16 surrogate)"
        }
        # Nothing was leased.
        stats = client.get(
            f"{API}/pool-stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()["stats"]
        assert stats["locked"] == 0


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("orderReference", '{"amount": 100, "orderReference": ' + LONE_SURROGATE),
        (
            "metadata.note",
            '{"amount": 100, "orderReference": "1", "metadata": {"note": ' + LONE_SURROGATE + "}",
        ),
        (
            "customer.name",
            '{"amount": 100, "orderReference": "1", "customer": {"name": ' + LONE_SURROGATE + "}",
        ),
        (
            "metadata",
            '{"amount": 100, "orderReference": "1", "metadata": {' + LONE_SURROGATE + ': "x"}',
        ),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_shop_payment_is_a_422_naming_the_field(
    service: Service, field: str, body: str
) -> None:
    urls = ', "successUrl": "https://shop.example/ok", "cancelUrl": "https://shop.example/no"}'
    with service.client(headers={"Authorization": f"Bearer {MERCHANT_KEY}"}) as client:
        answer = post_json(client, API, body + urls)
        assert answer.status_code == 422, answer.text
        assert field in answer.json()["errors"]
        assert client.get(API).json()["data"] == []


def test_a_lone_surrogate_in_an_operators_decision_is_a_422(service: Service) -> None:
    body = '{"status": "expired", "reason": ' + LONE_SURROGATE + ', "operator": "ann"}'
    with service.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        answer = post_json(client, "/api/v1/admin/payments/no-such-token/close", body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == {"reason": "is not valid text (a lone UTF-16 surrogate)"}


def test_a_nul_in_text_that_reaches_the_database_is_a_422_naming_the_field(
    service: Service,
) -> None:
    # PostgreSQL's text refuses NUL: each of these was a 500 there.
    urls = {"successUrl": "https://shop.example/ok", "cancelUrl": "https://shop.example/no"}
    with service.client() as client:
        answer = client.post(
            f"{API}/create-token", json={"amount": 1000, "customerData": {"email": "a\x00@b.c"}}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == {"customerData.email": "must not contain a NUL character"}
    with service.client(headers={"Authorization": f"Bearer {MERCHANT_KEY}"}) as client:
        answer = client.post(API, json={"amount": 100, "orderReference": "a\x00", **urls})
        assert answer.status_code == 422, answer.text
        assert "orderReference" in answer.json()["errors"]
        listed = client.get(API, params={"orderReference": "a\x00"})
        assert listed.status_code == 422, listed.text
        assert "orderReference" in listed.json()["errors"]
    with service.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        answer = client.post(
            "/api/v1/admin/slots/sideline",
            json={"path": "handler-1", "reason": "a\x00", "operator": "ann"},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == {"reason": "must not contain a NUL character"}


@pytest.mark.parametrize("path", ["check-status", "ticket"])
def test_invalid_text_in_a_token_or_ticket_path_is_a_404(service: Service, path: str) -> None:
    with service.client() as client:
        for raw in ("%ED%A0%80", "%00", "%FF%FE", "%C3%A9t%C3%A9"):
            answer = client.get(f"{API}/{path}/{raw}")
            assert answer.status_code == 404, (raw, answer.text)


# --- 2. the sandbox's form refuses a non-ASCII hash -------------------------------------


def test_a_non_ascii_hash_on_the_sandbox_form_is_the_sandboxs_own_refusal(
    service: Service,
) -> None:
    with service.client() as client:
        config = client.get(f"{API}/config").json()
        form = {
            "txnType": "FORM",
            "merchantID": config["merchantId"],
            "formID": config["formId"],
            "hash": "c70152\u00e93a33721cdbe999f7a4406a0a98",
            "ReturnURL": f"{service.server.base_url}{API}/callback/handler-1",
            "pxQty1": "1",
        }
        answer = client.post("/sandbox/transaction.asp", data=form)
        assert answer.status_code == 400, answer.text
        assert "Invalid hash" in answer.text


# --- 3. failed sign-ins are held back ----------------------------------------------------


def test_a_burst_of_wrong_sign_ins_is_held_back_with_retry_after(service: Service) -> None:
    guesser = {"X-Forwarded-For": "192.0.2.66"}

    def sign_in(n: int) -> httpx.Response:
        with service.client(headers=guesser) as client:
            return client.post("/admin/login", data={"name": "mallory", "token": f"guess-{n:04d}"})

    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(sign_in, range(300)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429}
    # Five failures are free; then at most one more check a second, while the burst lasts.
    assert statuses.count(401) <= 12, statuses
    assert statuses.count(429) >= 280
    held = next(answer for answer in answers if answer.status_code == 429)
    assert int(held.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in held.text
    # The right token is not even checked while the client waits; another client signs in.
    with service.client(headers=guesser) as client:
        right = client.post("/admin/login", data={"name": "ann", "token": ADMIN_TOKEN})
    assert right.status_code == 429
    with service.client(headers={"X-Forwarded-For": "192.0.2.67"}) as client:
        other = client.post("/admin/login", data={"name": "ann", "token": ADMIN_TOKEN})
    assert other.status_code == 303
    log = service.log()
    assert "sign-ins from 192.0.2.66 held back" in log
    assert "guess-0" not in log
    assert ADMIN_TOKEN not in log


# --- 4. signing out revokes the session ---------------------------------------------------


def test_after_signing_out_the_old_cookie_opens_nothing(service: Service) -> None:
    with service.client(headers={"X-Forwarded-For": "192.0.2.44"}) as client:
        signed_in = client.post("/admin/login", data={"name": "ann", "token": ADMIN_TOKEN})
        assert signed_in.status_code == 303
        cookie = signed_in.cookies[SESSION_COOKIE]
        page = client.get("/admin")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        out = client.post("/admin/logout", data={"csrf": csrf.group(1)})
        assert out.status_code == 303
    # The cookie kept (copied, stolen) is refused: the login form again.
    with service.client(cookies={SESSION_COOKIE: cookie}) as client:
        refused = client.get("/admin")
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/admin/login")
    assert "signed-out session" in service.log()


# --- 5. the access log masks tokens ------------------------------------------------------


def test_the_access_log_shows_no_whole_token(service: Service) -> None:
    with service.client() as client:
        created = client.post(f"{API}/create-token", json={"amount": 1000})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert client.get(f"{API}/check-status/{token}").status_code == 200
        assert client.post(f"{API}/cancel-token/{token}").status_code == 200
        ticket = "t" * 40
        assert client.get(f"{API}/ticket/{ticket}").status_code == 404
        assert client.post(f"{API}/cancel-ticket/{ticket}").status_code == 404
        receipt = "r" * 32
        client.get("/payment-success", params={"ref": "CB-1", "receipt": receipt})
    with service.client(headers={"Authorization": f"Bearer {MERCHANT_KEY}"}) as client:
        shop = client.post(
            API,
            json={
                "amount": 500,
                "orderReference": "holes-5",
                "successUrl": "https://shop.example/ok",
                "cancelUrl": "https://shop.example/no",
            },
        ).json()
    shop_token = shop["checkoutUrl"].rsplit("/", 1)[1]
    with service.client() as client:
        assert client.get(f"/pay/{shop_token}").status_code == 200
    log = service.log()
    for secret in (token, ticket, receipt, shop_token):
        assert secret not in log
    assert f"/check-status/{token[:8]}…" in log
    assert f"/cancel-token/{token[:8]}…" in log
    assert f"/pay/{shop_token[:8]}…" in log
    assert f"receipt={receipt[:8]}…" in log


# --- 6. the Host header ------------------------------------------------------------------


def test_an_unknown_host_is_refused_and_loopback_names_are_answered(service: Service) -> None:
    port = service.server.base_url.rsplit(":", 1)[1]
    with service.client() as client:
        evil = client.get("/checkout", headers={"Host": "evil.example"})
        assert evil.status_code == 400
        assert evil.json() == {
            "success": False,
            "message": "The Host header names no host this service answers",
        }
        assert (
            client.get(f"{API}/config", headers={"Host": f"evil.example:{port}"}).status_code == 400
        )
        # The health probes answer whatever the Host (orchestrators send a bare address).
        assert client.get("/healthz", headers={"Host": "10.1.2.3"}).status_code == 200
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            f"LOCALHOST:{port}",
        ):
            assert client.get("/checkout", headers={"Host": host}).status_code == 200, host


def test_asset_urls_and_the_slash_redirect_do_not_copy_the_host(service: Service) -> None:
    port = service.server.base_url.rsplit(":", 1)[1]
    with service.client() as client:
        page = client.get("/checkout", headers={"Host": f"localhost:{port}"})
        assert page.status_code == 200
        assert "localhost" not in page.text
        assert 'src="/static/checkout.js"' in page.text
        assert 'href="/static/style.css"' in page.text
        moved = client.get("/admin/?window=1h", headers={"Host": f"localhost:{port}"})
        assert moved.status_code == 307
        assert moved.headers["location"] == f"{service.server.base_url}/admin?window=1h"
