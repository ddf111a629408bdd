"""What the SQL stores' transactions share: the ``Tx`` methods that read or write through a
named query in the same way on SQLite and on PostgreSQL.

A query named here has the same name and parameters in ``sql/sqlite.sql`` and
``sql/postgres.sql``. Each store's transaction runs the queries (``_one``, ``_all``,
``_run``), says how its driver's rows decode (``_decode``) and passes the transaction's time
as its driver stores it (``_now_param``); everything that differs between the engines stays
in ``sqlite.py`` and ``postgres.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    Payment,
    PaymentStatus,
    ReserveAction,
    ReserveEvent,
    Review,
    Ticket,
    TicketStatus,
)
from ..ports import NewCallback, NewReview
from . import rows as values
from .rows import Decode, Row


class SqlTx:
    now: datetime
    _decode: Decode
    # The transaction's time as the driver's queries take it.
    _now_param: Any

    def _one(self, query: str, **params: Any) -> Row | None:
        raise NotImplementedError

    def _all(self, query: str, **params: Any) -> Sequence[Row]:
        raise NotImplementedError

    def _run(self, query: str, **params: Any) -> int:
        raise NotImplementedError

    def _count(self, query: str, **params: Any) -> int:
        """A query's ``count(*) AS n``."""
        row = self._one(query, **params)
        assert row is not None
        count: int = row["n"]
        return count

    def busy_slot_count(self) -> int:
        return self._count("busy_slot_count")

    def record_late_return(self, slot_id: int) -> None:
        self._run("record_late_return", slot_id=slot_id)

    def record_slot_expiry(self, slot_id: int) -> int:
        row = self._one("record_slot_expiry", slot_id=slot_id)
        return 0 if row is None else int(row["expiry_streak"])

    def restore_slot(self, slot_id: int) -> bool:
        return self._run("restore_slot", slot_id=slot_id) == 1

    def live_lease_of_payment(self, token: str) -> Lease | None:
        row = self._one("live_lease_of_payment", token=token)
        return None if row is None else values.lease(self._decode, row)

    def live_lease_on_path(self, path: str) -> Lease | None:
        row = self._one("live_lease_on_path", path=path)
        return None if row is None else values.lease(self._decode, row)

    def get_lease(self, lease_id: int) -> Lease | None:
        row = self._one("get_lease", id=lease_id)
        return None if row is None else values.lease(self._decode, row)

    def drop_stale_taints(self) -> int:
        return self._run("drop_stale_taints", now=self._now_param)

    def get_payment(self, token: str) -> Payment | None:
        row = self._one("get_payment", token=token)
        return None if row is None else values.payment(self._decode, row)

    def get_ticket(self, ticket: str) -> Ticket | None:
        row = self._one("get_ticket", ticket=ticket)
        return None if row is None else values.ticket(self._decode, row)

    def waiting_ahead(self, priority: int, ticket_id: int | None) -> int:
        return self._count("waiting_ahead", now=self._now_param, priority=priority, id=ticket_id)

    def end_ticket(
        self, ticket_id: int, status: TicketStatus, payment_token: str | None = None
    ) -> bool:
        ended = self._run(
            "end_ticket",
            id=ticket_id,
            status=status.value,
            payment_token=payment_token,
            now=self._now_param,
        )
        return ended == 1

    def expire_stale_tickets(self) -> int:
        return self._run("expire_stale_tickets", now=self._now_param)

    def insert_reserve_event(
        self, action: ReserveAction, paths: Sequence[str], reason: str
    ) -> ReserveEvent:
        self._run(
            "insert_reserve_event",
            now=self._now_param,
            action=action.value,
            paths=json.dumps(list(paths)),
            reason=reason,
        )
        return ReserveEvent(at=self.now, action=action, paths=tuple(paths), reason=reason)

    def payment_counts(self) -> dict[PaymentStatus, int]:
        return {PaymentStatus(row["status"]): row["n"] for row in self._all("payment_counts")}

    def insert_callback(self, callback: NewCallback) -> int:
        row = self._one(
            "insert_callback",
            path=callback.path,
            method=callback.method,
            params=json.dumps([list(pair) for pair in callback.params]),
            client_addr=callback.client_addr,
            receipt=callback.receipt,
            now=self._now_param,
        )
        assert row is not None
        callback_id: int = row["id"]
        return callback_id

    def pn_ref_holder(self, pn_ref: str) -> tuple[int, str] | None:
        row = self._one("pn_ref_holder", pn_ref=pn_ref)
        return None if row is None else (row["callback_id"], row["fingerprint"])

    def claim_pn_ref(
        self, pn_ref: str, callback_id: int, fingerprint: str
    ) -> tuple[int, str] | None:
        if self._run(
            "claim_pn_ref", pn_ref=pn_ref, callback_id=callback_id, fingerprint=fingerprint
        ):
            return None
        return self.pn_ref_holder(pn_ref)

    def settle_callback(self, callback_id: int, token: str | None, settled_by: str) -> None:
        self._run(
            "settle_callback",
            id=callback_id,
            token=token,
            now=self._now_param,
            settled_by=settled_by,
        )

    def note_status_query(self, callback_id: int, answer: str, redirect: str | None) -> None:
        self._run("note_status_query", id=callback_id, answer=answer, redirect=redirect)

    def callbacks_to_query(self, max_attempts: int, limit: int) -> list[int]:
        rows = self._all("callbacks_to_query", max_attempts=max_attempts, limit=limit)
        return [row["id"] for row in rows]

    def callback_counts(self) -> dict[CallbackOutcome, int]:
        return {CallbackOutcome(row["outcome"]): row["n"] for row in self._all("callback_counts")}

    def open_review_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        return [
            values.callback(self._decode, row)
            for row in self._all("open_review_callbacks", limit=limit)
        ]

    def insert_review(self, review: NewReview) -> Review | None:
        row = self._one(
            "insert_review",
            decision=review.decision.value,
            callback_id=review.callback_id,
            payment_token=review.payment_token,
            others=None if review.others is None else review.others.value,
            decided_by=review.decided_by,
            reason=review.reason,
            now=self._now_param,
            changes=json.dumps(
                [[c.token, c.previous.value, c.status.value] for c in review.changes]
            ),
        )
        return None if row is None else values.review(self._decode, row)

    def review_of_callback(self, callback_id: int) -> Review | None:
        row = self._one("review_of_callback", callback_id=callback_id)
        return None if row is None else values.review(self._decode, row)

    def reviews(self, *, limit: int = 100) -> list[Review]:
        return [values.review(self._decode, row) for row in self._all("reviews", limit=limit)]
