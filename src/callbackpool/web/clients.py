"""Who is asking: the client address behind the configured reverse proxies.

A forwarded header is believed only from a trusted proxy, and only as far as the chain of
trusted proxies goes: it is read from the right (the hop the nearest proxy appended) and the
first address that is not a trusted proxy is the client. Whatever a client writes into the
header itself sits to the left of that and is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.requests import Request

from ..pool import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddresses:
    """Resolves a request's client address (``trusted_proxies`` empty: the peer, always)."""

    def __init__(
        self, trusted_proxies: Sequence[IPNetwork] = (), header: str = "X-Forwarded-For"
    ) -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.header = header

    def resolve(self, peer: str | None, headers: Headers) -> str | None:
        if peer is None:
            return None
        peer_address = parse_address(peer)
        if peer_address is None or not self._trusted(peer_address):
            return str(peer_address) if peer_address is not None else peer
        hops = [hop.strip() for value in headers.getlist(self.header) for hop in value.split(",")]
        client = peer_address
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                # A hop no proxy of ours would write: stop at the last one we trust.
                break
            client = address
            if not self._trusted(address):
                break
        return str(client)

    def _trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted_proxies)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``203.0.113.7``, ``203.0.113.7:443``, ``2001:db8::1``,
    ``[2001:db8::1]:443``), IPv4-mapped IPv6 as IPv4; None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(request: Request) -> str | None:
    """The address a request came from, behind the app's trusted proxies: what the core
    records with a callback and checks against the allowlist, what the rate limit counts
    by, and what the logs name."""
    services = getattr(request.app.state, "services", None)
    resolver: ClientAddresses = services.clients if services is not None else ClientAddresses()
    peer = request.client.host if request.client else None
    return resolver.resolve(peer, request.headers)
