"""Operator endpoints (issue 5): the token is compared in constant time, and every failed
attempt is logged, with where it came from and never with what was tried."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest

from callbackpool.web import auth

from .conftest import ADMIN_TOKEN

pytestmark = pytest.mark.anyio

STATS = "/api/v1/payments/pool-stats"
TRIED = "Bearer a-guess-at-the-operator-token"


@pytest.mark.parametrize("path", [STATS, "/metrics", "/api/v1/admin/status"])
@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credentials"),
        ({"Authorization": TRIED}, "wrong token"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "not Bearer"),
    ],
)
async def test_failed_attempts_are_logged_without_the_token(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    why: str,
    path: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="callbackpool.web"):
        response = await client.get(path, headers=headers)
    assert response.status_code == 401
    [record] = [r for r in caplog.records if "operator authentication failed" in r.getMessage()]
    if path == "/metrics" and why == "not Bearer":
        why = "no credentials"  # a Basic header carries no Bearer token at all
    assert record.getMessage() == (
        f"operator authentication failed: GET {path} from 203.0.113.7 ({why})"
    )
    assert "a-guess" not in caplog.text
    assert ADMIN_TOKEN not in caplog.text


async def test_a_success_is_not_logged_as_a_failure(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="callbackpool.web"):
        response = await client.get(STATS, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert "operator authentication failed" not in caplog.text


async def test_the_token_is_compared_in_constant_time(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    assert (await client.get(STATS, headers={"Authorization": TRIED})).status_code == 401
    ok = await client.get(STATS, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200
    assert compared == [
        (b"a-guess-at-the-operator-token", ADMIN_TOKEN.encode()),
        (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()),
    ]
