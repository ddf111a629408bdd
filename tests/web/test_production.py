"""Production mode: what the service refuses to start without, and what it warns about."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from callbackpool.compose import gateway
from callbackpool.domain.errors import ConfigurationError
from callbackpool.web import create_app

from ..servers import example_config, launch, stop_server
from .conftest import SettingsFactory, gateway_return, sandbox_keys, serving

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
    settings = make_settings(env="production", adminToken=STRONG_TOKEN, allowUnverifiedReturns=True)
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


# --- production means verified ----------------------------------------------------------------

UNVERIFIED = "gateway returns are UNVERIFIED"


@pytest.mark.parametrize(
    ("keys", "verified"),
    [
        (SIGNED, True),
        ({"returnSources": ["198.51.100.0/24"]}, True),
        ({"returnSources": ["198.51.100.0/24"], "trustedProxies": ["10.0.0.2"]}, True),
        ({"allowUnverifiedReturns": True}, False),
    ],
    ids=["hash", "allowlist", "allowlist-behind-proxy", "unverified-on-purpose"],
)
def test_production_starts_with_verified_returns_or_unverified_on_purpose(
    make_settings: SettingsFactory, keys: dict[str, Any], verified: bool
) -> None:
    settings = make_settings(env="production", adminToken=STRONG_TOKEN, **keys)
    warnings = settings.service_warnings()
    assert settings.returns_verified is verified
    assert any(w.startswith(UNVERIFIED) for w in warnings) is not verified


def test_production_refuses_unverified_returns_naming_callback_hash(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(env="production", adminToken=STRONG_TOKEN)
    with pytest.raises(ConfigurationError) as error:
        settings.service_warnings()
    assert error.value.key == "callbackHash"
    assert "returnSources" in error.value.problem
    assert "allowUnverifiedReturns" in error.value.problem


def test_development_starts_unverified_with_the_warning(make_settings: SettingsFactory) -> None:
    settings = make_settings(adminToken=STRONG_TOKEN)
    assert not settings.allow_unverified_returns
    assert any(w.startswith(UNVERIFIED) for w in settings.service_warnings())


def test_an_allowlist_alone_reminds_of_the_proxy(make_settings: SettingsFactory) -> None:
    alone = make_settings(env="production", adminToken=STRONG_TOKEN, returnSources=["192.0.2.1"])
    assert any("trustedProxies" in w for w in alone.service_warnings())
    behind = make_settings(
        env="production",
        adminToken=STRONG_TOKEN,
        returnSources=["192.0.2.1"],
        trustedProxies=["10.0.0.2"],
    )
    assert not any("trustedProxies" in w for w in behind.service_warnings())


def test_a_recipe_without_its_secret_verifies_nothing_and_production_refuses_it(
    make_settings: SettingsFactory,
) -> None:
    recipe = {"fields": ["MerchantID", "Amount", "PNRef", "Result"], "algorithm": "hmac-sha256"}
    development = make_settings(callbackHash=recipe)
    assert not development.returns_verified
    assert gateway(development).return_hash is None
    assert any(w.startswith(UNVERIFIED) for w in development.service_warnings())
    # Not even allowUnverifiedReturns lets a recipe whose secret did not arrive through.
    for extra in ({}, {"allowUnverifiedReturns": True}, {"returnSources": ["192.0.2.1"]}):
        settings = make_settings(
            env="production", adminToken=STRONG_TOKEN, callbackHash=recipe, **extra
        )
        with pytest.raises(ConfigurationError) as error:
            settings.service_warnings()
        assert error.value.key == "callbackHash.secret"
        assert "CALLBACKPOOL_CALLBACK_HASH__SECRET" in error.value.problem


def test_the_recipe_takes_its_secret_and_the_permission_from_the_environment(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = {"fields": ["MerchantID", "Amount", "PNRef", "Result"], "algorithm": "hmac-sha256"}
    monkeypatch.setenv("CALLBACKPOOL_CALLBACK_HASH__SECRET", "from-the-environment")
    settings = make_settings(env="production", adminToken=STRONG_TOKEN, callbackHash=recipe)
    assert settings.returns_verified
    assert not any(w.startswith(UNVERIFIED) for w in settings.service_warnings())
    hash_recipe = gateway(settings).return_hash
    assert hash_recipe is not None
    assert (hash_recipe.secret, hash_recipe.algorithm) == ("from-the-environment", "hmac-sha256")
    monkeypatch.delenv("CALLBACKPOOL_CALLBACK_HASH__SECRET")
    monkeypatch.setenv("CALLBACKPOOL_ALLOW_UNVERIFIED_RETURNS", "true")
    assert make_settings(env="production", adminToken=STRONG_TOKEN).allow_unverified_returns


# --- over HTTP against `callbackpool serve` ------------------------------------------------------

PRODUCTION = {"CALLBACKPOOL_ENV": "production", "CALLBACKPOOL_ADMIN_TOKEN": STRONG_TOKEN}


def refused_start(folder: Path, config: dict[str, Any]) -> tuple[int | None, str]:
    server = launch(folder, config, environment=PRODUCTION)
    try:
        code = server.process.wait(timeout=30)
    finally:
        stop_server(server.process)
    return code, server.output()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (example_config(), "callbackHash.secret"),  # the shipped recipe, its secret not given
        (example_config(callbackHash=None), "callbackHash"),
    ],
    ids=["recipe-without-secret", "no-recipe"],
)
def test_serve_in_production_refuses_unverified_returns(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    config = {**config, "databaseUrl": f"sqlite:///{tmp_path / 'pool.db'}"}
    code, output = refused_start(tmp_path, config)
    assert code == 2, output
    assert f"error: configuration key '{key}': is required in production" in output
    assert "Traceback" not in output
    assert STRONG_TOKEN not in output
    assert not (tmp_path / "pool.db").exists()  # refused before anything was opened


def test_serve_in_production_with_the_secret_refuses_the_forged_returns(tmp_path: Path) -> None:
    """The attack: the example with no verification completed a payment nobody paid and
    failed pending ones. With the shipped recipe and its secret, forged returns change nothing."""
    config = {**example_config(), "databaseUrl": f"sqlite:///{tmp_path / 'pool.db'}"}
    secret = {"CALLBACKPOOL_CALLBACK_HASH__SECRET": "the-gateway-secret"}
    server = launch(tmp_path, config, environment={**PRODUCTION, **secret})
    try:
        server.wait_until_serving()
        with server.client() as client:
            created = client.post("/api/v1/payments/create-token", json={"amount": 1000})
            assert created.status_code == 201, created.text
            token = created.json()["token"]
            path = created.json()["formConfig"]["callbackPath"]
            paid = client.get(path, params=gateway_return(amount="10.00", pn_ref="X"))
            assert paid.status_code == 303
            for i in range(1, 11):
                failed = client.get(
                    f"/api/v1/payments/callback/handler-{i}",
                    params={"MerchantID": "demoMerchantWEB", "PNRef": f"D{i}", "Result": "12"},
                )
                assert failed.status_code == 303
            status = client.get(f"/api/v1/payments/check-status/{token}").json()
        assert status["status"] == "pending"
    finally:
        assert stop_server(server.process) in (0, -15)
    assert "UNVERIFIED" not in server.output()


def test_serve_in_production_unverified_on_purpose_warns_and_the_dashboard_says_so(
    tmp_path: Path,
) -> None:
    config = {
        **example_config(callbackHash=None, allowUnverifiedReturns=True),
        "databaseUrl": f"sqlite:///{tmp_path / 'pool.db'}",
    }
    server = launch(tmp_path, config, environment=PRODUCTION)
    try:
        server.wait_until_serving()
        with server.client() as client:
            signed_in = client.post(
                "/admin/login", data={"name": "Olga", "token": STRONG_TOKEN, "next": "/admin"}
            )
            assert signed_in.status_code == 303
            page = client.get("/admin")
        assert page.status_code == 200
        assert 'data-testid="unverified-returns"' in page.text
        assert "Gateway returns are unverified." in page.text
    finally:
        stop_server(server.process)
    assert "PRODUCTION: gateway returns are UNVERIFIED" in server.output()


@pytest.mark.anyio
async def test_the_dashboard_shows_no_banner_when_returns_are_verified(
    make_settings: SettingsFactory,
) -> None:
    cases: list[tuple[dict[str, Any], bool]] = [
        (SIGNED, False),
        ({}, True),
        ({"returnSources": ["192.0.2.1"]}, False),
    ]
    for keys, banner in cases:
        settings = make_settings(adminToken=STRONG_TOKEN, **keys)
        async with serving(create_app(settings)) as client:
            page = await client.get("/admin", headers={"Authorization": f"Bearer {STRONG_TOKEN}"})
        assert page.status_code == 200
        assert ('data-testid="unverified-returns"' in page.text) is banner
