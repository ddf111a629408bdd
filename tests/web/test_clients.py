"""The client address behind reverse proxies: the forwarded header is believed only from a
trusted proxy, and only as far as the chain of trusted proxies goes."""

from __future__ import annotations

import ipaddress

import pytest
from starlette.datastructures import Headers

from callbackpool.web.clients import ClientAddresses, parse_address

PROXIES = ClientAddresses((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")))


def resolve(peer: str | None, *forwarded: str, resolver: ClientAddresses = PROXIES) -> str | None:
    raw = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return resolver.resolve(peer, Headers(raw=raw))


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert resolve("203.0.113.7", "198.51.100.1", resolver=ClientAddresses()) == "203.0.113.7"


def test_the_header_of_an_untrusted_peer_is_ignored() -> None:
    assert resolve("203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_a_trusted_proxy_names_the_client() -> None:
    assert resolve("10.0.0.2", "198.51.100.1") == "198.51.100.1"


def test_what_the_client_wrote_into_the_header_is_never_read() -> None:
    # The client sent "X-Forwarded-For: 198.51.100.1"; our proxy appended the real peer.
    assert resolve("10.0.0.2", "198.51.100.1, 203.0.113.7") == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert resolve("10.0.0.2", "203.0.113.7, 10.0.0.9, 10.1.2.3") == "203.0.113.7"
    assert resolve("::1", "203.0.113.7", "10.0.0.9") == "203.0.113.7"  # headers repeated


def test_a_hop_no_proxy_would_write_stops_the_walk_at_the_last_trusted_one() -> None:
    assert resolve("10.0.0.2", "203.0.113.7, garbage") == "10.0.0.2"
    assert resolve("10.0.0.2", "203.0.113.7, 10.0.0.9, unknown") == "10.0.0.2"


def test_without_a_header_a_trusted_proxy_is_the_client() -> None:
    assert resolve("10.0.0.2") == "10.0.0.2"


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    assert resolve("10.0.0.2", "10.9.9.9, 10.0.0.3") == "10.9.9.9"


def test_a_peer_that_is_no_address_is_kept_as_it_is() -> None:
    assert resolve("testclient", "198.51.100.1") == "testclient"
    assert resolve(None, "198.51.100.1") is None


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:443", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("unknown", None),
        ("", None),
        ("[2001:db8::1", None),
        ("203.0.113.7:443:1", None),
    ],
)
def test_addresses_as_proxies_write_them(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == address
