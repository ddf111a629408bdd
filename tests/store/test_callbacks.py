"""Resolving gateway returns (docs/design.md#resolving-a-return), through the pool, on every
store."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from callbackpool.domain.model import CallbackOutcome, PaymentStatus, StatusChange
from callbackpool.gateways.paygistix import HashRecipe
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, make_gateway, paygistix_return

APPLIED = CallbackOutcome.APPLIED


def query(redirect: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(redirect).query).items()}


def all_statuses(pool: CallbackPool, *tokens: str) -> list[PaymentStatus]:
    return [pool.get_payment(token).status for token in tokens]


def test_an_approved_return_completes_its_payment(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(amount="10.00"))
    assert result.outcome is APPLIED
    assert result.payment_token == checkout.payment.token
    # The success page is named by the return's receipt, never by the payment's token.
    assert result.redirect.startswith(f"/payment-success?ref={result.ref}&receipt=")
    assert checkout.payment.token not in result.redirect
    receipt = query(result.redirect)["receipt"]
    assert pool.receipt(result.ref, receipt) == pool.get_payment(checkout.payment.token)
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.COMPLETED
    assert not payment.late
    assert (payment.pn_ref, payment.auth_code, payment.last4, payment.card_type) == (
        "804322218",
        "01604D",
        "0309",
        "VISA",
    )
    assert payment.callback_id == result.callback_id
    # The lease ended clean: the slot is free and untainted.
    slot = next(s for s in pool.status().slots if s.path == checkout.lease.path)
    assert slot.lease is None
    assert slot.taints == 0


def test_a_declined_return_fails_its_payment(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(result="12"))
    assert result.outcome is APPLIED
    assert urlsplit(result.redirect).path == "/payment-error"
    assert query(result.redirect) == {"reason": "declined", "ref": result.ref}
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error_message == "declined (Result 12)"


def test_a_late_success_on_a_tainted_slot_completes_the_old_payment_and_spares_the_new_lease(
    pool: CallbackPool, clock: FakeClock
) -> None:
    old = pool.create_payment(amount=1000)
    others = [pool.create_payment(amount=9000 + i) for i in range(9)]
    clock.advance(timedelta(minutes=10))
    # The old lease expired; a newcomer of another amount takes the slot over.
    newcomer = pool.create_payment(amount=2500)
    assert newcomer.lease.path == old.lease.path
    assert pool.get_payment(old.payment.token).status is PaymentStatus.EXPIRED
    # The old customer was still on the gateway's page and pays.
    clock.advance(timedelta(minutes=3))
    result = pool.handle_callback(old.lease.path, paygistix_return(amount="10.00"))
    assert result.outcome is APPLIED
    assert result.payment_token == old.payment.token
    late = pool.get_payment(old.payment.token)
    assert late.status is PaymentStatus.COMPLETED
    assert late.late
    # The newcomer's lease is untouched: still pending, still on the slot.
    assert pool.get_payment(newcomer.payment.token).status is PaymentStatus.PENDING
    slot = next(s for s in pool.status().slots if s.path == old.lease.path)
    assert slot.lease is not None
    assert slot.lease.token == newcomer.payment.token
    assert slot.taints == 0  # the old payment's taint is gone with its settlement
    assert others


def test_a_late_success_after_a_cancel(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert result.outcome is APPLIED
    payment = pool.get_payment(checkout.payment.token)
    assert payment.status is PaymentStatus.COMPLETED
    assert payment.late


def test_two_same_amount_candidates_are_ambiguous_and_nobody_completes(
    pool: CallbackPool,
) -> None:
    changes: list[StatusChange] = []
    pool.add_status_hook(changes.append)
    first = pool.create_payment(amount=1000)
    rest = [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)  # same-amount tainted slot, allowed by default
    assert second.lease.path == first.lease.path
    result = pool.handle_callback(first.lease.path, paygistix_return(amount="10.00"))
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    assert result.payment_token is None
    assert all_statuses(pool, first.payment.token, second.payment.token) == [
        PaymentStatus.NEEDS_REVIEW,
        PaymentStatus.NEEDS_REVIEW,
    ]
    assert PaymentStatus.COMPLETED not in {c.status for c in changes}
    assert query(result.redirect)["ref"] == result.ref
    with pool.store.read() as tx:
        record = tx.get_callback(result.callback_id)
    assert record is not None
    assert set(record.candidates) == {first.payment.token, second.payment.token}
    assert rest


def test_a_second_approved_return_settles_the_ambiguous_pair(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)
    r1 = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A1"))
    assert r1.outcome is CallbackOutcome.AMBIGUOUS
    r2 = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A2"))
    assert r2.outcome is APPLIED
    completed = [pool.get_payment(t.payment.token) for t in (first, second)]
    assert [p.status for p in completed] == [PaymentStatus.COMPLETED] * 2
    assert {p.pn_ref for p in completed} == {"A1", "A2"}
    assert completed[0].late  # it had been cancelled
    with pool.store.read() as tx:
        settled = tx.get_callback(r1.callback_id)
    assert settled is not None
    assert settled.settled_by == r2.ref
    assert settled.payment_token in {first.payment.token, second.payment.token}


def test_an_ambiguous_decline_changes_nothing(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)
    result = pool.handle_callback(first.lease.path, paygistix_return(result="5"))
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    assert all_statuses(pool, first.payment.token, second.payment.token) == [
        PaymentStatus.CANCELLED,
        PaymentStatus.PENDING,
    ]
    assert query(result.redirect)["reason"] == "declined"


def test_the_amount_tells_candidates_apart(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=2000)
    assert second.lease.path == first.lease.path
    result = pool.handle_callback(first.lease.path, paygistix_return(amount="20.00"))
    assert result.payment_token == second.payment.token
    assert all_statuses(pool, first.payment.token, second.payment.token) == [
        PaymentStatus.CANCELLED,
        PaymentStatus.COMPLETED,
    ]


def test_an_approved_return_without_an_amount_is_rejected(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(amount=None))
    assert result.outcome is CallbackOutcome.REJECTED
    assert result.detail == "an approved return must carry its Amount"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    # Nothing was claimed: the genuine return, with its Amount, still completes the payment.
    assert pool.handle_callback(checkout.lease.path, paygistix_return()).outcome is APPLIED


def test_a_declined_return_without_an_amount_keeps_every_candidate(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=2000)
    result = pool.handle_callback(first.lease.path, paygistix_return(amount=None, result="12"))
    assert result.outcome is CallbackOutcome.AMBIGUOUS
    # A declined return that cannot be attributed changes no payment.
    assert all_statuses(pool, first.payment.token, second.payment.token) == [
        PaymentStatus.CANCELLED,
        PaymentStatus.PENDING,
    ]


def test_a_declined_return_without_an_amount_fails_a_payment_alone_on_its_slot(
    pool: CallbackPool,
) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(amount=None, result="12"))
    assert result.payment_token == checkout.payment.token
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.FAILED


def test_wrong_amount_changes_nothing_and_is_unmatched(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(amount="1.00"))
    assert result.outcome is CallbackOutcome.UNMATCHED
    assert query(result.redirect)["reason"] == "not_found"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    assert pool.status().locked == 1


def test_wrong_merchant_is_rejected_and_changes_nothing(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(merchant="evilMerchant"))
    assert result.outcome is CallbackOutcome.REJECTED
    assert result.detail == "MerchantID does not match"
    assert query(result.redirect)["reason"] == "unverified"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING


def test_a_rejected_return_does_not_claim_its_pnref(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    forged = pool.handle_callback(checkout.lease.path, paygistix_return(merchant="x"))
    assert forged.outcome is CallbackOutcome.REJECTED
    genuine = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert genuine.outcome is APPLIED


def test_a_return_on_a_path_with_nothing_leased_is_unmatched(pool: CallbackPool) -> None:
    result = pool.handle_callback(PATHS[4], paygistix_return())
    assert result.outcome is CallbackOutcome.UNMATCHED


def test_a_return_on_an_unknown_path_is_rejected(pool: CallbackPool) -> None:
    result = pool.handle_callback("/api/v1/payments/callback/handler-99", paygistix_return())
    assert result.outcome is CallbackOutcome.REJECTED
    assert result.detail == "unknown callback path"


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("Result", "0")],
        paygistix_return(amount="ten"),
        paygistix_return(amount="10.001"),
        paygistix_return(amount="-10.00"),
        paygistix_return(amount="1e3"),
        paygistix_return(pn_ref="8043 22218"),
        paygistix_return(pn_ref="x" * 10_000),
        [*paygistix_return(), ("PNRef", "999")],
        paygistix_return(Last4="12345"),
        paygistix_return(pn_ref="1'; DROP TABLE payments; --"),
        paygistix_return(merchant="<script>alert(1)</script>"),
        paygistix_return(pn_ref="ünïcödé"),
    ],
    ids=lambda p: str(len(p)),
)
def test_a_malformed_return_is_stored_as_rejected(
    pool: CallbackPool, params: list[tuple[str, str]]
) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, params, method="POST", client_addr="1.2.3.4")
    assert result.outcome is CallbackOutcome.REJECTED
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    with pool.store.read() as tx:
        record = tx.get_callback(result.callback_id)
    assert record is not None
    assert record.outcome is CallbackOutcome.REJECTED
    assert list(record.params) == params  # stored exactly as received
    assert (record.method, record.client_addr) == ("POST", "1.2.3.4")


def test_a_repeated_return_changes_nothing_and_gets_the_same_answer(
    pool: CallbackPool,
) -> None:
    changes: list[StatusChange] = []
    pool.add_status_hook(changes.append)
    checkout = pool.create_payment(amount=1000)
    first = pool.handle_callback(checkout.lease.path, paygistix_return())
    # Meanwhile another payment leases another slot; the repeat must not touch it.
    other = pool.create_payment(amount=1000)
    again = pool.handle_callback(checkout.lease.path, paygistix_return())
    elsewhere = pool.handle_callback(other.lease.path, paygistix_return())
    for repeat in (again, elsewhere):
        assert repeat.outcome is CallbackOutcome.DUPLICATE
        assert repeat.redirect == first.redirect
        assert repeat.payment_token == checkout.payment.token
    assert [c.status for c in changes] == [PaymentStatus.COMPLETED]
    assert pool.get_payment(other.payment.token).status is PaymentStatus.PENDING


def test_a_repeated_decline_gets_the_same_error_page(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    first = pool.handle_callback(checkout.lease.path, paygistix_return(result="12"))
    again = pool.handle_callback(checkout.lease.path, paygistix_return(result="12"))
    assert again.outcome is CallbackOutcome.DUPLICATE
    assert again.redirect == first.redirect


def test_a_forgery_reusing_a_pnref_is_rejected(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.handle_callback(checkout.lease.path, paygistix_return(result="12"))
    # Same PNRef, now claiming approval: not a repeat of the first, a forgery.
    forged = pool.handle_callback(checkout.lease.path, paygistix_return(result="0"))
    assert forged.outcome is CallbackOutcome.REJECTED
    assert "PNRef already used" in (forged.detail or "")
    assert urlsplit(forged.redirect).path == "/payment-error"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.FAILED


def test_every_return_is_stored_with_its_outcome(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    outcomes = [
        pool.handle_callback(checkout.lease.path, params).outcome
        for params in (
            paygistix_return(merchant="forger"),
            paygistix_return(amount="3.00", pn_ref="111"),
            paygistix_return(),
            paygistix_return(),
            [("junk", "1")],
        )
    ]
    assert outcomes == [
        CallbackOutcome.REJECTED,
        CallbackOutcome.UNMATCHED,
        APPLIED,
        CallbackOutcome.DUPLICATE,
        CallbackOutcome.REJECTED,
    ]
    with pool.store.read() as tx:
        stored = tx.callbacks(limit=10)
    assert [r.outcome for r in reversed(stored)] == outcomes
    with pool.store.read() as tx:
        unmatched = tx.callbacks(outcomes=[CallbackOutcome.UNMATCHED])
    assert [r.amount for r in unmatched] == [300]


def test_a_return_stored_but_never_resolved_is_resolved_by_the_sweeper(
    pool: CallbackPool, clock: FakeClock
) -> None:
    from callbackpool.domain.model import NewCallback

    checkout = pool.create_payment(amount=1000)
    # As if the process died between storing the return and resolving it.
    with pool.store.transaction() as tx:
        tx.insert_callback(
            NewCallback(
                path=checkout.lease.path,
                method="GET",
                params=tuple(paygistix_return()),
                client_addr=None,
            )
        )
    assert pool.sweep().callbacks_resolved == 0  # too fresh: it may still be in flight
    clock.advance(31)
    assert pool.sweep().callbacks_resolved == 1
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.COMPLETED


def test_a_return_whose_resolution_failed_stays_stored_for_the_sweeper(
    pool: CallbackPool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 4: the return commits before its resolution begins, so a resolution that
    fails (here the parser) leaves it ``received``, and a later sweep resolves it."""
    checkout = pool.create_payment(amount=1000)
    parse = pool.gateway.parse_return

    def broken(params: object) -> object:
        raise RuntimeError("the parser caught fire")

    monkeypatch.setattr(pool.gateway, "parse_return", broken)
    with pytest.raises(RuntimeError, match="caught fire"):
        pool.handle_callback(checkout.lease.path, paygistix_return())
    assert pool.callback_counts()[CallbackOutcome.RECEIVED] == 1
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    monkeypatch.setattr(pool.gateway, "parse_return", parse)
    clock.advance(31)
    assert pool.sweep().callbacks_resolved == 1
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.COMPLETED
    assert pool.callback_counts()[CallbackOutcome.RECEIVED] == 0


