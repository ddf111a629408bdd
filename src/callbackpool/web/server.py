"""Running the service: ``serve`` (uvicorn) and the one-machine ``demo``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from ..config import Settings, load_settings
from ..gateways.sandbox import DEFAULT_HASH_FIELDS, SANDBOX_QUERY_PATH, TEST_CARDS, Outcome
from ..logs import LogFormat, record_only_what_is_printed, uvicorn_log_config
from .app import create_app

DEMO_CONFIG = Path(__file__).parent / "demo" / "paygistix-forms.json"
DEMO_DATABASE_URL = "sqlite:///callbackpool-demo.db"


def serve(
    app: FastAPI,
    *,
    host: str,
    port: int,
    access_log: bool = False,
    log_format: LogFormat = "text",
) -> None:
    """Serve ``app`` with uvicorn until interrupted: one process (the sandbox keeps its
    transactions in memory). Its own lines (and the access log) come in ``log_format``,
    with card data masked."""
    record_only_what_is_printed()
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        log_config=uvicorn_log_config(log_format),
        server_header=False,
        # The app reads forwarded headers itself, from the configured trustedProxies only
        # (web/clients.py); uvicorn's own reading would believe any sent from loopback.
        proxy_headers=False,
    )


def demo_settings(*, host: str, port: int, database_url: str = DEMO_DATABASE_URL) -> Settings:
    """The example configuration with the sandbox on: its returns are signed with a fresh
    secret that ``callbackHash`` verifies, so the whole check runs end to end, and its status
    query settles the returns that their path alone cannot attribute."""
    secret = secrets.token_hex(16)
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    settings = load_settings(
        DEMO_CONFIG,
        overrides={
            "base_url": f"http://{public_host}:{port}",
            "database_url": database_url,
            "admin_token": secrets.token_urlsafe(24),
            "sandbox": {"enabled": True, "secret": secret},
            "callback_hash": {
                "secret": secret,
                "fields": list(DEFAULT_HASH_FIELDS),
                "algorithm": "hmac-md5",
            },
            # The sandbox's status query settles the returns a path cannot attribute.
            "status_query": {
                "url": f"http://{public_host}:{port}{SANDBOX_QUERY_PATH}",
                "api_key": secret,
                "token_field": "custom1",
            },
        },
    )
    # A merchant key of its own unless one is configured; its own pages may stand in for
    # the shop's, beside the configured shop origins.
    keys = settings.merchant_api_keys or (SecretStr(secrets.token_urlsafe(24)),)
    origins = tuple(dict.fromkeys((*settings.shop_origins, f"http://{public_host}:{port}")))
    return settings.model_copy(update={"merchant_api_keys": keys, "shop_origins": origins})


def demo_banner(settings: Settings, links: dict[str, str]) -> list[str]:
    base = settings.base_url.rstrip("/")
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    database = settings.database_url.removeprefix("sqlite:///")
    keys = settings.merchant_api_keys
    merchant = keys[0].get_secret_value() if keys else ""
    order = json.dumps(
        {
            "amount": 1250,
            "orderReference": "1001",
            "successUrl": f"{base}/checkout?paid={{ORDER_REFERENCE}}",
            "cancelUrl": f"{base}/checkout",
        },
        separators=(",", ":"),
    )
    cards = [next(c for c in TEST_CARDS if c.outcome is outcome) for outcome in Outcome]
    lines = [
        f"callbackpool demo: the sandbox gateway stands in for Paygistix; data in {database}",
        "",
        f"  checkout     {base}{links['checkout']}",
    ]
    documentation = f"   (documentation: {base}{links['docs']})" if "docs" in links else ""
    lines += [
        f"  dashboard    {base}{links['dashboard']}   (sign in with your name and the token below)",
        f"  API          {base}{links['api']}{documentation}",
        f"  admin token  {token}",
        "",
        f'  curl -H "Authorization: Bearer {token}" {base}{links["pool-stats"]}',
        f'  curl -H "Authorization: Bearer {token}" {base}{links["metrics"]}',
        "",
        f"  merchant key {merchant}   (the shop's server's: docs/integrating.md)",
        f'  curl -H "Authorization: Bearer {merchant}" -H "Content-Type: application/json" \\',
        f"       -d '{order}' {base}/api/v1/payments",
        "",
        "Test cards: "
        + ", ".join(f"{card.number} {card.outcome.value}" for card in cards)
        + " (expiry: any MM/YY). Ctrl-C stops.",
        "",
    ]
    return lines


def demo(
    *,
    host: str,
    port: int,
    database_url: str = DEMO_DATABASE_URL,
    echo: Callable[[str], None],
    log_format: LogFormat = "text",
) -> None:
    """Serve the demo, its banner printed first."""
    settings = demo_settings(host=host, port=port, database_url=database_url)
    app = create_app(settings)
    for line in demo_banner(settings, app.state.links):
        echo(line)
    serve(app, host=host, port=port, log_format=log_format)
