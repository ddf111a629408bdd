"""The rate limit of create-token, on its own (a fake clock) and in the app."""

from __future__ import annotations

import pytest

from callbackpool.web.limits import RateLimiter, SignInThrottle, rate_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_minutes_worth_at_once_then_one_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(30, clock=clock)
    assert [limiter.take("a") for _ in range(30)] == [None] * 30
    assert limiter.take("a") == pytest.approx(2.0)  # one more every 60/30 seconds
    clock.now += 1.5
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(2.0)


def test_refused_requests_cost_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)
    for _ in range(6):
        assert limiter.take("a") is None
    for _ in range(100):
        clock.now += 0.05
        assert limiter.take("a") is not None
    clock.now = 1000.0 + 10.0  # one interval after the burst: a token is back
    assert limiter.take("a") is None


def test_clients_are_counted_apart() -> None:
    limiter = RateLimiter(1, clock=Clock())
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    assert limiter.take("b") is None


def test_memory_is_bounded_and_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock=clock, max_clients=100)
    for i in range(1000):
        limiter.take(f"client-{i}")
    assert len(limiter) <= 101
    clock.now += 60  # every bucket is full again: nothing to remember
    limiter.take("late")
    assert len(limiter) == 1


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
        (None, "-"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64(address: str | None, key: str) -> None:
    assert rate_key(address) == key


def test_failed_sign_ins_make_the_client_wait_ever_longer() -> None:
    clock = Clock()
    throttle = SignInThrottle(free=3, max_wait=8, clock=clock)
    assert [throttle.failed("a") for _ in range(2)] == [None, None]
    assert throttle.wait("a") is None
    assert throttle.failed("a") == 1.0  # the third: a second to wait
    assert throttle.wait("a") == pytest.approx(1.0)
    assert throttle.wait("b") is None  # another client is not held back
    clock.now += 1
    assert throttle.wait("a") is None
    assert throttle.failed("a") == 2.0
    clock.now += 2
    assert throttle.failed("a") == 4.0
    clock.now += 4
    assert throttle.failed("a") == 8.0
    clock.now += 8
    assert throttle.failed("a") == 8.0  # no longer than max_wait
    clock.now += 8
    throttle.succeeded("a")
    assert throttle.failed("a") is None  # a success forgets the failures


def test_failed_sign_ins_are_forgotten_after_a_quiet_while() -> None:
    clock = Clock()
    throttle = SignInThrottle(free=2, forget_after=60, clock=clock)
    throttle.failed("a")
    assert throttle.failed("a") == 1.0
    clock.now += 61
    assert throttle.wait("a") is None
    assert throttle.failed("a") is None  # counted from one again
