"""The composition root: what ``build_pool`` does to the database it is given, and what it
hands the pool."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from callbackpool import build_pool, load_settings
from callbackpool.testing import FakeClock

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "paygistix-forms.json"
TWO_PATHS = "/api/v1/payments/callback/handler-1,/api/v1/payments/callback/handler-2"


def test_build_pool_loads_the_paths_unless_told_not_to(tmp_path: Path, clock: FakeClock) -> None:
    database = f"sqlite:///{tmp_path / 'pool.db'}"
    ten = load_settings(EXAMPLE_CONFIG, overrides={"database_url": database})
    two = load_settings(
        EXAMPLE_CONFIG, overrides={"database_url": database, "callback_paths": TWO_PATHS}
    )
    pools = [build_pool(ten, clock=clock)]

    pools.append(build_pool(two, clock=clock, sync_slots=False))
    assert pools[-1].status().total == 10  # the database's slots, as they were
    pools.append(build_pool(two, clock=clock))
    assert pools[-1].status().total == 2  # the others deactivated
    for pool in pools:
        pool.store.close()


def test_the_pool_runs_by_the_settings_themselves(tmp_path: Path, clock: FakeClock) -> None:
    settings = load_settings(
        EXAMPLE_CONFIG,
        overrides={
            "database_url": f"sqlite:///{tmp_path / 'pool.db'}",
            "lock_timeout_minutes": 2.5,
        },
    )
    pool = build_pool(settings, clock=clock)
    assert pool.policy is settings
    checkout = pool.create_payment(amount=1000)
    assert checkout.payment.expires_at == checkout.lease.acquired_at + timedelta(minutes=2.5)
    assert checkout.form.action_url == settings.form_action_url
    pool.store.close()
