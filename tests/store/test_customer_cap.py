"""The cap on live leases per customer (``maxLiveLeasesPerCustomer``), on every store: the
customer is ``customerData.email``, lower-cased; the count and the lease are atomic."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from callbackpool.domain.errors import TooManyLeases
from callbackpool.pool import CallbackPool, Checkout, Waiting
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import paygistix_return


def buy(pool: CallbackPool, email: object = "ann@example.com", amount: int = 1000) -> Checkout:
    return pool.create_payment(amount=amount, customer={"email": email, "name": "Ann"})


def live_leases(pool: CallbackPool) -> int:
    return pool.status().locked


def test_a_customer_holds_three_live_leases_at_most(pool: CallbackPool, clock: FakeClock) -> None:
    first = buy(pool)
    clock.advance(timedelta(minutes=2))
    buy(pool, "Ann@Example.com ")
    buy(pool, "ANN@EXAMPLE.COM")
    with pytest.raises(TooManyLeases) as refused:
        buy(pool)
    # Retry once the earliest lease expires: 10 minutes after the first, 8 from now.
    assert refused.value.retry_after_seconds == 8 * 60
    assert refused.value.retry_at == first.lease.expires_at
    assert live_leases(pool) == 3  # the refusal took no slot
    # Others are not held back by her.
    buy(pool, "bob@example.com")
    pool.create_payment(amount=1000)


@pytest.mark.parametrize("ending", ["cancel", "callback", "expiry"])
def test_a_lease_that_ends_frees_a_place(pool: CallbackPool, clock: FakeClock, ending: str) -> None:
    held = [buy(pool, amount=1000 + i) for i in range(3)]
    with pytest.raises(TooManyLeases):
        buy(pool)
    match ending:
        case "cancel":
            pool.cancel_payment(held[0].payment.token)
        case "callback":
            pool.handle_callback(held[0].lease.path, paygistix_return(amount="10.00"))
        case "expiry":
            clock.advance(timedelta(minutes=10))
    buy(pool)


def test_requests_without_an_email_are_not_capped(make_pool: PoolFactory) -> None:
    pool = make_pool(max_live_leases_per_customer=1)
    for customer in [None, {"mail": "x@y"}, {"email": ""}, {"email": "  "}, {"email": 42}]:
        for _ in range(2):
            pool.create_payment(amount=1000, customer=customer)
    assert live_leases(pool) == 10


@pytest.mark.parametrize("cap", [0, 5])
def test_the_cap_is_configurable_and_zero_turns_it_off(make_pool: PoolFactory, cap: int) -> None:
    pool = make_pool(max_live_leases_per_customer=cap)
    for _ in range(cap or 10):
        buy(pool)
    if cap:
        with pytest.raises(TooManyLeases):
            buy(pool)


def test_concurrent_requests_of_one_customer_cannot_pass_the_cap_together(
    pool: CallbackPool,
) -> None:
    def attempt(i: int) -> bool:
        try:
            buy(pool, amount=1000 + i)
        except TooManyLeases:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as workers:
        granted = list(workers.map(attempt, range(8)))
    assert granted.count(True) == 3
    assert live_leases(pool) == 3


def test_a_place_in_the_waiting_room_counts_as_a_lease(pool: CallbackPool) -> None:
    others = [pool.create_payment(amount=2000 + i) for i in range(8)]
    held = [buy(pool, amount=1000 + i) for i in range(2)]  # the pool is full now
    waiting = pool.create_payment(amount=1000, customer={"email": "ann@example.com"}, wait=True)
    assert isinstance(waiting, Waiting)
    for wait in (False, True):
        with pytest.raises(TooManyLeases):
            pool.create_payment(amount=1000, customer={"email": "ANN@example.com"}, wait=wait)
    # Her turn comes: the ticket becomes her third lease, still within the cap.
    pool.cancel_payment(others[0].payment.token)
    granted = pool.poll_ticket(waiting.ticket)
    assert isinstance(granted, Checkout)
    assert granted.payment.customer_key == "ann@example.com"
    with pytest.raises(TooManyLeases):
        pool.create_payment(amount=1000, customer={"email": "ann@example.com"}, wait=True)
    pool.cancel_payment(held[0].payment.token)
    assert isinstance(buy(pool), Checkout)
