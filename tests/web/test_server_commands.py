"""``callbackpool serve`` and ``callbackpool demo``: what they are built from and print."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from callbackpool.compose import gateway
from callbackpool.web import create_app
from callbackpool.web.server import DEMO_CONFIG, demo_banner, demo_settings

from ..servers import executable, free_port, stop_server
from .conftest import gateway_return, serving

REPO = Path(__file__).parents[2]


def test_the_demo_configuration_is_the_shipped_example() -> None:
    assert json.loads(DEMO_CONFIG.read_text()) == json.loads(
        (REPO / "examples" / "paygistix-forms.json").read_text()
    )


def test_demo_settings_turn_the_sandbox_on_and_verify_its_returns() -> None:
    settings = demo_settings(host="0.0.0.0", port=8123, database_url="sqlite:///demo.db")
    assert settings.base_url == "http://127.0.0.1:8123"
    assert settings.sandbox.enabled
    assert gateway(settings).action_url == "http://127.0.0.1:8123/sandbox/transaction.asp"
    assert settings.callback_hash is not None
    secret = settings.sandbox.secret.get_secret_value()
    assert settings.callback_hash.secret is not None
    assert settings.callback_hash.secret.get_secret_value() == secret
    assert settings.callback_hash.fields == settings.sandbox.hash_fields
    # The sandbox's status query settles the returns a path cannot attribute.
    assert settings.status_query is not None
    assert settings.status_query.url == "http://127.0.0.1:8123/sandbox/query"
    assert settings.status_query.api_key is not None
    assert settings.status_query.api_key.get_secret_value() == secret
    assert gateway(settings).token_field == "custom1"
    assert settings.admin_token is not None
    assert len(settings.admin_token.get_secret_value()) >= 32
    again = demo_settings(host="127.0.0.1", port=8123)
    assert again.admin_token is not None
    assert again.admin_token.get_secret_value() != settings.admin_token.get_secret_value()
    assert again.sandbox.secret.get_secret_value() != secret


def test_the_demo_banner_names_the_urls_and_the_token() -> None:
    settings = demo_settings(host="127.0.0.1", port=8123, database_url="sqlite:///demo.db")
    text = "\n".join(demo_banner(settings, create_app(settings).state.links))
    assert settings.admin_token is not None
    token = settings.admin_token.get_secret_value()
    assert "http://127.0.0.1:8123/checkout" in text
    assert "http://127.0.0.1:8123/api/v1/payments " in text
    assert "http://127.0.0.1:8123/api/docs" in text
    assert "  dashboard    http://127.0.0.1:8123/admin   (sign in" in text
    assert "none yet" not in text
    assert "http://127.0.0.1:8123/metrics" in text
    assert f"admin token  {token}" in text
    assert f"Bearer {token}" in text
    assert "4111111111111111 approved" in text
    assert "demo.db" in text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_forged_return_fails_verification_in_the_demo(tmp_path: Path) -> None:
    settings = demo_settings(
        host="127.0.0.1", port=8123, database_url=f"sqlite:///{tmp_path / 'demo.db'}"
    )
    # The test's client names the host shop.test, not the demo's 127.0.0.1.
    settings = settings.model_copy(update={"allowed_hosts": ("shop.test",)})
    async with serving(create_app(settings)) as client:
        created = (await client.post("/api/v1/payments/create-token", json={"amount": 1000})).json()
        response = await client.get(created["formConfig"]["callbackPath"], params=gateway_return())
        assert response.headers["location"].startswith("/payment-error?")


def test_serve_without_a_configuration_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [executable(), "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no configuration: pass --config PATH, set CALLBACKPOOL_CONFIG, "
        "or run where paygistix-forms.json is"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"form": {}}')
    result = subprocess.run(
        [executable(), "--config", str(bad), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: configuration key 'form.formId'")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_callbackpool_demo_serves_the_flow(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [executable(), "demo", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(6)]
        token = next(line.split()[-1] for line in banner if "admin token" in line)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        stats = httpx.get(
            f"{base}/api/v1/payments/pool-stats", headers={"Authorization": f"Bearer {token}"}
        )
        assert stats.status_code == 200
        assert stats.json()["stats"]["total"] == 10
        assert httpx.get(f"{base}/checkout").status_code == 200
        assert (tmp_path / "callbackpool-demo.db").exists()
    finally:
        stop_server(process)  # type: ignore[arg-type]
        if process.stdout is not None:
            process.stdout.close()
