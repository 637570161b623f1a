"""The clock: what use cases read the time through (a `Clock` is passed in, so tests set it), and
the real one, in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
