"""Production mode: what the service refuses to start without, and what it warns about."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from callbackpool.domain.errors import ConfigurationError
from callbackpool.web import create_app

from .conftest import SettingsFactory, sandbox_keys, serving

SIGNED: dict[str, Any] = {"callbackHash": sandbox_keys()["callbackHash"]}
STRONG_TOKEN = "a-long-operator-token-0123456789"


@pytest.mark.parametrize(
    ("keys", "key"),
    [
        ({"adminToken": None}, "adminToken"),
        ({"adminToken": "short-token"}, "adminToken"),
        ({"adminToken": STRONG_TOKEN, "merchantId": None}, "merchantId"),
    ],
)
def test_production_refuses_to_start_without(
    make_settings: SettingsFactory, keys: dict[str, Any], key: str
) -> None:
    settings = make_settings(env="production", **SIGNED, **keys)
    with pytest.raises(ConfigurationError) as error:
        create_app(settings)
    assert error.value.key == key


def test_development_starts_without_an_admin_token(make_settings: SettingsFactory) -> None:
    assert create_app(make_settings(adminToken=None)) is not None


@pytest.mark.anyio
async def test_unverified_returns_are_warned_about_at_start_up(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(env="production", adminToken=STRONG_TOKEN)
    with caplog.at_level(logging.WARNING, logger="callbackpool"):
        async with serving(create_app(settings)):
            pass
    [warning] = [r for r in caplog.records if "UNVERIFIED" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("PRODUCTION: gateway returns are UNVERIFIED")
    assert STRONG_TOKEN not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "verification", [SIGNED, {"returnSources": ["198.51.100.0/24"]}], ids=["hash", "allowlist"]
)
async def test_verified_returns_start_without_that_warning(
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    verification: dict[str, Any],
) -> None:
    settings = make_settings(env="production", adminToken=STRONG_TOKEN, **verification)
    with caplog.at_level(logging.WARNING, logger="callbackpool"):
        async with serving(create_app(settings)):
            pass
    assert "UNVERIFIED" not in caplog.text
