"""The app over a real SQLite file, driven through httpx against its ASGI interface."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from callbackpool.config import Settings, load_settings
from callbackpool.web import create_app
from callbackpool.web.deps import Services

BASE_URL = "http://shop.test"
ADMIN_TOKEN = "operator-secret-token"
SANDBOX_SECRET = "sandbox-test-secret"
PATHS = [f"/api/v1/payments/callback/handler-{i}" for i in range(1, 11)]
CONFIG: dict[str, Any] = {
    "form": {
        "formId": "55015901455",
        "formHash": "c701523a33721cdbe999f7a4406a0a98",
        "items": [
            {"code": "WDF", "description": "Wash, dry and fold (per lb)", "price": "1.25"},
            {"code": "BAG", "description": "Laundry bag", "price": "10.00"},
            {"code": "AMT", "description": "Open amount (per cent)", "price": "0.01"},
        ],
    },
    "callbackPaths": PATHS,
    "lockTimeoutMinutes": 10,
    "baseUrl": BASE_URL,
    "merchantId": "demoMerchantWEB",
    "maxAmount": 500_000,
    "adminToken": ADMIN_TOKEN,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CALLBACKPOOL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings read from a configuration file like the example's, the database a file in
    the test's folder; keyword arguments replace keys of the file (camelCase)."""

    def build(**keys: Any) -> Settings:
        data = {**CONFIG, "databaseUrl": f"sqlite:///{tmp_path / 'pool.db'}", **keys}
        path = tmp_path / "paygistix-forms.json"
        path.write_text(json.dumps(data))
        return load_settings(path)

    return build


def sandbox_keys(secret: str = SANDBOX_SECRET, verify_with: str | None = None) -> dict[str, Any]:
    """Configuration keys that turn the sandbox on and verify its returns' hash."""
    return {
        "sandbox": {"enabled": True, "secret": secret},
        "callbackHash": {
            "secret": verify_with or secret,
            "fields": [
                "MerchantID",
                "OrderID",
                "Amount",
                "PNRef",
                "Result",
                "TxnType",
                "Last4",
                "ExpDate",
                "CardType",
                "AuthCode",
            ],
            "algorithm": "hmac-md5",
        },
    }


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client speaking to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_client(make_settings: SettingsFactory) -> ClientFactory:
    def build(**keys: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serving(create_app(make_settings(**keys)))

    return build


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as client:
        yield client


def services_of(client: httpx.AsyncClient) -> Services:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    services: Services = app.state.services
    return services


def gateway_return(
    *,
    amount: str = "10.00",
    pn_ref: str = "804322218",
    result: str = "0",
    merchant: str = "demoMerchantWEB",
) -> list[tuple[str, str]]:
    """A return as the real gateway sent one (PAYGISTIX.md), unsigned."""
    return [
        ("hash", "7ec0ebebcb8d5ab3ceaa6423e5a10be8"),
        ("MerchantID", merchant),
        ("OrderID", "55016041050"),
        ("Amount", amount),
        ("PNRef", pn_ref),
        ("Result", result),
        ("TxnType", "SALE"),
        ("Last4", "0309"),
        ("ExpDate", "0329"),
        ("CardType", "VISA"),
        ("AuthCode", "01604D" if result == "0" else ""),
    ]