def test_a_return_after_the_late_window_is_unmatched(pool: CallbackPool, clock: FakeClock) -> None:
    checkout = pool.create_payment(amount=1000)
    pool.cancel_payment(checkout.payment.token)
    clock.advance(timedelta(minutes=61))
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert result.outcome is CallbackOutcome.UNMATCHED
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.CANCELLED


def test_hash_verification(make_pool: PoolFactory) -> None:
    recipe = HashRecipe(
        secret="sandbox-secret",
        fields=("MerchantID", "OrderID", "Amount", "PNRef", "Result"),
    )
    pool = make_pool(gateway=make_gateway(return_hash=recipe))
    checkout = pool.create_payment(amount=1000)
    unsigned = paygistix_return()
    forged = pool.handle_callback(checkout.lease.path, unsigned)
    assert forged.outcome is CallbackOutcome.REJECTED
    assert forged.detail == "hash does not verify"
    signature = recipe.sign(dict(unsigned))
    signed = [(k, signature if k == "hash" else v) for k, v in unsigned]
    assert pool.handle_callback(checkout.lease.path, signed).outcome is APPLIED


def test_the_status_hook_hears_every_change_once_and_after_commit(pool: CallbackPool) -> None:
    seen: list[tuple[str, PaymentStatus, PaymentStatus]] = []

    def hook(change: StatusChange) -> None:
        # The change is committed by the time the hook runs.
        assert pool.get_payment(change.token).status is change.status
        seen.append((change.token, change.previous, change.status))

    pool.add_status_hook(hook)
    a = pool.create_payment(amount=1000)
    pool.handle_callback(a.lease.path, paygistix_return())
    pool.handle_callback(a.lease.path, paygistix_return())
    b = pool.create_payment(amount=2000)
    pool.cancel_payment(b.payment.token)
    assert seen == [
        (a.payment.token, PaymentStatus.PENDING, PaymentStatus.COMPLETED),
        (b.payment.token, PaymentStatus.PENDING, PaymentStatus.CANCELLED),
    ]


