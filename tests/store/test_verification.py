"""Verifying gateway returns (docs/design.md#resolving-a-return), through the pool, on every store:
MerchantID, Amount, the hash recipe and the source-address allowlist."""

from __future__ import annotations

import pytest

from callbackpool.domain.model import CallbackOutcome, PaymentStatus
from callbackpool.gateways.paygistix import HashRecipe
from callbackpool.pool import CallbackPool

from ..conftest import PoolFactory
from ..support import make_gateway, paygistix_return

GATEWAY_NET = ("198.51.100.0/24", "2001:db8::/32")
RECIPE = HashRecipe(secret="s3cret", fields=("MerchantID", "Amount", "PNRef", "Result"))


def signed(**overrides: str) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in paygistix_return(**overrides) if k != "hash"]
    return [("hash", RECIPE.sign(dict(params))), *params]


def outcome_of(pool: CallbackPool, callback_id: int) -> CallbackOutcome:
    with pool.store.read() as tx:
        record = tx.get_callback(callback_id)
    assert record is not None
    return record.outcome


@pytest.mark.parametrize("client_addr", ["203.0.113.9", None, "not-an-address", "::1"])
def test_a_return_from_outside_the_allowlist_is_stored_and_rejected(
    make_pool: PoolFactory, client_addr: str | None
) -> None:
    pool = make_pool(return_sources=GATEWAY_NET)
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(), client_addr=client_addr)
    assert result.outcome is CallbackOutcome.REJECTED
    assert result.detail is not None
    assert "not in the allowlist" in result.detail
    assert outcome_of(pool, result.callback_id) is CallbackOutcome.REJECTED
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    # The forgery claimed nothing: the genuine return from the gateway still applies.
    genuine = pool.handle_callback(
        checkout.lease.path, paygistix_return(), client_addr="198.51.100.20"
    )
    assert genuine.outcome is CallbackOutcome.APPLIED


@pytest.mark.parametrize("client_addr", ["198.51.100.1", "2001:db8::7", "::ffff:198.51.100.2"])
def test_a_return_from_inside_the_allowlist_applies(
    make_pool: PoolFactory, client_addr: str
) -> None:
    pool = make_pool(return_sources=GATEWAY_NET)
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return(), client_addr=client_addr)
    assert result.outcome is CallbackOutcome.APPLIED


def test_a_replay_from_outside_the_allowlist_is_rejected_not_a_duplicate(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(return_sources=GATEWAY_NET)
    checkout = pool.create_payment(amount=1000)
    first = pool.handle_callback(
        checkout.lease.path, paygistix_return(), client_addr="198.51.100.1"
    )
    replay = pool.handle_callback(
        checkout.lease.path, paygistix_return(), client_addr="203.0.113.66"
    )
    assert (first.outcome, replay.outcome) == (CallbackOutcome.APPLIED, CallbackOutcome.REJECTED)
    assert replay.redirect != first.redirect  # the replay learns nothing of the first answer


def test_without_a_configured_merchant_no_return_passes(make_pool: PoolFactory) -> None:
    pool = make_pool(gateway=make_gateway(merchant_id=None))
    checkout = pool.create_payment(amount=1000)
    result = pool.handle_callback(checkout.lease.path, paygistix_return())
    assert result.outcome is CallbackOutcome.REJECTED
    assert result.detail == "MerchantID cannot be checked: no merchantId is configured"
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING


def test_a_signed_return_applies_and_a_bad_hash_is_rejected(make_pool: PoolFactory) -> None:
    pool = make_pool(gateway=make_gateway(return_hash=RECIPE))
    checkout = pool.create_payment(amount=1000)
    tampered = [(k, "0" * 32 if k == "hash" else v) for k, v in signed()]
    forged = pool.handle_callback(checkout.lease.path, tampered)
    assert (forged.outcome, forged.detail) == (CallbackOutcome.REJECTED, "hash does not verify")
    assert pool.get_payment(checkout.payment.token).status is PaymentStatus.PENDING
    assert pool.handle_callback(checkout.lease.path, signed()).outcome is CallbackOutcome.APPLIED


def test_a_repeat_with_a_bad_hash_is_rejected_and_a_genuine_repeat_is_a_duplicate(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(gateway=make_gateway(return_hash=RECIPE))
    checkout = pool.create_payment(amount=1000)
    first = pool.handle_callback(checkout.lease.path, signed())
    unsigned = pool.handle_callback(checkout.lease.path, paygistix_return())
    again = pool.handle_callback(checkout.lease.path, signed())
    assert [first.outcome, unsigned.outcome, again.outcome] == [
        CallbackOutcome.APPLIED,
        CallbackOutcome.REJECTED,
        CallbackOutcome.DUPLICATE,
    ]
    assert again.redirect == first.redirect
