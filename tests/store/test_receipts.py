"""Where an applied return sends the browser: a success page named by the return's receipt,
never by a payment token (issue 5: nothing but the operator API shows another customer's
token, redirects included)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from callbackpool.domain.model import CallbackOutcome, PaymentStatus
from callbackpool.pool import CallbackPool, CallbackResult

from ..support import paygistix_return


def receipt_of(result: CallbackResult) -> tuple[str, str]:
    query = {k: v[-1] for k, v in parse_qs(urlsplit(result.redirect).query).items()}
    assert urlsplit(result.redirect).path == "/payment-success"
    assert set(query) == {"ref", "receipt"}
    return query["ref"], query["receipt"]


def test_the_receipt_of_an_applied_return_shows_its_payment(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    ref, key = receipt_of(result)
    assert ref == result.ref
    assert len(key) >= 22  # 128 bits, URL-safe
    payment = pool.receipt(ref, key)
    assert payment is not None
    assert (payment.token, payment.status) == (checkout.payment.token, PaymentStatus.COMPLETED)


def test_a_wrong_key_or_reference_finds_nothing(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    ref, key = receipt_of(pool.handle_callback(checkout.lease.path, paygistix_return()))
    for wrong_ref, wrong_key in [
        (ref, key[:-1] + ("A" if key[-1] != "A" else "B")),
        (ref, ""),
        (ref, key + "x"),
        ("CB-999", key),
        ("CB-", key),
        ("CB-1e3", key),
        ("CB-٣", key),  # a digit, but not an ASCII one
        ("1", key),
        ("", ""),
        ("CB-" + "9" * 40, key),
    ]:
        assert pool.receipt(wrong_ref, wrong_key) is None, (wrong_ref, wrong_key)


def test_returns_that_apply_to_no_payment_have_no_receipt(pool: CallbackPool) -> None:
    unmatched = pool.handle_callback(
        "/api/v1/payments/callback/handler-5", paygistix_return(pn_ref="U1")
    )
    assert unmatched.outcome is CallbackOutcome.UNMATCHED
    assert urlsplit(unmatched.redirect).path == "/payment-error"
    with pool.store.read() as tx:
        record = tx.get_callback(unmatched.callback_id)
    assert record is not None
    assert record.receipt is not None
    assert pool.receipt(unmatched.ref, record.receipt) is None


def test_settling_a_same_amount_pair_shows_neither_browser_a_token(pool: CallbackPool) -> None:
    first = pool.create_payment(amount=1000)
    [pool.create_payment(amount=5000 + i) for i in range(9)]
    pool.cancel_payment(first.payment.token)
    second = pool.create_payment(amount=1000)
    tokens = (first.payment.token, second.payment.token)
    r1 = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A1"))
    r2 = pool.handle_callback(first.lease.path, paygistix_return(pn_ref="A2"))
    assert (r1.outcome, r2.outcome) == (CallbackOutcome.AMBIGUOUS, CallbackOutcome.APPLIED)
    for result in (r1, r2):
        assert not any(token in result.redirect for token in tokens)
    # The second browser's page shows the payment its own return (A2) was recorded on.
    payment = pool.receipt(*receipt_of(r2))
    assert payment is not None
    assert payment.pn_ref == "A2"


def test_a_repeat_is_answered_with_the_first_returns_receipt(pool: CallbackPool) -> None:
    checkout = pool.create_payment(amount=1000)
    first = pool.handle_callback(checkout.lease.path, paygistix_return())
    again = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert again.outcome is CallbackOutcome.DUPLICATE
    assert receipt_of(again) == receipt_of(first)
