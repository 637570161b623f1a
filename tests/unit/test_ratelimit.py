"""Rate limits (service/ratelimit.py): `limits`' fixed window over our own counters. A key gets
`burst` requests in a window of burst/rate seconds, then waits for the window's end; keys are
independent; counters expire when read and at most `max_keys` are kept."""

from __future__ import annotations

import pytest
from limits.strategies import FixedWindowRateLimiter

from portex_pay.service.ratelimit import LocalCounters, RateLimits, retry_after_seconds, window_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "amount", "seconds"),
    [(5.0, 20, 20, 4), (200.0, 400, 400, 2), (0.01, 3, 3, 300), (100.0, 10, 100, 1), (1, 1, 1, 1)],
)
def test_a_rate_and_burst_become_a_window(rate, burst, amount, seconds) -> None:
    item = window_for(rate, burst)
    assert (item.amount, item.get_expiry()) == (amount, seconds)


def test_a_key_gets_its_burst_then_waits_for_the_end_of_its_window() -> None:
    clock = Clock()
    limits = RateLimits(5.0, 20, clock=clock)  # 20 in 4 s
    for _ in range(20):
        assert limits.take("app") == 0.0
    clock.now += 1.5
    assert limits.take("app") == pytest.approx(2.5)
    assert retry_after_seconds(limits.take("app")) == 3
    clock.now += 2.5  # the window is over: a new one starts with this request
    assert limits.take("app") == 0.0


def test_keys_are_independent_and_may_have_several_parts() -> None:
    limits = RateLimits(0.01, 2, clock=Clock())
    assert [limits.take("app", "1") for _ in range(3)][2] > 0
    assert limits.take("app", "2") == 0.0  # another user of the same application
    assert limits.take("other", "1") == 0.0


def test_refused_requests_do_not_move_the_end_of_the_window() -> None:
    clock = Clock()
    limits = RateLimits(1.0, 2, clock=clock)  # 2 in 2 s
    limits.take("k")
    limits.take("k")
    for _ in range(10):
        clock.now += 0.1
        limits.take("k")
    assert limits.take("k") == pytest.approx(1.0)


def test_counters_expire_when_read_and_at_most_max_keys_are_kept() -> None:
    clock = Clock()
    counters = LocalCounters(max_keys=3, clock=clock)
    limiter = FixedWindowRateLimiter(counters)
    item = window_for(1.0, 1)
    for key in ("a", "b", "c", "d"):
        assert limiter.hit(item, key)
    assert not limiter.hit(item, "d")
    assert limiter.hit(item, "a")  # forgotten (the least recently used): a fresh window
    assert counters.reset() == 3
    limiter.hit(item, "e")
    assert counters.get(item.key_for("e")) == 1
    clock.now += 1.0
    assert counters.get(item.key_for("e")) == 0
    assert counters.get_expiry(item.key_for("e")) == clock.now


def test_a_limit_needs_a_positive_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        RateLimits(0, 1)
    with pytest.raises(ValueError):
        RateLimits(1.0, 0)
