"""The operator's commands of issue 6: slot health, stored returns, review decisions, taking
slots out of rotation, JSON log lines. On a real SQLite file and the fake clock."""

from __future__ import annotations

import json
import shlex
from datetime import timedelta

import pytest

from callbackpool import CallbackPool, PaymentStatus

from ..support import paygistix_return
from .conftest import Cli, one_error_line

PREFIX = "/api/v1/payments/callback/"
PATHS = [f"{PREFIX}handler-{i}" for i in range(1, 11)]


def ambiguous_pair(pool: CallbackPool) -> tuple[str, str, int]:
    """Two 10.00 payments on one slot and an approved return there: its id."""
    first = pool.create_payment(amount=1000).payment.token
    for i in range(9):
        pool.create_payment(amount=2000 + i)
    pool.cancel_payment(first)
    second = pool.create_payment(amount=1000).payment.token
    result = pool.handle_callback(PATHS[0], paygistix_return(pn_ref="AMB"))
    assert result.outcome.value == "ambiguous"
    return first, second, result.callback_id


def test_review_list_resolve_and_the_record(ready: Cli) -> None:
    pool = ready.pool()
    first, second, callback_id = ambiguous_pair(pool)

    queue = ready.json("review", "list")
    assert queue["waiting"] == 1
    [waiting] = queue["returns"]
    assert (waiting["ref"], waiting["outcome"]) == (f"CB-{callback_id}", "ambiguous")
    assert {p["token"] for p in waiting["candidatePayments"]} == {first, second}
    text = ready("review", "list").stdout
    assert f"CB-{callback_id} on {PATHS[0]}" in text
    assert "approved 10.00 USD could belong to 2 payments" in text

    result = ready(
        "review", "resolve", f"CB-{callback_id}", "--payment", first, "--others", "failed",
        "--reason", "the back office shows the first order", "--by", "alice",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"R-1 recorded: CB-{callback_id} belongs to payment {first}",
        f"    payment {first}: needs_review → completed",
        f"    payment {second}: needs_review → failed",
    ]
    assert pool.get_payment(first).status is PaymentStatus.COMPLETED
    assert pool.get_payment(second).status is PaymentStatus.FAILED
    after = ready.json("review", "list")
    assert after["waiting"] == 0
    [decided] = after["decided"]
    assert decided["decidedBy"] == "alice"
    assert decided["reason"] == "the back office shows the first order"
    assert decided["decidedAt"] == "2026-01-01T12:00:00.000Z"
    assert decided["changes"] == [
        {"token": first, "from": "needs_review", "to": "completed"},
        {"token": second, "from": "needs_review", "to": "failed"},
    ]

    again = ready("review", "resolve", str(callback_id), "--none", "--reason", "oops")
    assert again.exit_code == 1
    assert "there is nothing to decide" in one_error_line(again)


def test_review_close_and_the_operator_from_the_environment(ready: Cli) -> None:
    pool = ready.pool()
    first, second, callback_id = ambiguous_pair(pool)
    ready(
        "review", "resolve", f"CB-{callback_id}", "--payment", second, "--others", "needs_review",
        "--reason", "second", "--by", "bob",
    )  # fmt: skip
    assert pool.get_payment(first).status is PaymentStatus.NEEDS_REVIEW

    result = ready.bare(
        "--config", str(ready.config), "--database", ready.database,
        "review", "close", first, "--status", "expired", "--reason", "never paid", "--json",
        env={"CALLBACKPOOL_OPERATOR": "carol"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    review = json.loads(result.stdout)["review"]
    assert (review["decision"], review["decidedBy"], review["callbackRef"]) == (
        "payment",
        "carol",
        None,
    )
    assert pool.get_payment(first).status is PaymentStatus.EXPIRED


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("review resolve CB-999 --none --reason x", "No stored return has that reference."),
        (
            "review resolve CB-x --none --reason x",
            "invalid value: 'CB-x' is not a return's reference (CB-12, or 12)",
        ),
        ("review resolve CB-1 --reason x", "name exactly one of --payment TOKEN and --none"),
        (
            "review resolve CB-1 --none --reason ' '",
            "reason: say why (it is kept with the decision)",
        ),
        (
            "review resolve CB-1 --none --others paid --reason x",
            "--others: 'paid' is not a payment status",
        ),
        ("review close nope --status completed --reason x", "status: must be expired or failed"),
        ("slots restore handler-99", "no callback path 'handler-99' in the pool"),
    ],
)
def test_bad_decisions_are_usage_errors_in_one_line(ready: Cli, command: str, message: str) -> None:
    result = ready(*shlex.split(command))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: {message}")


