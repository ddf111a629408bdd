"""Rows to value objects, for both SQL stores.

The two dialects have the same columns; only how some values arrive differs: a time is
microseconds since the epoch on SQLite and a ``timestamptz`` on PostgreSQL, JSON is text on
SQLite and decoded by the driver on PostgreSQL, a flag is 0/1 on SQLite and a boolean on
PostgreSQL. Each store describes that once in a ``Decode``; the mapping of columns to fields
lives here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..domain.model import (
    CallbackOutcome,
    CallbackRecord,
    Lease,
    LeaseEnd,
    LineItem,
    Payment,
    PaymentStatus,
    Review,
    ReviewChange,
    ReviewDecision,
    Ticket,
    TicketStatus,
)


class Row(Protocol):
    """A result row whose columns are read by name (``sqlite3.Row``, psycopg's dict rows)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class Decode:
    """How a dialect's values arrive: each function takes a column's value (never NULL)."""

    time: Callable[[Any], datetime]  # to a timezone-aware UTC datetime
    json: Callable[[Any], Any]
    flag: Callable[[Any], bool]

    def time_or_none(self, value: Any) -> datetime | None:
        return None if value is None else self.time(value)

    def flag_or_none(self, value: Any) -> bool | None:
        return None if value is None else self.flag(value)


def item_json(item: LineItem) -> dict[str, Any]:
    """A line item as the ``items`` column keeps it."""
    return {"code": item.code, "quantity": item.quantity, "unitPrice": item.unit_price}


def line_items(decode: Decode, value: Any) -> tuple[LineItem, ...]:
    return tuple(
        LineItem(code=i["code"], quantity=i["quantity"], unit_price=i["unitPrice"])
        for i in decode.json(value)
    )


def lease(decode: Decode, row: Row, prefix: str = "") -> Lease:
    """A lease from ``row``, its columns named ``prefix`` + the field (joined queries)."""

    def col(name: str) -> Any:
        return row[prefix + name]

    reason = col("end_reason")
    return Lease(
        id=col("id"),
        slot_id=col("slot_id"),
        path=col("path"),
        token=col("token"),
        amount=col("amount"),
        acquired_at=decode.time(col("acquired_at")),
        expires_at=decode.time(col("expires_at")),
        ended_at=decode.time_or_none(col("ended_at")),
        end_reason=None if reason is None else LeaseEnd(reason),
        taint_until=decode.time_or_none(col("taint_until")),
        heartbeat_until=decode.time_or_none(col("heartbeat_until")),
    )


def ticket(decode: Decode, row: Row) -> Ticket:
    return Ticket(
        id=row["id"],
        ticket=row["ticket"],
        priority=row["priority"],
        amount=row["amount"],
        currency=row["currency"],
        items=line_items(decode, row["items"]),
        customer=decode.json(row["customer"]),
        status=TicketStatus(row["status"]),
        created_at=decode.time(row["created_at"]),
        expires_at=decode.time(row["expires_at"]),
        payment_token=row["payment_token"],
        ended_at=decode.time_or_none(row["ended_at"]),
    )


def payment(decode: Decode, row: Row) -> Payment:
    return Payment(
        token=row["token"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        created_at=decode.time(row["created_at"]),
        updated_at=decode.time(row["updated_at"]),
        items=line_items(decode, row["items"]),
        customer=decode.json(row["customer"]),
        late=decode.flag(row["late"]),
        lease_id=row["lease_id"],
        callback_path=row["callback_path"],
        expires_at=decode.time_or_none(row["expires_at"]),
        pn_ref=row["pn_ref"],
        order_id=row["order_id"],
        auth_code=row["auth_code"],
        card_type=row["card_type"],
        last4=row["last4"],
        result_code=row["result_code"],
        error_message=row["error_message"],
        callback_id=row["callback_id"],
    )


def callback(decode: Decode, row: Row) -> CallbackRecord:
    return CallbackRecord(
        id=row["id"],
        path=row["path"],
        method=row["method"],
        params=tuple((str(k), str(v)) for k, v in decode.json(row["params"])),
        client_addr=row["client_addr"],
        received_at=decode.time(row["received_at"]),
        outcome=CallbackOutcome(row["outcome"]),
        pn_ref=row["pn_ref"],
        amount=row["amount"],
        approved=decode.flag_or_none(row["approved"]),
        payment_token=row["payment_token"],
        detail=row["detail"],
        candidates=tuple(decode.json(row["candidates"])),
        redirect=row["redirect"],
        duplicate_of=row["duplicate_of"],
        settled_at=decode.time_or_none(row["settled_at"]),
        settled_by=row["settled_by"],
        receipt=row["receipt"],
        query_attempts=row["query_attempts"],
        query_answer=row["query_answer"],
    )


def review(decode: Decode, row: Row) -> Review:
    others = row["others"]
    return Review(
        id=row["id"],
        decision=ReviewDecision(row["decision"]),
        callback_id=row["callback_id"],
        payment_token=row["payment_token"],
        others=None if others is None else PaymentStatus(others),
        decided_by=row["decided_by"],
        reason=row["reason"],
        decided_at=decode.time(row["decided_at"]),
        changes=tuple(
            ReviewChange(token=token, previous=PaymentStatus(before), status=PaymentStatus(after))
            for token, before, after in decode.json(row["changes"])
        ),
    )
