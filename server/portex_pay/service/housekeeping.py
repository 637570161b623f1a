"""Housekeeping: unpaid orders past their time are expired, so are subscriptions past their
period with no renewal, and what is kept only for a while is
forgotten (idempotency keys after PORTEX_IDEMPOTENCY_TTL, events after
PORTEX_EVENT_RETENTION_DAYS). Each is one `PeriodicWorker` step (service/worker.py): it returns how
many rows it changed, so that the worker runs again at once while there is more. Every replica may
run them: expiry skips the orders another replica holds, and pruning deletes what is there.
"""

from __future__ import annotations

from portex_pay.service.ports import EventStore, OrderSweeps

# Orders expired per statement: a backlog is worked off in batches, never in one long lock.
EXPIRY_BATCH = 500


class Housekeeping:
    def __init__(
        self,
        orders: OrderSweeps,
        events: EventStore,
        *,
        idempotency_ttl_seconds: float,
        event_retention_seconds: float,
        expiry_batch: int = EXPIRY_BATCH,
    ) -> None:
        self._orders = orders
        self._events = events
        self._idempotency_ttl = idempotency_ttl_seconds
        self._event_retention = event_retention_seconds
        self._expiry_batch = expiry_batch

    async def expire_step(self) -> int:
        """Expires a batch of the unpaid orders past their time (each with its event)."""
        return await self._orders.expire_due(self._expiry_batch)

    async def expire_subscriptions_step(self) -> int:
        """Expires a batch of the subscriptions whose period ended (plus the grace) without a
        renewal (each with `subscription.expired`)."""
        return await self._orders.expire_subscriptions(self._expiry_batch)

    async def prune_idempotency_keys_step(self) -> int:
        """Forgets the request ids older than the idempotency TTL (a retry after that is a new
        Pay)."""
        return await self._orders.prune_idempotency_keys(self._idempotency_ttl)

    async def prune_events_step(self) -> int:
        """Deletes a batch of the events past their retention (a stream cursor older than that
        gets CursorExpired)."""
        return await self._events.prune(self._event_retention)
