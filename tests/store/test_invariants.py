"""Random sequences of payments, returns, cancels, time and sweeps keep the invariants of
docs/design.md (1, 3, 4 and 5) — on every store."""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from callbackpool.domain.errors import PaymentNotPending, PoolExhausted
from callbackpool.domain.model import CallbackOutcome, PaymentStatus, StatusChange
from callbackpool.gateways.paygistix import HashRecipe
from callbackpool.pool import CallbackPool
from callbackpool.testing import FakeClock

from ..conftest import StoreFactory
from ..support import PATHS, make_gateway, paygistix_return, policy_with

RECIPE = HashRecipe(secret="gateway-secret", fields=("MerchantID", "Amount", "PNRef", "Result"))
AMOUNTS = (1000, 2000)  # few amounts, so that same-amount taints and ambiguity happen


def signed(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    signature = RECIPE.sign(dict(params))
    return [(k, signature if k == "hash" else v) for k, v in params]


# The gateway's own session on its hosted form: a customer cannot pay later than this after
# starting. The pool's late-callback window must be at least as long; past it a return can
# only be matched against the slot's current lease, which is the documented limit of the
# design (docs/design.md#limits-accepted), so the model keeps customers inside it.
GATEWAY_SESSION = timedelta(minutes=59)


@dataclass
class Customer:
    token: str
    amount: int
    path: str
    started: datetime
    paid: bool | None = None  # None: has not come back from the gateway


class PoolInvariants(RuleBasedStateMachine):
    def __init__(self, make_store: StoreFactory, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.pool = CallbackPool(
            make_store(),
            make_gateway(return_hash=RECIPE),
            policy_with(callback_paths=PATHS[:3]),
        )
        self.pool.sync_slots()
        self.finals: Counter[str] = Counter()
        self.pool.add_status_hook(self._heard)
        self.pn_refs = itertools.count(1)
        self.sent: list[tuple[str, list[tuple[str, str]], Customer | None]] = []
        self.answers: dict[str, str] = {}

    def _heard(self, change: StatusChange) -> None:
        if change.status.is_final:
            self.finals[change.token] += 1

    customers = Bundle("customers")

    # Customers arrive and come back more often than forgers strike (rules are drawn
    # uniformly, so the common events get more rules), to reach full pools and ambiguity.
    @rule(target=customers, amount=st.sampled_from(AMOUNTS))
    def another_customer(self, amount: int) -> Customer:
        return self.create(amount)

    @rule(target=customers, amount=st.sampled_from(AMOUNTS))
    def create(self, amount: int) -> Customer:
        try:
            checkout = self.pool.create_payment(amount=amount)
        except PoolExhausted:
            return Customer(token="", amount=amount, path="", started=self.clock.now())
        return Customer(
            token=checkout.payment.token,
            amount=amount,
            path=checkout.lease.path,
            started=checkout.payment.created_at,
        )

    @rule(customer=customers, approved=st.booleans())
    def customer_comes_back(self, customer: Customer, approved: bool) -> None:
        """The customer finishes on the gateway's page, on time or late."""
        if not customer.token or customer.paid is not None:
            return
        if self.clock.now() - customer.started > GATEWAY_SESSION:
            return  # the gateway's page has timed out: this customer can no longer pay
        customer.paid = approved
        amount = f"{customer.amount / 100:.2f}"
        params = signed(
            paygistix_return(
                amount=amount, pn_ref=str(next(self.pn_refs)), result="0" if approved else "51"
            )
        )
        self._send(customer.path, params, customer)

    @rule(customer=customers, approved=st.booleans())
    def another_customer_comes_back(self, customer: Customer, approved: bool) -> None:
        self.customer_comes_back(customer, approved)

    @rule(data=st.data())
    def repeat_a_return(self, data: st.DataObject) -> None:
        if self.sent:
            path, params, customer = data.draw(st.sampled_from(self.sent))
            self._send(path, params, customer)

    @rule(
        path=st.sampled_from(PATHS[:3]),
        kind=st.sampled_from(["unsigned", "merchant", "malformed", "amount"]),
        amount=st.sampled_from(AMOUNTS),
    )
    def forge_a_return(self, path: str, kind: str, amount: int) -> None:
        text = f"{amount / 100:.2f}"
        params = {
            "unsigned": paygistix_return(amount=text, pn_ref=f"F{next(self.pn_refs)}"),
            "merchant": signed(
                paygistix_return(amount=text, pn_ref=f"F{next(self.pn_refs)}", merchant="evil")
            ),
            "malformed": [("Result", "0"), ("Amount", text)],
            "amount": signed(paygistix_return(amount="0.50", pn_ref=f"F{next(self.pn_refs)}")),
        }[kind]
        self._send(path, params, None)

    def _send(self, path: str, params: list[tuple[str, str]], customer: Customer | None) -> None:
        result = self.pool.handle_callback(path, params)
        self.sent.append((path, params, customer))
        pn_ref = dict(params).get("PNRef", "")
        if customer is not None:
            if pn_ref in self.answers:  # invariant 5: a repeat gets the first answer
                assert result.outcome is CallbackOutcome.DUPLICATE
                assert result.redirect == self.answers[pn_ref]
            self.answers.setdefault(pn_ref, result.redirect)
        else:
            # Forgeries and returns of unknown payments change no payment (invariant 3 is
            # checked as a whole by nobody_is_credited_without_paying).
            assert result.outcome in (
                CallbackOutcome.REJECTED,
                CallbackOutcome.UNMATCHED,
                CallbackOutcome.DUPLICATE,
            )
            assert result.payment_token is None

    @rule(customer=customers)
    def cancel(self, customer: Customer) -> None:
        if customer.token:
            with contextlib.suppress(PaymentNotPending):
                self.pool.cancel_payment(customer.token)

    @rule(minutes=st.integers(min_value=1, max_value=25))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    @rule()
    def sweep(self) -> None:
        self.pool.sweep()

    # --- the invariants -----------------------------------------------------------------

    @invariant()
    def one_live_lease_per_slot_and_per_payment(self) -> None:
        with self.pool.store.read() as tx:
            live = tx.live_leases()
            pending = tx.payments(statuses=[PaymentStatus.PENDING], limit=10_000)
        assert len({lease.slot_id for lease in live}) == len(live)
        assert len({lease.token for lease in live}) == len(live)
        # A payment is pending exactly while it holds a live lease.
        assert {lease.token for lease in live} == {p.token for p in pending}

    @invariant()
    def nobody_is_credited_without_paying(self) -> None:
        by_token = {c.token: c for _, _, c in self.sent if c is not None}
        with self.pool.store.read() as tx:
            completed = tx.payments(statuses=[PaymentStatus.COMPLETED], limit=10_000)
            failed = tx.payments(statuses=[PaymentStatus.FAILED], limit=10_000)
        for payment in completed:
            customer = by_token.get(payment.token)
            assert customer is not None, payment
            assert customer.paid is True, payment
        for payment in failed:
            customer = by_token.get(payment.token)
            assert customer is not None, payment
            assert customer.paid is False, payment

    @invariant()
    def nothing_is_lost(self) -> None:
        with self.pool.store.read() as tx:
            stored = tx.callbacks(limit=100_000)
        assert len(stored) == len(self.sent)
        assert all(record.outcome is not CallbackOutcome.RECEIVED for record in stored)
        outcome_of = {}
        for record in stored:
            if record.pn_ref and record.outcome is not CallbackOutcome.DUPLICATE:
                outcome_of.setdefault(record.pn_ref, record.outcome)
        # Every customer who paid has a payment that says so, or a record an operator sees.
        for _, params, customer in self.sent:
            if customer is None or not customer.paid:
                continue
            status = self.pool.get_payment(customer.token).status
            seen = outcome_of[dict(params)["PNRef"]]
            assert status in (PaymentStatus.COMPLETED, PaymentStatus.NEEDS_REVIEW) or seen in (
                CallbackOutcome.UNMATCHED,
                CallbackOutcome.AMBIGUOUS,
            ), (status, seen)

    @invariant()
    def a_final_status_is_reached_once(self) -> None:
        assert all(count == 1 for count in self.finals.values())


def test_random_histories_keep_the_invariants(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    run_state_machine_as_test(
        lambda: PoolInvariants(store_factory, clock),
        settings=settings(
            max_examples=80,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
