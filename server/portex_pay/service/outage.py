"""Whether an error is an outage of the store (it passes; the work may be retried) rather than
a bug or bad data.

Which exceptions mean "PostgreSQL could not do the work now" is the adapter's knowledge
(adapters/postgres/pool.py, TRANSIENT_ERRORS), which registers them here when it is imported,
so the use cases and the API layers ask this module instead of importing the adapter.
Nothing registered (a unit test with in-memory fakes): only `StoreUnavailable` counts.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store cannot do the work now (what a fake of a port raises to stand for an
    outage)."""


_transient: tuple[type[BaseException], ...] = (StoreUnavailable,)


def register_transient_errors(*kinds: type[BaseException]) -> None:
    """Adds the exception types that mean an outage of the store (idempotent)."""
    global _transient
    _transient = tuple(dict.fromkeys((*_transient, *kinds)))


def is_unavailable(error: BaseException) -> bool:
    """The store could not do the work now, for a reason that passes: unreachable, the
    connection lost mid-query, shutting down, out of connections, a statement timeout, a
    serialisation failure or deadlock. An error raised while handling (or from) such a failure
    counts too: its cause is the outage."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _transient):
            return True
        seen.add(id(current))
        # The chain a traceback shows: the explicit cause, else the implicit context.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return False