def test_a_failing_hook_does_not_undo_the_payment(pool: CallbackPool) -> None:
    def broken(change: StatusChange) -> None:
        raise RuntimeError("merchant hook down")

    pool.add_status_hook(broken)
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert result.outcome is APPLIED
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.COMPLETED


def test_one_unresolvable_leftover_does_not_hold_back_the_others(
    pool: CallbackPool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callbackpool.domain.model import NewCallback

    checkout = pool.create_payment(amount=1000)
    with pool.store.transaction() as tx:
        for params in (paygistix_return(pn_ref="POISON"), paygistix_return(pn_ref="GOOD")):
            tx.insert_callback(
                NewCallback(
                    path=checkout.lease.path, method="GET", params=tuple(params), client_addr=None
                )
            )
    clock.advance(31)
    real_parse = pool.gateway.parse_return

    def parse(params: list[tuple[str, str]]) -> object:
        if dict(params)["PNRef"] == "POISON":
            raise KeyError("a bug")
        return real_parse(params)

    monkeypatch.setattr(pool.gateway, "parse_return", parse)
    assert pool.sweep().callbacks_resolved == 1
    assert pool.get_payment(checkout.payment.token).pn_ref == "GOOD"
    with pool.store.read() as tx:
        left = tx.callbacks(outcomes=[CallbackOutcome.RECEIVED])
    assert [dict(r.params)["PNRef"] for r in left] == ["POISON"]
