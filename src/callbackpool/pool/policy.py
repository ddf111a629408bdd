"""The settings the pool runs by, under the configuration file's names and in its units;
the properties give the durations and networks the pool computes with. ``config.Settings``
is a ``PoolPolicy``: the pool is handed the settings themselves and reads nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["203.0.113.7", "10.0.0.0/8"]`` as networks (an address is a network of one)."""
    parsed = []
    for text in texts:
        try:
            parsed.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
    return tuple(parsed)


def absolute_url(url: str) -> str:
    """``url``, if it is an absolute http(s) URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    return url


def _checked_networks(texts: tuple[str, ...]) -> tuple[str, ...]:
    networks(texts)
    return texts


def _checked_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} does not start with '/'")
        if any(c.isspace() or c in "?#" for c in path):
            raise ValueError(f"{path!r} must not contain spaces, '?' or '#'")
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ValueError(f"duplicate paths: {', '.join(duplicates)}")
    return paths


def shop_origin(url: str) -> str | None:
    """The origin of an absolute https URL (or http on a loopback host); None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or parts.scheme not in ("https", "http"):
        return None
    if parts.scheme == "http" and not _loopback(host):
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    checked = []
    for origin in origins:
        normal = shop_origin(origin)
        if normal is None or urlsplit(origin).path.strip("/") or "?" in origin:
            raise ValueError(
                f"{origin!r} is not an origin like https://shop.example "
                "(http only for a loopback address)"
            )
        checked.append(normal)
    return tuple(checked)


AbsoluteUrl = Annotated[str, AfterValidator(absolute_url)]
Origins = Annotated[tuple[str, ...], AfterValidator(_checked_origins)]
Networks = Annotated[tuple[str, ...], AfterValidator(_checked_networks)]
Paths = Annotated[tuple[str, ...], AfterValidator(_checked_paths)]


class PoolPolicy(BaseModel):
    """The settings the core runs by. A misspelt name is refused (``Settings``, which reads
    a file that may hold other keys, only warns)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # In the order of the configuration's documentation: the order a configuration's
    # problems are reported in, and a check across fields reads only those before it.
    callback_paths: Paths
    lock_timeout_minutes: float = Field(default=10, gt=0)
    base_url: AbsoluteUrl
    late_callback_window_minutes: float = Field(default=60, gt=0)
    reuse_same_amount_tainted: bool = True
    # 999,999.99 in a currency of cents: a ceiling below the gateway form's own.
    max_amount: int = Field(default=99_999_999, gt=0)
    success_url: str = "/payment-success"
    error_url: str = "/payment-error"
    # Capacity: early release, the waiting room, priorities, reserve paths (docs/capacity.md).
    heartbeat_timeout_seconds: float = Field(default=60, ge=0)
    ticket_timeout_seconds: float = Field(default=10, gt=0)
    ticket_poll_seconds: int = Field(default=2, ge=1)
    max_waiting_tickets: int = Field(default=1000, ge=0)
    max_priority: int = Field(default=9, ge=0)
    reserved_slots_for_priority: int = Field(default=0, ge=0)
    priority_threshold: int = Field(default=1, ge=1)
    reserve_paths: Paths = ()
    capacity_window_minutes: float = Field(default=15, gt=0)
    capacity_target: float = Field(default=0.01, gt=0, lt=1)
    # Where returns may come from, and the cap per customer (docs/security.md).
    return_sources: Networks = ()
    max_live_leases_per_customer: int = Field(default=3, ge=0)
    # The slot-health rule (docs/operations.md).
    slot_health_expiries_to_sideline: int = Field(default=5, ge=0)
    # Payments created by the shop's server (docs/integrating.md): where the customer may be
    # sent back to, and how many cards the hosted page lets a customer try.
    shop_origins: Origins = ()
    max_attempts: int = Field(default=3, ge=1, le=10)
    # How long the outbox keeps a payment's events (the feed's history; docs/integrating.md).
    event_retention_days: int = Field(default=30, ge=1)

    @field_validator("callback_paths")
    @classmethod
    def _some_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        if not paths:
            raise ValueError("at least one callback path is needed")
        return paths

    @field_validator("reserved_slots_for_priority")
    @classmethod
    def _some_slots_left_for_everyone(cls, reserved: int, info: ValidationInfo) -> int:
        paths = info.data.get("callback_paths")
        if paths is not None and reserved >= len(paths):
            raise ValueError(f"must leave some of the {len(paths)} callback paths to everyone")
        return reserved

    @field_validator("priority_threshold")
    @classmethod
    def _threshold_within_priorities(cls, threshold: int, info: ValidationInfo) -> int:
        highest = info.data.get("max_priority")
        kept = info.data.get("reserved_slots_for_priority")
        if kept and highest is not None and threshold > highest:
            raise ValueError(f"must not exceed maxPriority ({highest})")
        return threshold

    @field_validator("reserve_paths")
    @classmethod
    def _apart_from_callback_paths(
        cls, paths: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        both = sorted(set(paths) & set(info.data.get("callback_paths") or ()))
        if both:
            raise ValueError(f"also in callbackPaths: {', '.join(both)}")
        return paths

    @property
    def lock_timeout(self) -> timedelta:
        return timedelta(minutes=self.lock_timeout_minutes)

    @property
    def late_callback_window(self) -> timedelta:
        return timedelta(minutes=self.late_callback_window_minutes)

    @property
    def heartbeat_timeout(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_timeout_seconds)

    @property
    def heartbeat_slack(self) -> timedelta:
        """How stale a recorded heartbeat may get before a poll writes a new one: a lease is
        released between ``heartbeat_timeout`` and that plus the slack after the last poll."""
        return self.heartbeat_timeout / 4

    @property
    def ticket_timeout(self) -> timedelta:
        return timedelta(seconds=self.ticket_timeout_seconds)

    @property
    def ticket_poll(self) -> timedelta:
        return timedelta(seconds=self.ticket_poll_seconds)

    @property
    def capacity_window(self) -> timedelta:
        return timedelta(minutes=self.capacity_window_minutes)

    @property
    def event_retention(self) -> timedelta:
        return timedelta(days=self.event_retention_days)

    @property
    def return_networks(self) -> tuple[IPNetwork, ...]:
        return networks(self.return_sources)

    def callback_url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def checkout_url(self, token: str) -> str:
        """The hosted payment page of a shop's payment."""
        return f"{self.base_url.rstrip('/')}/pay/{token}"