def test_slots_sideline_restore_and_the_health_report(ready: Cli) -> None:
    pool = ready.pool()
    paid = pool.create_payment(amount=1000)
    pool.handle_callback(paid.lease.path, paygistix_return(pn_ref="1"))
    ready.clock.advance(timedelta(minutes=2))

    out = ready("slots", "sideline", "handler-3", "--reason", "gateway: unknown URL", "--by", "dan")
    assert out.stdout == f"{PATHS[2]} taken out of rotation\n"
    again = ready.json("slots", "sideline", "handler-3", "--reason", "x")
    # The API's answer for the same thing (POST /api/v1/admin/slots/sideline).
    assert again == {"success": True, "path": PATHS[2], "changed": False, "inRotation": False}

    health = ready.json("reports", "health")
    assert (health["outOfRotation"], health["expiriesToSideline"]) == (1, 5)
    first, third = health["handlers"][0], health["handlers"][2]
    assert (first["approvals"], first["secondsSinceLastReturn"], first["inRotation"]) == (
        1,
        120,
        True,
    )
    assert (third["inRotation"], third["sidelinedBy"], third["sidelinedReason"]) == (
        False,
        "dan",
        "gateway: unknown URL",
    )
    text = ready("reports", "health").stdout.splitlines()
    assert text[1].split() == [
        "PATH", "IN", "ROTATION", "APPROVALS", "DECLINES", "SILENT", "EXPIRIES", "IN", "A", "ROW",
        "LAST", "RETURN",
    ]  # fmt: skip
    assert text[2].split() == ["handler-1", "yes", "1", "0", "0", "0", "2m", "ago"]
    assert text[4].split()[:2] == ["handler-3", "NO"]
    assert text[-1] == (
        f"{PATHS[2]}: out of rotation since 0s ago (dan: gateway: unknown URL); "
        "put it back with 'callbackpool slots restore'"
    )
    assert ready.json("status")["handlers"][2]["state"] == "sidelined"

    assert ready("slots", "restore", "handler-3", "--by", "dan").stdout == (
        f"{PATHS[2]} back in rotation\n"
    )
    assert ready.json("reports", "health")["outOfRotation"] == 0


def test_reports_callbacks_pages_and_masks_the_expiry_date(ready: Cli) -> None:
    pool = ready.pool()
    for n in range(3):
        checkout = pool.create_payment(amount=1000)
        pool.handle_callback(checkout.lease.path, paygistix_return(pn_ref=f"P{n}"))
    pool.handle_callback(PATHS[5], paygistix_return(pn_ref="U"))  # nothing leased there

    page = ready.json("reports", "callbacks", "--limit", "2")
    assert page["counts"]["applied"] == 3
    assert page["counts"]["unmatched"] == 1
    assert [c["ref"] for c in page["callbacks"]] == ["CB-4", "CB-3"]
    assert page["nextBefore"] == 3
    params = dict(page["callbacks"][1]["params"])
    assert params["ExpDate"] == "****"
    assert (params["Last4"], params["CardType"], params["PNRef"]) == ("0309", "VISA", "P2")
    rest = ready.json("reports", "callbacks", "--limit", "2", "--before", "CB-3")
    assert [c["ref"] for c in rest["callbacks"]] == ["CB-2", "CB-1"]
    unmatched = ready.json("reports", "callbacks", "--outcome", "unmatched")
    assert [c["ref"] for c in unmatched["callbacks"]] == ["CB-4"]
    assert unmatched["nextBefore"] is None

    text = ready("reports", "callbacks", "--limit", "1").stdout
    assert "0329" not in text
    assert "ExpDate=****" in text
    assert text.splitlines()[-1] == "more: --before CB-4"


def test_log_format_json_gives_one_object_a_line_without_card_data(ready: Cli) -> None:
    pool = ready.pool()
    checkout = pool.create_payment(amount=1000)
    ready.clock.advance(timedelta(minutes=11))
    result = ready.bare(
        "--config", str(ready.config), "--database", ready.database, "--verbose",
        "--log-format", "json", "cleanup",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    expired = next(line for line in lines if line.get("event") == "lease_ended")
    assert expired["slot"] == PATHS[0]
    assert expired["lease"] == checkout.lease.id
    assert expired["token"] == checkout.payment.token[:8] + "…"
    assert expired["level"] == "info"
    transition = next(line for line in lines if line.get("event") == "transition")
    assert (transition["previous"], transition["status"]) == ("pending", "expired")
    assert checkout.payment.token not in result.stderr


def test_an_unknown_log_format_is_a_usage_error(ready: Cli) -> None:
    result = ready("--log-format", "xml", "status")
    assert result.exit_code == 2
    assert "'xml' is not a log format: text or json" in one_error_line(result)
