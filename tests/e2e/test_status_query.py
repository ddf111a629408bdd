"""The sandbox's status query over real HTTP: a return its path cannot attribute (two
payments of one amount on the only slot) goes to the payment the gateway's record names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, start_server, stop_server
from .test_server import API, APPROVE, checkout, pay, status_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder: Path = tmp_path_factory.mktemp("status-query")
    process, server = start_server(
        folder, status_query=True, callbackPaths=["/api/v1/payments/callback/handler-1"]
    )
    yield server
    stop_server(process)


def test_an_ambiguous_return_goes_to_the_payment_the_gateway_names(
    one_slot_server: Server,
) -> None:
    with one_slot_server.client() as client:
        # A's customer reaches the card page, then A is cancelled (the window closed) …
        first, first_card = checkout(client, {"amount": 1500})
        assert client.post(f"{API}/cancel-token/{first}").status_code == 200
        # … and B, of the same amount, takes the only slot over.
        second, _ = checkout(client, {"amount": 1500})
        # A's customer pays after all: the return cannot be told from B's by its path.
        back = client.get(pay(client, first_card, APPROVE).headers["location"])
        assert back.status_code == 303
        assert back.headers["location"].startswith("/payment-success?ref=CB-")
        paid, waiting = status_of(client, first), status_of(client, second)
        assert (paid["status"], paid["late"]) == ("completed", True)
        assert waiting["status"] == "pending"  # B was never disturbed
    log = one_slot_server.log.read_text()
    assert f"the gateway's record names payment {first[:8]}" in log
    # The operator sees what the gateway said of the return.
    with one_slot_server.client() as client:
        answer = client.get(
            "/api/v1/admin/callbacks",
            headers={"Authorization": f"Bearer {one_slot_server.admin_token}"},
        )
    [stored] = answer.json()["callbacks"]
    assert (stored["outcome"], stored["paymentToken"], stored["queryAttempts"]) == (
        "applied",
        first,
        1,
    )
    assert stored["queryAnswer"] == f"the gateway's record names payment {first[:8]}…"
