"""The pool's status shows the waiting room, the reserve paths and the capacity window."""

from __future__ import annotations

from datetime import timedelta

from callbackpool.pool import Waiting

from .conftest import Cli

RESERVE = ["/api/v1/payments/callback/reserve-1", "/api/v1/payments/callback/reserve-2"]


def test_reserve_activation_is_shown_as_json_and_text(cli: Cli) -> None:
    cli.write_config(reservePaths=RESERVE)
    assert cli("init").exit_code == 0
    idle = cli.json("status")
    assert (idle["total"], idle["standby"]) == (10, 2)
    assert idle["reserve"] == {
        "state": "idle",
        "paths": RESERVE,
        "inRotation": 0,
        "draining": 0,
        "events": [],
    }
    assert [h["state"] for h in idle["handlers"][10:]] == ["standby", "standby"]
    assert all(h["reserve"] for h in idle["handlers"][10:])

    pool = cli.pool()
    for n in range(11):
        pool.create_payment(amount=1000 + n)
    cli.clock.advance(timedelta(seconds=30))

    active = cli.json("status")
    assert (active["total"], active["standby"]) == (12, 0)
    assert active["reserve"]["state"] == "active"
    (event,) = active["reserve"]["events"]
    assert event["action"] == "activated"
    assert event["paths"] == RESERVE
    assert event["reason"].startswith("1 of 11 requests in the last 15 min found no slot")
    lines = cli("status").stdout.splitlines()
    assert "reserve: active, 2 paths" in lines
    assert any(line.startswith("  30s ago activated: 1 of 11 requests") for line in lines)


def test_waiting_and_the_capacity_window_are_shown(ready: Cli) -> None:
    pool = ready.pool()
    held = [pool.create_payment(amount=1000 + n) for n in range(10)]
    ready.clock.advance(timedelta(minutes=3))
    pool.cancel_payment(held[0].payment.token)
    pool.create_payment(amount=4000)
    assert isinstance(pool.create_payment(amount=5000, wait=True), Waiting)

    status = ready.json("status")
    assert status["waiting"] == 1
    capacity = status["capacity"]
    assert (capacity["requests"], capacity["leased"], capacity["waited"]) == (12, 11, 1)
    assert capacity["meanHoldSeconds"] == 180.0
    assert capacity["arrivalsPerHour"] == 48.0  # 12 in 15 minutes
    assert capacity["offeredErlangs"] == 2.4
    assert capacity["slotsNeeded"] == 7
    lines = ready("status").stdout.splitlines()
    assert "waiting room: 1 ticket" in lines
    assert lines[-1] == (
        "last 15m: 12 requests (11 served at once, 1 waited, 0 turned away), 48.0 an hour "
        "held 3m on average: 2.40 erlangs; Erlang B: 10 slots turn away 0.0159%, "
        "7 needed for 1%"
    )
