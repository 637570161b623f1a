"""Short-lived caches of lookups on hot paths (API keys, applications by id or bot id, browser
origins).

cachetools' TTLCache gives each entry `ttl` seconds and, when full, evicts the least recently
used one. Answers that found nothing are kept apart, in a smaller cache of their own: a flood of
random keys (unknown API keys, made-up application ids in webhook URLs) churns only that one and
can never push the live applications out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

from portex_pay.domain.application import Application

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")

FOUND_MAX_ENTRIES = 10_000
MISSING_MAX_ENTRIES = 1_000


class LookupCache(Generic[Key, Value]):
    """`load(key)` remembered for `ttl` seconds (a change shows within `ttl`); None answers
    live in their own, smaller cache."""

    def __init__(
        self,
        load: Callable[[Key], Awaitable[Value | None]],
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        found_max: int = FOUND_MAX_ENTRIES,
        missing_max: int = MISSING_MAX_ENTRIES,
    ) -> None:
        self._load = load
        self._found: TTLCache[Key, Value] = TTLCache(found_max, ttl, timer=clock)
        self._missing: TTLCache[Key, bool] = TTLCache(missing_max, ttl, timer=clock)

    def peek(self, key: Key) -> Value | None:
        """The remembered answer for `key`, without ever loading it: None when that answer found
        nothing, or when there is none (never asked, expired, evicted)."""
        return self._found.get(key)

    async def get(self, key: Key) -> Value | None:
        found = self._found.get(key)
        if found is not None:
            return found
        if key in self._missing:
            return None
        value = await self._load(key)
        if value is None:
            self._missing[key] = True
        else:
            self._found[key] = value
        return value


class ApplicationCache(LookupCache[Key, Application], Generic[Key]):
    """Applications by id or bot id (webhooks, the Mini App edge, the Bot API proxy): a hot
    path should not pay a query for data that changes only when an operator changes the
    application."""
