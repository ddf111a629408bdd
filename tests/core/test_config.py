"""Configuration: the seed's file as it is, new keys, environment overrides, clear errors."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from callbackpool.compose import catalogue, gateway, sandbox_gateway, status_query_client
from callbackpool.config import load_settings
from callbackpool.domain.errors import ConfigurationError
from callbackpool.pool import PoolPolicy

EXAMPLE = Path(__file__).parents[2] / "examples" / "paygistix-forms.json"

# The file exactly as the guide shows it (with the ten paths written out).
GUIDE_SHAPE: dict[str, Any] = {
    "form": {"formId": "55015901455", "formHash": "c701523a33721cdbe999f7a4406a0a98"},
    "callbackPaths": [f"/api/v1/payments/callback/handler-{i}" for i in range(1, 11)],
    "lockTimeoutMinutes": 10,
    "baseUrl": "https://wavemax.promo",
}
AS_BUILT = {
    **GUIDE_SHAPE,
    "merchantId": "wavemaxLaundry",
    "formActionUrl": "https://safepay.paymentlogistics.net/transaction.asp",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CALLBACKPOOL_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "paygistix-forms.json"
    path.write_text(json.dumps(data))
    return path


def test_the_guides_file_is_read_as_it_is(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert settings.form.form_id == "55015901455"
    assert len(settings.callback_paths) == 10
    assert settings.lock_timeout == timedelta(minutes=10)
    assert settings.merchant_id is None
    assert settings.form_action_url == "https://safepay.paymentlogistics.net/transaction.asp"
    # Defaults of the new keys.
    assert settings.late_callback_window_minutes == 60
    assert settings.reuse_same_amount_tainted is True
    assert settings.currency == "USD"
    assert settings.create_token_rate_per_minute == 30
    assert settings.max_live_leases_per_customer == 3
    assert settings.return_networks == ()


def test_the_as_built_file_is_read_as_it_is(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, AS_BUILT))
    assert settings.merchant_id == "wavemaxLaundry"
    assert gateway(settings).merchant_id == "wavemaxLaundry"


def test_the_shipped_example_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert [item.price for item in catalogue(settings)] == [125, 1000, 500, 1]


def test_lock_timeout_accepts_fractions(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {**GUIDE_SHAPE, "lockTimeoutMinutes": 2.5}))
    assert settings.lock_timeout == timedelta(minutes=2, seconds=30)


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBACKPOOL_LOCK_TIMEOUT_MINUTES", "3")
    monkeypatch.setenv("CALLBACKPOOL_FORM__FORM_HASH", "from-the-environment")
    monkeypatch.setenv("CALLBACKPOOL_CALLBACK_PATHS", "/cb/a, /cb/b")
    monkeypatch.setenv("CALLBACKPOOL_REUSE_SAME_AMOUNT_TAINTED", "false")
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert settings.lock_timeout_minutes == 3
    assert settings.form.form_hash == "from-the-environment"
    assert settings.form.form_id == "55015901455"  # the rest of the section stays
    assert settings.callback_paths == ("/cb/a", "/cb/b")
    assert settings.reuse_same_amount_tainted is False


def test_overrides_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACKPOOL_DATABASE_URL", "sqlite:///env.db")
    settings = load_settings(
        write(tmp_path, GUIDE_SHAPE), overrides={"database_url": "sqlite:///cli.db"}
    )
    assert settings.database_url == "sqlite:///cli.db"


def test_everything_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACKPOOL_FORM__FORM_ID", "1")
    monkeypatch.setenv("CALLBACKPOOL_FORM__FORM_HASH", "h")
    monkeypatch.setenv("CALLBACKPOOL_CALLBACK_PATHS", '["/cb/1"]')
    monkeypatch.setenv("CALLBACKPOOL_BASE_URL", "https://shop.example")
    monkeypatch.setenv("CALLBACKPOOL_CALLBACK_HASH__SECRET", "s")
    monkeypatch.setenv("CALLBACKPOOL_CALLBACK_HASH__FIELDS", '["PNRef"]')
    settings = load_settings()
    assert settings.callback_paths == ("/cb/1",)
    assert gateway(settings).return_hash is not None


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"callbackPaths": []}, "callbackPaths"),
        ({"callbackPaths": ["/a", "/a"]}, "callbackPaths"),
        ({"callbackPaths": ["handler-1"]}, "callbackPaths"),
        ({"baseUrl": "wavemax.promo"}, "baseUrl"),
        ({"baseUrl": "/relative"}, "baseUrl"),
        ({"lockTimeoutMinutes": 0}, "lockTimeoutMinutes"),
        ({"lockTimeoutMinutes": -1}, "lockTimeoutMinutes"),
        ({"lateCallbackWindowMinutes": 0}, "lateCallbackWindowMinutes"),
        ({"currency": "ZZZ"}, "currency"),
        ({"form": {"formId": "1"}}, "form.formHash"),
        ({"form": {**GUIDE_SHAPE["form"], "items": [{"code": "A"}]}}, "form.items[0].price"),
        ({"callbackHash": {"secret": "s", "fields": ["PNRef"], "algorithm": "crc"}},
         "callbackHash.algorithm"),
        ({"returnSources": ["gateway.example"]}, "returnSources"),
        ({"trustedProxies": ["10.0.0.0/33"]}, "trustedProxies"),
        ({"forwardedHeader": "X-Forwarded-For: 1"}, "forwardedHeader"),
        ({"createTokenRatePerMinute": -1}, "createTokenRatePerMinute"),
        ({"statusQuery": {"url": "/relative"}}, "statusQuery.url"),
        ({"statusQuery": {"url": "https://g.example/q", "tokenField": "a b"}},
         "statusQuery.tokenField"),
        ({"statusQuery": {"url": "https://g.example/q", "timeoutSeconds": 0}},
         "statusQuery.timeoutSeconds"),
        ({"maxLiveLeasesPerCustomer": 1.5}, "maxLiveLeasesPerCustomer"),
    ],
)  # fmt: skip
def test_invalid_configuration_names_the_key(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(write(tmp_path, {**GUIDE_SHAPE, **change}))
    assert error.value.key == key


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"baseUrl": "shop.example", "form": {}}, "baseUrl"),
        ({"form": {}, "baseUrl": "shop.example"}, "form.formId"),
        ({}, "form"),  # then the keys it leaves out
    ],
)
def test_the_problem_named_is_the_first_as_the_file_is_read(
    tmp_path: Path, data: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(write(tmp_path, data))
    assert error.value.key == key


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    data = {k: v for k, v in GUIDE_SHAPE.items() if k != "baseUrl"}
    with pytest.raises(ConfigurationError, match="'baseUrl': is required"):
        load_settings(write(tmp_path, data))


def test_an_item_price_the_currency_cannot_hold_is_named(tmp_path: Path) -> None:
    items = [{"code": "A", "description": "a", "price": "1.005"}]
    settings = load_settings(
        write(tmp_path, {**GUIDE_SHAPE, "form": {**GUIDE_SHAPE["form"], "items": items}})
    )
    with pytest.raises(ConfigurationError, match=r"form.items\[0\].price"):
        gateway(settings)


def test_unknown_keys_are_named_in_a_warning_but_do_not_stop_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CALLBACKPOOL_LOCK_TIMEOUT_MINUTS", "5")
    data = {**GUIDE_SHAPE, "lockTimoutMinutes": 5, "form": {**GUIDE_SHAPE["form"], "fromId": 1}}
    with caplog.at_level(logging.WARNING, logger="callbackpool.config"):
        settings = load_settings(write(tmp_path, data))
    assert settings.lock_timeout_minutes == 10
    warned = " ".join(caplog.messages)
    for key in ("lockTimoutMinutes", "form.fromId", "CALLBACKPOOL_LOCK_TIMEOUT_MINUTS"):
        assert key in warned


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"form": {')
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_settings(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_settings(tmp_path / "missing.json")


def test_prices_are_decimals_not_floats(tmp_path: Path) -> None:
    # 0.1 + 0.2 style errors cannot creep in: prices are read as decimals.
    items = [{"code": "A", "description": "a", "price": 0.29}]
    settings = load_settings(
        write(tmp_path, {**GUIDE_SHAPE, "form": {**GUIDE_SHAPE["form"], "items": items}})
    )
    assert catalogue(settings)[0].price == 29


def test_capacity_keys_default_and_reach_the_policy(tmp_path: Path) -> None:
    policy = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert policy.heartbeat_timeout == timedelta(seconds=60)
    assert policy.heartbeat_slack == timedelta(seconds=15)
    assert (policy.ticket_timeout, policy.ticket_poll) == (
        timedelta(seconds=10),
        timedelta(seconds=2),
    )
    assert (policy.max_waiting_tickets, policy.max_priority) == (1000, 9)
    assert (policy.reserved_slots_for_priority, policy.priority_threshold) == (0, 1)
    assert policy.reserve_paths == ()
    assert (policy.capacity_window, policy.capacity_target) == (timedelta(minutes=15), 0.01)

    data = {
        **GUIDE_SHAPE,
        "heartbeatTimeoutSeconds": 0,
        "ticketTimeoutSeconds": 20,
        "ticketPollSeconds": 3,
        "maxWaitingTickets": 50,
        "maxPriority": 5,
        "reservedSlotsForPriority": 2,
        "priorityThreshold": 4,
        "reservePaths": ["/api/v1/payments/callback/handler-11"],
        "capacityWindowMinutes": 30,
        "capacityTarget": 0.02,
    }
    policy = load_settings(write(tmp_path, data))
    assert policy.heartbeat_timeout == timedelta(0)
    assert (policy.ticket_timeout, policy.ticket_poll) == (
        timedelta(seconds=20),
        timedelta(seconds=3),
    )
    assert (policy.max_waiting_tickets, policy.max_priority) == (50, 5)
    assert (policy.reserved_slots_for_priority, policy.priority_threshold) == (2, 4)
    assert policy.reserve_paths == ("/api/v1/payments/callback/handler-11",)
    assert (policy.capacity_window, policy.capacity_target) == (timedelta(minutes=30), 0.02)


def test_capacity_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBACKPOOL_HEARTBEAT_TIMEOUT_SECONDS", "45")
    monkeypatch.setenv("CALLBACKPOOL_RESERVE_PATHS", "/cb/r1, /cb/r2")
    monkeypatch.setenv("CALLBACKPOOL_RESERVED_SLOTS_FOR_PRIORITY", "1")
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert settings.heartbeat_timeout == timedelta(seconds=45)
    assert settings.reserve_paths == ("/cb/r1", "/cb/r2")
    assert settings.reserved_slots_for_priority == 1


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"heartbeatTimeoutSeconds": -1}, "heartbeatTimeoutSeconds", "greater than or equal"),
        ({"ticketTimeoutSeconds": 0}, "ticketTimeoutSeconds", "greater than 0"),
        ({"ticketPollSeconds": 0}, "ticketPollSeconds", "greater than or equal to 1"),
        ({"maxPriority": -1}, "maxPriority", "greater than or equal"),
        ({"reservedSlotsForPriority": 10}, "reservedSlotsForPriority",
         "must leave some of the 10 callback paths to everyone"),
        ({"reservedSlotsForPriority": 1, "maxPriority": 3, "priorityThreshold": 4},
         "priorityThreshold", "must not exceed maxPriority (3)"),
        ({"reservePaths": ["/api/v1/payments/callback/handler-3"]}, "reservePaths",
         "also in callbackPaths: /api/v1/payments/callback/handler-3"),
        ({"reservePaths": ["reserve-1"]}, "reservePaths", "does not start with '/'"),
        ({"capacityTarget": 1}, "capacityTarget", "less than 1"),
        ({"capacityWindowMinutes": 0}, "capacityWindowMinutes", "greater than 0"),
    ],
)  # fmt: skip
def test_invalid_capacity_keys_are_named(
    tmp_path: Path, change: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(write(tmp_path, {**GUIDE_SHAPE, **change}))
    assert error.value.key == key
    assert message in error.value.problem


def test_the_policy_built_in_code_refuses_a_name_the_file_would_only_warn_about() -> None:
    with pytest.raises(ValidationError, match="lock_timout_minutes"):
        PoolPolicy(
            base_url="https://shop.example", callback_paths=("/cb/1",), lock_timout_minutes=5
        )


def test_no_priorities_needs_no_threshold(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {**GUIDE_SHAPE, "maxPriority": 0}))
    assert settings.max_priority == 0


def test_the_sandbox_takes_the_form_action_when_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, AS_BUILT))
    assert not settings.sandbox.enabled
    assert gateway(settings).action_url == AS_BUILT["formActionUrl"]
    monkeypatch.setenv("CALLBACKPOOL_SANDBOX__ENABLED", "true")
    monkeypatch.setenv("CALLBACKPOOL_SANDBOX__SECRET", "from-the-environment")
    settings = load_settings(write(tmp_path, AS_BUILT))
    assert gateway(settings).action_url == "https://wavemax.promo/sandbox/transaction.asp"
    sandbox = sandbox_gateway(settings)
    assert (sandbox.merchant_id, sandbox.form_id) == ("wavemaxLaundry", "55015901455")
    assert sandbox.signer.secret == "from-the-environment"
    assert sandbox.signer.algorithm == "hmac-md5"


def test_the_sandbox_is_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(
            write(tmp_path, {**AS_BUILT, "env": "production", "sandbox": {"enabled": True}})
        )
    assert error.value.key == "sandbox"
    load_settings(write(tmp_path, {**AS_BUILT, "env": "production", "sandbox": {"enabled": False}}))


def test_the_return_allowlist_and_proxies_come_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, {**AS_BUILT, "returnSources": ["198.51.100.7"]}))
    assert [str(n) for n in settings.return_networks] == ["198.51.100.7/32"]
    monkeypatch.setenv("CALLBACKPOOL_RETURN_SOURCES", "198.51.100.0/24, 2001:db8::/32")
    monkeypatch.setenv("CALLBACKPOOL_TRUSTED_PROXIES", '["10.0.0.1"]')
    settings = load_settings(write(tmp_path, AS_BUILT))
    assert [str(n) for n in settings.return_networks] == [
        "198.51.100.0/24",
        "2001:db8::/32",
    ]
    assert settings.trusted_proxies == ("10.0.0.1",)
    assert settings.forwarded_header == "X-Forwarded-For"


def test_the_status_query_is_off_unless_configured(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, AS_BUILT))
    assert status_query_client(settings) is None
    assert gateway(settings).token_field is None
    query = {"url": "https://gateway.example/query", "apiKey": "k", "timeoutSeconds": 2}
    settings = load_settings(write(tmp_path, {**AS_BUILT, "statusQuery": query}))
    client = status_query_client(settings)
    assert client is not None
    assert (client.url, client.api_key, client.timeout, client.token_field) == (
        "https://gateway.example/query",
        "k",
        2,
        "custom1",
    )
    assert gateway(settings).token_field == "custom1"


def test_the_shops_keys_default_and_come_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert settings.merchant_api_keys == ()
    assert settings.shop_origins == ()
    assert (settings.max_attempts, settings.shop_name) == (3, "Shop")
    assert settings.max_amount == 99_999_999  # 999,999.99: a ceiling even when unset
    monkeypatch.setenv("CALLBACKPOOL_MERCHANT_API_KEYS", f"{'a' * 24}, {'b' * 30}")
    monkeypatch.setenv("CALLBACKPOOL_SHOP_ORIGINS", "https://shop.example/, http://127.0.0.1:8123")
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    keys = [key.get_secret_value() for key in settings.merchant_api_keys]
    assert keys == ["a" * 24, "b" * 30]
    assert settings.shop_origins == ("https://shop.example", "http://127.0.0.1:8123")
    # As a browser names an origin: lower case, the scheme's own port left out.
    monkeypatch.setenv("CALLBACKPOOL_SHOP_ORIGINS", "HTTPS://Shop.Example:443,http://[::1]:80")
    settings = load_settings(write(tmp_path, GUIDE_SHAPE))
    assert settings.shop_origins == ("https://shop.example", "http://[::1]")


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"merchantApiKeys": ["short-merchant-key"]}, "merchantApiKeys"),
        ({"shopOrigins": ["https://shop.example/checkout"]}, "shopOrigins"),
        ({"shopOrigins": ["shop.example"]}, "shopOrigins"),
        ({"shopOrigins": ["http://shop.example"]}, "shopOrigins"),  # http off loopback
        ({"maxAttempts": 0}, "maxAttempts"),
    ],
)
def test_bad_shop_keys_are_named(tmp_path: Path, keys: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(write(tmp_path, {**GUIDE_SHAPE, **keys}))
    assert refused.value.key.startswith(named)
    assert "short-merchant-key" not in str(refused.value)  # a key is never printed
