"""The waiting room and priorities (issue 7): tickets served by priority then arrival, no
newcomer jumping the queue, unpolled tickets dropped, slots kept for priority. On every
store; the queue lives in the database, so pools sharing a store share one queue."""

from __future__ import annotations

import pytest

from callbackpool.domain.errors import InvalidPayment, PoolExhausted, TicketEnded, UnknownTicket
from callbackpool.domain.model import PaymentStatus
from callbackpool.pool import CallbackPool, Checkout, Waiting
from callbackpool.testing import FakeClock

from ..conftest import PoolFactory
from ..support import PATHS, CountingStore, paygistix_return


def fill(pool: CallbackPool, count: int = 10) -> list[Checkout]:
    return [pool.create_payment(amount=5000 + n) for n in range(count)]


def pay(pool: CallbackPool, checkout: Checkout, pn_ref: str) -> None:
    amount = f"{checkout.payment.amount / 100:.2f}"
    pool.handle_callback(checkout.lease.path, paygistix_return(amount=amount, pn_ref=pn_ref))


def waiting(result: Checkout | Waiting) -> Waiting:
    assert isinstance(result, Waiting), result
    return result


def granted(result: Checkout | Waiting) -> Checkout:
    assert isinstance(result, Checkout), result
    return result


def test_a_full_pool_gives_a_ticket_to_whoever_will_wait(pool: CallbackPool) -> None:
    fill(pool)
    first = waiting(pool.create_payment(amount=1000, wait=True))
    second = waiting(pool.create_payment(amount=2000, wait=True))

    assert (first.position, second.position) == (1, 2)
    assert first.retry_after_seconds == 2
    assert first.ticket != second.ticket
    assert len(first.ticket) >= 32
    assert pool.status().waiting == 2
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=3000)  # no ticket without wait
    assert pool.status().waiting == 2


def test_a_free_slot_goes_to_the_ticket_at_the_head(pool: CallbackPool) -> None:
    held = fill(pool)
    first = waiting(pool.create_payment(amount=1000, wait=True))
    second = waiting(pool.create_payment(amount=2000, wait=True))
    pay(pool, held[4], "R1")

    # The second polls first: the free slot is the head's, whoever asks.
    assert waiting(pool.poll_ticket(second.ticket)).position == 2
    checkout = granted(pool.poll_ticket(first.ticket))
    assert checkout.lease.path == held[4].lease.path
    assert checkout.payment.amount == 1000
    assert checkout.payment.status is PaymentStatus.PENDING
    assert checkout.form.fields["ReturnURL"].endswith(checkout.lease.path)
    assert waiting(pool.poll_ticket(second.ticket)).position == 1


def test_a_granted_ticket_answers_the_same_payment_again(pool: CallbackPool) -> None:
    held = fill(pool)
    ticket = waiting(pool.create_payment(amount=1000, wait=True)).ticket
    pool.cancel_payment(held[0].payment.token)
    checkout = granted(pool.poll_ticket(ticket))
    again = granted(pool.poll_ticket(ticket))
    assert again.payment.token == checkout.payment.token
    assert again.lease.id == checkout.lease.id
    assert again.form == checkout.form
    assert pool.status().waiting == 0


def test_a_newcomer_does_not_jump_the_queue(pool: CallbackPool) -> None:
    held = fill(pool)
    ticket = waiting(pool.create_payment(amount=1000, wait=True)).ticket
    pay(pool, held[0], "R1")

    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=3000)  # the free slot is owed to the ticket
    behind = waiting(pool.create_payment(amount=3000, wait=True))
    assert behind.position == 2
    granted(pool.poll_ticket(ticket))
    pay(pool, held[1], "R2")
    granted(pool.poll_ticket(behind.ticket))


def test_priority_first_then_arrival(pool: CallbackPool) -> None:
    held = fill(pool)
    early_low = waiting(pool.create_payment(amount=1000, wait=True))
    late_low = waiting(pool.create_payment(amount=1100, wait=True))
    high = waiting(pool.create_payment(amount=2000, wait=True, priority=5))
    assert high.position == 1
    assert waiting(pool.poll_ticket(early_low.ticket)).position == 2
    assert waiting(pool.poll_ticket(late_low.ticket)).position == 3

    pay(pool, held[0], "R1")
    assert waiting(pool.poll_ticket(early_low.ticket)).position == 2
    assert granted(pool.poll_ticket(high.ticket)).payment.amount == 2000
    pay(pool, held[1], "R2")
    assert waiting(pool.poll_ticket(late_low.ticket)).position == 2
    assert granted(pool.poll_ticket(early_low.ticket)).payment.amount == 1000


def test_a_higher_priority_newcomer_is_served_before_lower_tickets(pool: CallbackPool) -> None:
    held = fill(pool)
    waiting(pool.create_payment(amount=1000, wait=True))
    pay(pool, held[0], "R1")
    assert granted(pool.create_payment(amount=2000, priority=3)).payment.amount == 2000


