"""Housekeeping on in-memory ports: each step asks its port for one batch, with the configured
age, and answers how many rows changed (the worker runs again at once while there is more)."""

from __future__ import annotations

from typing import Any, cast

from portex_pay.service.housekeeping import Housekeeping


class Sweeps:
    def __init__(self, due: int) -> None:
        self.due = due
        self.calls: list[tuple[str, float]] = []

    async def expire_due(self, limit: int) -> int:
        self.calls.append(("expire_due", limit))
        expired = min(self.due, limit)
        self.due -= expired
        return expired

    async def prune_idempotency_keys(self, older_than_seconds: float) -> int:
        self.calls.append(("prune_idempotency_keys", older_than_seconds))
        return 3

    async def expire_subscriptions(self, limit: int) -> int:
        self.calls.append(("expire_subscriptions", limit))
        return 0

    async def prune(self, older_than_seconds: float) -> int:
        self.calls.append(("prune", older_than_seconds))
        return 0


def housekeeping(sweeps: Sweeps) -> Housekeeping:
    return Housekeeping(
        sweeps,
        cast(Any, sweeps),
        idempotency_ttl_seconds=86_400,
        event_retention_seconds=30 * 86_400,
        expiry_batch=2,
    )


async def test_expiry_works_off_a_backlog_in_batches() -> None:
    sweeps = Sweeps(due=3)
    chores = housekeeping(sweeps)
    assert [await chores.expire_step() for _ in range(3)] == [2, 1, 0]
    assert sweeps.calls == [("expire_due", 2)] * 3


async def test_pruning_asks_for_what_is_older_than_its_retention() -> None:
    sweeps = Sweeps(due=0)
    chores = housekeeping(sweeps)
    assert await chores.prune_idempotency_keys_step() == 3
    assert await chores.prune_events_step() == 0
    assert sweeps.calls == [("prune_idempotency_keys", 86_400), ("prune", 30 * 86_400)]
