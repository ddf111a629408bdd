"""Payment tokens and tickets are typed on command lines too: none starts with ``-``."""

from __future__ import annotations

import secrets

import pytest

from callbackpool.pool import leasing


def test_a_token_that_would_start_with_a_dash_is_drawn_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = iter(["-zQ8", "-a1", "Kx9"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _: next(drawn))
    assert leasing.new_token() == "Kx9"


def test_tokens_are_long_and_never_start_with_a_dash() -> None:
    tokens = [leasing.new_token() for _ in range(2000)]
    assert all(len(token) == 32 and not token.startswith("-") for token in tokens)
    assert len(set(tokens)) == len(tokens)