def test_an_unpolled_ticket_expires_and_stops_holding_its_place(
    pool: CallbackPool, clock: FakeClock
) -> None:
    held = fill(pool)
    gone = waiting(pool.create_payment(amount=1000, wait=True))
    staying = waiting(pool.create_payment(amount=2000, wait=True))
    for _ in range(6):  # polled every 2 s for 12 s; the first ticket never again
        clock.advance(2)
        pool.poll_ticket(staying.ticket)
    assert waiting(pool.poll_ticket(staying.ticket)).position == 1

    pay(pool, held[0], "R1")
    assert granted(pool.poll_ticket(staying.ticket)).payment.amount == 2000
    with pytest.raises(TicketEnded, match="expired"):
        pool.poll_ticket(gone.ticket)


def test_the_sweeper_expires_unpolled_tickets(pool: CallbackPool, clock: FakeClock) -> None:
    fill(pool)
    waiting(pool.create_payment(amount=1000, wait=True))
    waiting(pool.create_payment(amount=1000, wait=True))
    clock.advance(9)
    assert pool.sweep().tickets_expired == 0
    clock.advance(1)
    assert pool.sweep().tickets_expired == 2
    assert pool.status().waiting == 0


def test_a_ticket_left_behind_frees_its_place(pool: CallbackPool) -> None:
    held = fill(pool)
    leaving = waiting(pool.create_payment(amount=1000, wait=True))
    pool.cancel_ticket(leaving.ticket)
    with pytest.raises(TicketEnded, match="cancelled"):
        pool.poll_ticket(leaving.ticket)
    with pytest.raises(TicketEnded):
        pool.cancel_ticket(leaving.ticket)
    pay(pool, held[0], "R1")
    assert granted(pool.create_payment(amount=2000)).payment.amount == 2000


def test_unknown_tickets(pool: CallbackPool) -> None:
    with pytest.raises(UnknownTicket):
        pool.poll_ticket("no-such-ticket")
    with pytest.raises(UnknownTicket):
        pool.cancel_ticket("no-such-ticket")


def test_the_queue_is_bounded(make_pool: PoolFactory) -> None:
    pool = make_pool(max_waiting_tickets=2)
    fill(pool)
    waiting(pool.create_payment(amount=1000, wait=True))
    waiting(pool.create_payment(amount=1000, wait=True))
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=1000, wait=True)
    closed = make_pool(max_waiting_tickets=0)  # no waiting room at all
    with pytest.raises(PoolExhausted):
        closed.create_payment(amount=1000, wait=True)


def test_with_a_free_slot_wait_changes_nothing(pool: CallbackPool) -> None:
    checkout = granted(pool.create_payment(amount=1000, wait=True))
    assert checkout.lease.path == PATHS[0]


def test_pools_sharing_a_store_share_one_queue(make_pool: PoolFactory) -> None:
    # Two app instances over one database: a ticket queued on one is served on the other,
    # in order, and a newcomer on either cannot jump it.
    one, two = make_pool(), make_pool()
    held = fill(one)
    first = waiting(one.create_payment(amount=1000, wait=True))
    second = waiting(two.create_payment(amount=2000, wait=True))
    assert second.position == 2
    pay(two, held[0], "R1")
    with pytest.raises(PoolExhausted):
        two.create_payment(amount=3000)
    assert waiting(one.poll_ticket(second.ticket)).position == 2
    assert granted(two.poll_ticket(first.ticket)).payment.amount == 1000


@pytest.mark.parametrize("priority", [-1, 10, True, 1.5, "3"])
def test_priority_is_bounded_by_the_configuration(pool: CallbackPool, priority: object) -> None:
    with pytest.raises(InvalidPayment) as invalid:
        pool.create_payment(amount=1000, priority=priority)  # type: ignore[arg-type]
    assert invalid.value.field == "priority"
    assert "from 0 to 9" in invalid.value.message
    assert pool.status().locked == 0


def test_slots_kept_for_priority(make_pool: PoolFactory) -> None:
    pool = make_pool(reserved_slots_for_priority=2, priority_threshold=5)
    fill(pool, 8)
    with pytest.raises(PoolExhausted):
        pool.create_payment(amount=1000, priority=4)
    low = waiting(pool.create_payment(amount=1000, wait=True))
    vip = granted(pool.create_payment(amount=2000, priority=5))
    granted(pool.create_payment(amount=2100, priority=9))
    assert pool.status().available == 0
    pool.cancel_payment(vip.payment.token)
    # One slot free, and it is a kept one: the low ticket still waits.
    assert waiting(pool.poll_ticket(low.ticket)).position == 1


def test_an_admission_that_weighs_the_queue_takes_the_turn(pool: CallbackPool) -> None:
    # Between counting the free slots and leasing one, no other instance may give them
    # away: on PostgreSQL the turn is a lock. Nobody waiting: no turn taken.
    counting = CountingStore(pool.store)
    instance = CallbackPool(counting, pool.gateway, pool.policy)  # type: ignore[arg-type]
    held = fill(instance)
    assert counting.turns == 0
    ticket = waiting(instance.create_payment(amount=1000, wait=True)).ticket
    assert counting.turns == 0  # found nobody ahead; no slot free at all
    pay(instance, held[0], "R1")
    with pytest.raises(PoolExhausted):
        instance.create_payment(amount=2000)
    assert counting.turns == 1
    granted(instance.poll_ticket(ticket))
    assert counting.turns == 1  # the head of the queue has nobody ahead
