"""Rate limits per key (an application, a user, a client address), in memory, per replica.

The `limits` library decides (its fixed-window strategy: at most `amount` requests in each window
of `window` seconds, counted from a key's first request in it); this module sizes the window from
the rate and burst the settings give and keeps the counters. They live in `LocalCounters`, a
`limits` storage of our own instead of the library's MemoryStorage, because that one re-arms a
thread every 10 ms while requests come, to scan every key for expiry (with 20,000 keys live a
hit cost 27 us instead of 10 us, a background thread busy with the scan) and, for its moving
window, keeps an empty list per key ever seen. Ours expires a counter when it is next read, and
holds at most `max_keys` of them, the least recently used forgotten first (a forgotten key starts
a fresh window, which only ever errs towards letting through). No locks: one event loop uses it.

Per replica: with `serve --workers N` or several replicas each process limits on its own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter


class LocalCounters(Storage):
    """Counters with an expiry time, for `limits`' fixed-window strategy (see the module)."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._max_keys = max_keys
        self._clock = clock
        self._counters: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError  # nothing here raises; the base class asks

    def _live(self, key: str) -> tuple[int, float] | None:
        entry = self._counters.get(key)
        if entry is not None and entry[1] <= self._clock():
            del self._counters[key]
            return None
        return entry

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        entry = self._live(key)
        count, expires = (0, self._clock() + expiry) if entry is None else entry
        count += amount
        self._counters[key] = (count, expires)
        self._counters.move_to_end(key)
        while len(self._counters) > self._max_keys:
            self._counters.popitem(last=False)
        return count

    def get(self, key: str) -> int:
        entry = self._live(key)
        return 0 if entry is None else entry[0]

    def get_expiry(self, key: str) -> float:
        entry = self._live(key)
        return self._clock() if entry is None else entry[1]

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self._counters)
        self._counters.clear()
        return count

    def clear(self, key: str) -> None:
        self._counters.pop(key, None)


def window_for(rate: float, burst: int, name: str = "limit") -> RateLimitItemPerSecond:
    """The window a token bucket of `rate` per second and `burst` becomes: burst/rate seconds
    rounded to whole seconds (at least one), and rate x window requests in it. The rate is kept;
    the burst is exact when burst/rate is whole (README, "Rate limits")."""
    window = max(1, round(burst / rate))
    return RateLimitItemPerSecond(max(1, round(rate * window)), window, namespace=name)


class RateLimits:
    """One limit applied to many keys: `take` answers 0.0 (granted) or the seconds to wait."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        name: str = "limit",
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.item = window_for(rate, burst, name)
        self._clock = clock
        self._counters = LocalCounters(max_keys=max_keys, clock=clock)
        self._limiter = FixedWindowRateLimiter(self._counters)

    def take(self, *key: str) -> float:
        """Counts a request of `key` (one or more parts): 0.0 when within the limit, else the
        seconds until its window ends (the request is refused and counted all the same, as
        `limits` does; a refused request does not push the window's end further)."""
        if self._limiter.hit(self.item, *key):
            return 0.0
        expires = self._counters.get_expiry(self.item.key_for(*key))
        return max(expires - self._clock(), 0.001)


def retry_after_seconds(wait: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
