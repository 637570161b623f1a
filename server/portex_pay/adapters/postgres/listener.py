"""LISTEN on a dedicated connection, outside the pool, as a wake-up hint for the stream hub.

The notification carries nothing: after every wake-up the hub reads the events table from its
cursor, so a lost notification costs latency, never an event. When the connection is lost (a
restart, `pg_terminate_backend`), the listener reconnects with backoff, LISTENs again and wakes the
hub once so that it catches up on whatever was committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import asyncpg
import structlog

log = structlog.get_logger(__name__)

CHANNEL = "portex_events"
# Names the connection in pg_stat_activity, for operators (and for tests that cut it).
APPLICATION_NAME = "portex-pay event listener"


class EventListener:
    def __init__(
        self,
        dsn: str,
        wake: Callable[[], None],
        *,
        check_interval: float = 5.0,
        channels: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        """`wake` is the event hub's; `channels` adds more channels on the same connection, each
        with a callback taking the notification's payload ("" after a reconnect: catch up)."""
        self._dsn = dsn
        self._wake = wake
        self._channels = dict(channels or {})
        self._check_interval = check_interval
        self.connects = 0  # how many times it (re)connected: observable in tests

    async def run(self) -> None:
        delay = 0.1
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda *_args: self._wake())
                for channel, callback in self._channels.items():
                    await conn.add_listener(
                        channel,
                        lambda _conn, _pid, _channel, payload, callback=callback: callback(payload),
                    )
                self.connects += 1
                delay = 0.1
                self._wake()  # catch up on anything committed while we were not listening
                for callback in self._channels.values():
                    callback("")
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._check_interval)
                    if not lost.is_set():
                        # A half-open connection raises here instead of hanging forever.
                        await conn.execute("SELECT 1", timeout=self._check_interval)
                log.warning("event listener connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("event listener unavailable", error=repr(error), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
