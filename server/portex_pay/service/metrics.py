"""The metrics the use cases record, and the job that samples what no request records.

`MetricsSampler.step` is the `metrics` job's one
round (service/worker.py, PeriodicWorker, every PORTEX_METRICS_INTERVAL seconds): the outboxes'
backlogs in one query, the event hub's subscribers and queues, and the pool's connections. It
runs beside the requests, never on their path, so that a scrape costs the database nothing and a
request pays nothing for these gauges.
"""

from __future__ import annotations

from collections.abc import Callable

from portex_pay.service.ports import Metrics, OutboxBacklog
from portex_pay.service.stream import EventHub


class MetricsSampler:
    """Sets the sampled gauges: outbox backlogs, the stream's subscribers and lag, the pool."""

    def __init__(
        self,
        metrics: Metrics,
        backlog: OutboxBacklog,
        hub: EventHub,
        pool_usage: Callable[[], tuple[int, int]],
    ) -> None:
        self._metrics = metrics
        self._backlog = backlog
        self._hub = hub
        self._pool_usage = pool_usage  # (connections open, of which in use)

    async def step(self) -> int:
        """One sample of everything; 0 (no work to come back for at once)."""
        # The in-memory values first: a database that does not answer must not hide them.
        hub = self._hub
        self._metrics.stream_sampled(
            hub.subscriber_count, hub.queue_sizes(), hub.overflowed_count()
        )
        self._metrics.pool_sampled(*self._pool_usage())
        for sample in await self._backlog.sample():
            self._metrics.outbox_sampled(sample.outbox, sample.depth, sample.oldest_age_seconds)
        return 0
