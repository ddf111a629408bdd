"""Helpers the tests share: the test form, gateway returns, a store that counts, the
turn-aways of a database from before migration 0005."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from callbackpool.domain.gateway import CatalogueItem
from callbackpool.gateways.paygistix import PaygistixGateway
from callbackpool.pool import PoolPolicy
from callbackpool.store.port import Store

MERCHANT = "demoMerchantWEB"
PATHS = tuple(f"/api/v1/payments/callback/handler-{i}" for i in range(1, 11))
CATALOGUE = (
    CatalogueItem(code="WDF", description="Wash, dry and fold", price=125),
    CatalogueItem(code="BAG", description="Laundry bag", price=1000),
    CatalogueItem(code="AMT", description="Open amount", price=1),
)
POLICY = PoolPolicy(
    base_url="https://shop.example",
    callback_paths=PATHS,
    lock_timeout_minutes=10,
    late_callback_window_minutes=60,
)


def policy_with(**changes: Any) -> PoolPolicy:
    """POLICY with ``changes`` (the configuration's names and units), validated as a
    configuration file is: a misspelt name or an invalid value fails the test."""
    return PoolPolicy.model_validate({**POLICY.model_dump(), **changes})


def make_gateway(**overrides: Any) -> PaygistixGateway:
    options: dict[str, Any] = {
        "merchant_id": MERCHANT,
        "form_id": "55810301384",
        "form_hash": "c701523a33721cdbe999f7a4406a0a98",
        "currency": "USD",
        "catalogue": CATALOGUE,
    }
    options.update(overrides)
    return PaygistixGateway(**options)


def paygistix_return(
    *,
    amount: str | None = "10.00",
    pn_ref: str = "804322218",
    result: str = "0",
    merchant: str = MERCHANT,
    **extra: str,
) -> list[tuple[str, str]]:
    """The 11 parameters of a gateway return, as a real one looked (PAYGISTIX.md)."""
    params = [
        ("hash", "7ec0ebebcb8d5ab3ceaa6423e5a10be8"),
        ("MerchantID", merchant),
        ("OrderID", "55016041050"),
        ("PNRef", pn_ref),
        ("Result", result),
        ("TxnType", "SALE"),
        ("Last4", "0309"),
        ("ExpDate", "0329"),
        ("CardType", "VISA"),
        ("AuthCode", "01604D" if result == "0" else ""),
    ]
    if amount is not None:
        params.insert(3, ("Amount", amount))
    params += list(extra.items())
    return params


class CountingStore:
    """Wraps a store to count the write transactions opened through it and the admission
    turns they take."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.writes = 0
        self.turns = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.writes += 1
        with self._store.transaction() as tx:
            take = tx.lock_admission

            def lock_admission() -> None:
                self.turns += 1
                take()

            tx.lock_admission = lock_admission  # type: ignore[method-assign]
            yield tx


# A database before migration 0005 counted each refusal twice: in admissions (pruned after a
# day) and in turn_aways (never pruned). Its turn-aways, by how long before TURNED_AWAY_LAST,
# and the minute of the last one, still in admissions (3 refused, 7 leased).
TURNED_AWAY_LAST = datetime(2026, 1, 8, 12, 0, tzinfo=UTC)
TURNED_AWAY = ((timedelta(0), 3), (timedelta(hours=1), 2), (timedelta(days=8), 5))


def assert_turn_aways_carried_over(store: Store) -> None:
    """After 0005: the chart reads admissions alone, and has the week before the latest."""
    last = TURNED_AWAY_LAST
    with store.read() as tx:
        assert tx.turn_aways_since(last - timedelta(days=30)) == [
            (last - timedelta(hours=1), 2),  # kept: admissions had forgotten that minute
            (last, 3),  # counted once, not 3 + 3
        ]  # and the turn-aways older than a week before the latest are gone
        assert tx.admissions_since(last).leased == 7


LeaseRow = tuple[int, int, str, datetime, datetime | None]


def assert_lease_history(leases: Sequence[LeaseRow]) -> None:
    """Invariant 1 over a whole history of ``(id, slot_id, token, acquired_at, ended_at)``:
    on each slot, leases in id order each ended before the next one began (so no two were
    ever live at once), and no payment held more than one lease."""
    by_slot: dict[int, list[LeaseRow]] = {}
    for lease in sorted(leases):
        by_slot.setdefault(lease[1], []).append(lease)
    for slot_id, spans in by_slot.items():
        for lease_id, _, _, start, end in spans:
            assert end is None or end >= start, f"lease {lease_id} ended before it began"
        for (first, _, _, _, end), (second, _, _, start, _) in itertools.pairwise(spans):
            assert end is not None, f"slot {slot_id}: lease {first} never ended"
            assert start >= end, f"slot {slot_id}: lease {second} began before {first} ended"
    tokens = [lease[2] for lease in leases]
    assert len(tokens) == len(set(tokens)), "a payment held two leases"


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` came true within ``seconds`` (asked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
