"""Every command, as text and as JSON, on a real SQLite file and the fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callbackpool import PaymentStatus
from callbackpool.cli import parse_duration
from callbackpool.store.queries import load_migrations
from callbackpool.views import iso

from ..support import paygistix_return
from .conftest import Cli

PREFIX = "/api/v1/payments/callback/"
PATHS = [f"{PREFIX}handler-{i}" for i in range(1, 11)]
MIGRATIONS = [name for name, _ in load_migrations("sqlite")]
HANDLER_KEYS = {
    "path", "active", "state", "isLocked", "leaseId", "lockedBy", "lockedAt", "expiresAt",
    "usageCount", "lastUsedAt", "lastReleasedAt", "taints", "reserve", "standby", "inRotation",
    "sidelinedAt", "sidelinedBy", "sidelinedReason", "approvals", "declines", "silentExpiries",
    "expiryStreak", "lastReturnAt", "secondsSinceLastReturn",
}  # fmt: skip
LEASE_KEYS = {"leaseId", "path", "lockedBy", "amount", "lockedAt", "expiresAt"}


def create(cli: Cli, quantity: int = 3) -> str:
    """A pending payment (WDF × quantity at 1.25) leasing a slot; its token."""
    return cli.pool().create_payment(items={"WDF": quantity}).payment.token


# --- init and migrate --------------------------------------------------------------------------


def test_init_migrates_the_database_and_loads_the_configured_paths(cli: Cli) -> None:
    result = cli("init")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    done = len(MIGRATIONS)
    assert lines[:done] == [f"applied migration {name}" for name in MIGRATIONS]
    assert lines[done : done + 10] == [f"added        {path}" for path in PATHS]
    assert lines[done + 10] == "10 callback paths active"
    again = cli.json("init")
    assert again == {
        "migrations": [],
        "added": [],
        "reactivated": [],
        "deactivated": [],
        "active": 10,
    }


def test_init_deactivates_a_removed_path_and_reactivates_it_when_it_returns(ready: Cli) -> None:
    ready.write_config(callbackPaths=PATHS[:9])
    result = ready("init", "--json")

    assert result.exit_code == 0, result.output
    assert '"deactivated": [\n    "/api/v1/payments/callback/handler-10"' in result.stdout
    assert "warning: slot /api/v1/payments/callback/handler-10 deactivated" in result.stderr
    status = ready.json("status")
    assert (status["total"], status["inactive"]) == (9, 1)
    assert status["handlers"][9]["path"] == PATHS[9]
    assert status["handlers"][9]["active"] is False
    assert status["handlers"][9]["state"] == "inactive"

    ready.write_config(callbackPaths=PATHS)
    back = ready.json("init")
    assert (back["reactivated"], back["active"]) == ([PATHS[9]], 10)


def test_only_init_loads_paths_so_another_config_cannot_deactivate_a_running_pool(
    ready: Cli,
) -> None:
    ready.write_config(callbackPaths=PATHS[:2])

    assert ready.json("status")["total"] == 10
    assert ready.json("cleanup")["expired"] == 0
    assert ready.json("status")["total"] == 10


def test_migrate_dry_run_prints_the_pending_sql_and_changes_nothing(cli: Cli) -> None:
    dry = cli("migrate", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith("-- migration 0001_initial (pending)\n")
    assert "CREATE TABLE slots" in dry.stdout
    as_json = cli.json("migrate", "--dry-run")
    assert (as_json["dryRun"], as_json["applied"]) == (True, [])
    assert [m["name"] for m in as_json["pending"]] == MIGRATIONS
    assert "CREATE TABLE leases" in as_json["pending"][0]["sql"]
    # Nothing was applied: the database still needs its migration.
    assert f"pending: {', '.join(MIGRATIONS)}" in cli("status").stderr


def test_migrate_applies_once_and_needs_no_configuration(cli: Cli) -> None:
    database = ["--database", cli.database]  # no --config, and none in the working directory

    first = cli.bare(*database, "migrate")
    assert first.exit_code == 0, first.output
    assert first.stdout == "".join(f"applied migration {name}\n" for name in MIGRATIONS)
    second = cli.bare(*database, "migrate", "--json")
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith('{\n  "dryRun": false,\n  "applied": [],\n  "pending": []')
    assert cli.bare(*database, "migrate", "--dry-run").stdout == "-- no pending migrations\n"


# --- status ------------------------------------------------------------------------------------


def test_status_json_has_the_totals_and_a_row_per_slot(ready: Cli) -> None:
    start = ready.clock.now()
    token = create(ready)
    ready.clock.advance(timedelta(minutes=4))

    status = ready.json("status")

    assert set(status) == {
        "at", "total", "available", "locked", "stuck", "tainted", "inactive", "outOfRotation",
        "standby", "waiting", "reserve", "capacity", "handlers",
    }  # fmt: skip
    assert (status["total"], status["available"], status["locked"]) == (10, 9, 1)
    assert (status["stuck"], status["tainted"], status["inactive"]) == (0, 0, 0)
    assert status["at"] == "2026-01-01T12:04:00.000Z"
    assert [h["path"] for h in status["handlers"]] == PATHS
    assert all(set(h) == HANDLER_KEYS for h in status["handlers"])
    assert status["handlers"][0] == {
        "path": PATHS[0],
        "active": True,
        "state": "locked",
        "isLocked": True,
        "leaseId": 1,
        "lockedBy": token,
        "lockedAt": iso(start),
        "expiresAt": iso(start + timedelta(minutes=10)),
        "usageCount": 1,
        "lastUsedAt": iso(start),
        "lastReleasedAt": None,
        "taints": 0,
        "reserve": False,
        "standby": False,
        "inRotation": True,
        "sidelinedAt": None,
        "sidelinedBy": None,
        "sidelinedReason": None,
        "approvals": 0,
        "declines": 0,
        "silentExpiries": 0,
        "expiryStreak": 0,
        "lastReturnAt": None,
        "secondsSinceLastReturn": None,
    }
    assert status["handlers"][1]["state"] == "available"
    assert status["handlers"][1]["lockedBy"] is None


def test_status_tells_stuck_and_tainted_slots_apart(ready: Cli) -> None:
    pool = ready.pool()
    stuck = create(ready)
    pool.cancel_payment(create(ready))  # ends its lease, leaves a taint
    ready.clock.advance(timedelta(minutes=11))  # the first lease is past expiry, unswept

    status = ready.json("status")

    assert (status["locked"], status["stuck"], status["tainted"]) == (0, 1, 1)
    assert status["available"] == 10  # a stuck slot is taken over by the next acquisition
    first, second = status["handlers"][:2]
    assert (first["state"], first["isLocked"], first["lockedBy"]) == ("stuck", True, stuck)
    assert (second["state"], second["taints"], second["isLocked"]) == ("available", 1, False)


def test_status_text_is_a_table_with_full_tokens_and_relative_times(ready: Cli) -> None:
    token = create(ready)
    ready.clock.advance(timedelta(minutes=5, seconds=10))

    result = ready("status")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "pool at 2026-01-01 12:05:10 UTC: 10 slots, 9 available, 1 locked, 0 stuck, "
        "0 tainted, 0 inactive"
    )
    assert lines[1] == f"paths under {PREFIX}"
    assert lines[2].split() == [
        "PATH", "STATE", "LEASE", "TOKEN", "LOCKED", "EXPIRES", "USAGE", "LAST", "USED",
        "LAST", "RELEASED", "TAINTS",
    ]  # fmt: skip
    row = lines[3]
    assert row.startswith("handler-1   locked")
    assert f"  1  {token}  5m 10s ago  in 4m 50s      1  5m 10s ago" in row
    assert lines[4].startswith("handler-2   available      -  -")
    assert row.index(token) == lines[2].index("TOKEN")  # aligned columns
    assert lines[4].index("available") == lines[2].index("STATE")
    assert len(lines) == 3 + 10 + 1
    assert lines[13] == (
        "last 15m: 1 request (1 served at once, 0 waited, 0 turned away); no lease ended yet"
    )


def test_status_before_init_says_what_to_run(cli: Cli) -> None:
    cli.bare("--database", cli.database, "migrate")
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "no callback paths: run 'callbackpool init'"


# --- cleanup -----------------------------------------------------------------------------------


def test_cleanup_ends_expired_leases_and_only_those(ready: Cli) -> None:
    pool = ready.pool()
    early = [create(ready), create(ready, 5)]
    ready.clock.advance(timedelta(minutes=6))
    late = create(ready, 7)

    nothing_yet = ready.json("cleanup")
    assert nothing_yet == {
        "expired": 0,
        "taintsDropped": 0,
        "callbacksResolved": 0,
        "ticketsExpired": 0,
        "reserve": None,
        "released": [],
    }
    ready.clock.advance(timedelta(minutes=5))  # the first two are past their 10 minutes
    result = ready("cleanup")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "ended 2 expired leases, dropped 0 stale taints, resolved 0 stored returns\n"
    )
    assert [pool.get_payment(t).status for t in early] == [PaymentStatus.EXPIRED] * 2
    assert pool.get_payment(late).status is PaymentStatus.PENDING
    status = ready.json("status")
    assert (status["locked"], status["stuck"], status["tainted"]) == (1, 0, 2)
    assert status["handlers"][2]["lockedBy"] == late


def test_cleanup_drops_taints_past_the_late_callback_window(ready: Cli) -> None:
    create(ready)
    ready.clock.advance(timedelta(minutes=11))
    assert ready.json("cleanup")["expired"] == 1
    ready.clock.advance(timedelta(minutes=60))

    assert ready.json("cleanup")["taintsDropped"] == 1
    assert ready.json("status")["tainted"] == 0


def test_cleanup_all_with_yes_releases_every_live_lease(ready: Cli) -> None:
    pool = ready.pool()
    tokens = [create(ready), create(ready, 5)]

    report = ready.json("cleanup", "--all", "--yes")

    assert [lease["lockedBy"] for lease in report["released"]] == tokens
    assert all(set(lease) == LEASE_KEYS for lease in report["released"])
    assert report["released"][1]["amount"] == 625
    assert [pool.get_payment(t).status for t in tokens] == [PaymentStatus.EXPIRED] * 2
    status = ready.json("status")
    assert (status["locked"], status["tainted"], status["available"]) == (0, 2, 10)


def test_cleanup_all_without_yes_and_without_a_terminal_refuses(ready: Cli) -> None:
    token = create(ready)

    result = ready("cleanup", "--all")

    assert result.exit_code == 2
    assert "confirm with --yes" in result.stderr
    assert ready.pool().get_payment(token).status is PaymentStatus.PENDING
    assert ready.json("status")["locked"] == 1


def test_cleanup_all_asks_on_a_terminal(ready: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callbackpool.cli.pool_commands._interactive", lambda: True)
    create(ready)
    create(ready, 5)

    declined = ready("cleanup", "--all", input="n\n")
    assert declined.exit_code == 1
    assert "Release all 2 live leases?" in declined.stderr
    assert declined.stderr.endswith("error: nothing released\n")
    assert ready.json("status")["locked"] == 2

    no_answer = ready("cleanup", "--all", input="")  # end of input at the prompt
    assert no_answer.exit_code == 1
    assert no_answer.stderr.endswith("error: aborted\n")

    accepted = ready("cleanup", "--all", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.count("released lease") == 2
    assert ready.json("status")["locked"] == 0


# --- release -----------------------------------------------------------------------------------


def test_release_by_short_path_full_path_or_token(ready: Cli) -> None:
    pool = ready.pool()
    tokens = [create(ready), create(ready, 5), create(ready, 7)]

    by_name = ready("release", "--path", "handler-1")
    by_path = ready.json("release", "--path", PATHS[1])
    by_token = ready.json("release", "--token", tokens[2])

    assert by_name.exit_code == 0, by_name.output
    assert by_name.stdout.splitlines() == [
        f"released lease 1 on {PATHS[0]} (payment {tokens[0]})",
        "the released slots stay tainted for 1h, in case a customer still pays",
    ]
    assert set(by_path) == {"released"}
    assert set(by_path["released"]) == LEASE_KEYS
    assert (by_path["released"]["path"], by_path["released"]["lockedBy"]) == (PATHS[1], tokens[1])
    assert by_token["released"]["path"] == PATHS[2]
    assert [pool.get_payment(t).status for t in tokens] == [PaymentStatus.EXPIRED] * 3
    status = ready.json("status")
    assert (status["locked"], status["tainted"]) == (0, 3)


# --- reports -----------------------------------------------------------------------------------


def test_reports_stuck_lists_leases_past_expiry_until_a_sweep_ends_them(ready: Cli) -> None:
    start = ready.clock.now()
    token = create(ready)
    create(ready, 5)
    ready.pool().cancel_payment(ready.json("status")["handlers"][1]["lockedBy"])
    assert ready.json("reports", "stuck")["leases"] == []
    ready.clock.advance(timedelta(minutes=12))

    report = ready.json("reports", "stuck")
    text = ready("reports", "stuck").stdout.splitlines()

    assert report == {
        "at": "2026-01-01T12:12:00.000Z",
        "leases": [
            {
                "leaseId": 1,
                "path": PATHS[0],
                "lockedBy": token,
                "amount": 375,
                "lockedAt": iso(start),
                "expiresAt": iso(start + timedelta(minutes=10)),
            }
        ],
    }
    assert text[0] == "1 lease past expiry and not ended: nothing is sweeping"
    assert text[2].split() == [PATHS[0], "1", token, "12m", "ago", "2m", "ago"]
    ready("cleanup")
    assert ready("reports", "stuck").stdout == "no stuck leases\n"


def test_reports_orphans_lists_payments_pending_too_long(ready: Cli) -> None:
    token = create(ready)
    ready.clock.advance(timedelta(minutes=20))  # expired but never swept: still pending

    assert ready.json("reports", "orphans")["payments"] == []  # default: 3 × 10 minutes
    assert ready("reports", "orphans").stdout == "no payments pending for more than 30m\n"
    recent = ready.json("reports", "orphans", "--older-than", "15m")
    assert recent["olderThanSeconds"] == 900
    assert [p["token"] for p in recent["payments"]] == [token]
    assert recent["payments"][0] == {
        "token": token,
        "status": "pending",
        "amount": 375,
        "currency": "USD",
        "callbackPath": PATHS[0],
        "leaseId": 1,
        "createdAt": "2026-01-01T12:00:00.000Z",
        "expiresAt": "2026-01-01T12:10:00.000Z",
        "updatedAt": "2026-01-01T12:00:00.000Z",
    }
    ready.clock.advance(timedelta(minutes=11))
    default = ready.json("reports", "orphans")
    assert (default["olderThanSeconds"], len(default["payments"])) == (1800, 1)
    text = ready("reports", "orphans", "--older-than", "90s").stdout.splitlines()
    assert text[0] == "1 payment pending for more than 1m 30s"
    assert text[2].split() == [token, "3.75", "USD", "31m", "ago", "21m", "ago", PATHS[0]]


def test_reports_usage_counts_leases_callbacks_and_expiries(ready: Cli) -> None:
    pool = ready.pool()
    create(ready)  # handler-1: will expire
    create(ready, 2)  # handler-2: paid
    result = pool.handle_callback(PATHS[1], paygistix_return(amount="2.50"))
    assert result.outcome.value == "applied"
    ready.clock.advance(timedelta(minutes=11))
    ready("cleanup")

    usage = ready.json("reports", "usage")
    text = ready("reports", "usage").stdout.splitlines()

    assert usage["averageUsage"] == 0.2
    assert [h["path"] for h in usage["handlers"]] == PATHS
    assert usage["handlers"][0] == {
        "path": PATHS[0],
        "active": True,
        "usageCount": 1,
        "callbacks": 0,
        "expiries": 1,
        "lastUsedAt": "2026-01-01T12:00:00.000Z",
        "lastReleasedAt": "2026-01-01T12:10:00.000Z",
    }
    assert (usage["handlers"][1]["callbacks"], usage["handlers"][1]["expiries"]) == (1, 0)
    assert text[0] == f"paths under {PREFIX}"
    assert text[1].split() == [
        "PATH", "ACTIVE", "USAGE", "CALLBACKS", "EXPIRIES", "LAST", "USED", "LAST", "RELEASED",
    ]  # fmt: skip
    assert text[2].split() == ["handler-1", "yes", "1", "0", "1", "11m", "ago", "1m", "ago"]
    assert text[-1] == "average usage: 0.2 leases per active slot"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1.5h", 5400),
     ("0s", 0)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
