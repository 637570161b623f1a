"""The event stream: one hub per process, a cursor per subscriber, the table as the truth.

The hub tails the events table in stream order (adapters/postgres/events.py), woken by LISTEN/NOTIFY
and, as a safety net, by a slow periodic poll, and offers each event to the subscribers of its
application through bounded queues. A subscriber always catches up from the table first, then
takes live events from its queue, skipping anything at or before its cursor; when its queue
overflows (it reads too slowly) the hub stops feeding it, and it catches up from the table again.
Memory per subscriber is bounded by its queue, and nobody — the hub, other subscribers, the payment
path — ever waits for a slow reader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from uuid import UUID

import structlog

from portex_pay.domain.errors import (
    CursorExpired,
    FieldViolation,
    InvalidArgument,
    ShuttingDown,
)
from portex_pay.domain.events import START, Cursor, Event, MalformedCursor
from portex_pay.domain.text import single_line_problem
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import EventStore

log = structlog.get_logger(__name__)

_BATCH = 500
MAX_TYPES = 64  # event types in one filter
MAX_TYPE_CHARS = 64
_CLOSED = object()


@dataclass(frozen=True, slots=True)
class EventFilter:
    tg_payment_id: int | None = None
    tg_use_id: int | None = None
    types: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, *, tg_payment_id: int | None, tg_use_id: int | None, types: Iterable[str]
    ) -> EventFilter:
        """The filter a request asks for, or InvalidArgument: at most MAX_TYPES event types, each
        1-MAX_TYPE_CHARS characters on one line (domain/text.py)."""
        wanted = list(types)
        problem = None
        if len(wanted) > MAX_TYPES:
            problem = f"at most {MAX_TYPES} event types"
        for name in wanted:
            if problem is not None:
                break
            problem = single_line_problem(name)
            if problem is None and not 0 < len(name) <= MAX_TYPE_CHARS:
                problem = f"each event type must be 1-{MAX_TYPE_CHARS} characters"
        if problem is not None:
            raise InvalidArgument([FieldViolation("types", problem)])
        return cls(tg_payment_id=tg_payment_id, tg_use_id=tg_use_id, types=frozenset(wanted))

    def matches(self, event: Event) -> bool:
        if self.tg_payment_id is not None and event.tg_payment_id != self.tg_payment_id:
            return False
        if self.types and event.type not in self.types:
            return False
        if self.tg_use_id is not None:
            order = event.data.get("order") or {}
            return bool(order.get("tg_use_id") == self.tg_use_id)
        return True


@dataclass(eq=False)
class Subscription:
    """One subscriber's live events: a bounded FIFO the hub appends to, and at most one waiter.

    Delivering an event to a waiting subscriber costs one future's result: no task, no
    asyncio.Queue, no asyncio.wait, no timer made and cancelled per wait (a thousand
    subscribers wake for every event): one heartbeat timer per subscription is pushed back
    instead (`_tick`)."""

    application_id: UUID
    capacity: int
    overflowed: bool = False
    closed: bool = False
    _items: deque[Event] = field(default_factory=deque)
    _waiter: asyncio.Future[None] | None = None
    _deadline: float = 0.0  # when the waiting reader is due a heartbeat (loop time)
    _timer: asyncio.TimerHandle | None = None
    # Set by its stream when it filters: an event it would not yield is not queued and wakes
    # nobody (a stream per order would otherwise wake for every event of the application);
    # `passed` keeps the position such events moved to, for the next heartbeat.
    event_filter: EventFilter | None = None
    passed: Cursor | None = None

    def offer(self, event: Event) -> None:
        if self.overflowed or self.closed:
            return
        if self.event_filter is not None and not self.event_filter.matches(event):
            self.passed = event.cursor
            return
        if len(self._items) >= self.capacity:
            # Too slow: stop feeding it; it will catch up from the table on its own.
            self.overflowed = True
        else:
            self._items.append(event)
        self._notify()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self._notify()

    def stop_timer(self) -> None:
        """Drops the heartbeat timer (the stream has ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reset(self) -> None:
        """Forgets the queue before a catch-up read (which covers everything in it)."""
        self._items.clear()
        self.overflowed = False
        self.passed = None

    @property
    def pending(self) -> int:
        """Events waiting (bounded by `capacity`)."""
        return len(self._items)

    async def next(self, timeout: float) -> object:
        """The next live event, `_CLOSED`, or None on timeout or overflow."""
        if self.closed:
            return _CLOSED
        if self._items:
            return self._items.popleft()
        if self.overflowed:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._tick)
        try:
            await waiter
        finally:
            self._waiter = None
        if self.closed:
            return _CLOSED
        if self._items:
            return self._items.popleft()
        return None

    def _tick(self) -> None:
        """The heartbeat timer: wakes a reader that has waited its whole timeout, or follows
        the deadline its latest wait pushed back; a busy reader's next wait starts it again."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._tick)
        else:
            waiter.set_result(None)


class EventHub:
    def __init__(self, events: EventStore, *, queue_size: int, poll_interval: float) -> None:
        self._events = events
        self._queue_size = queue_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._subscribers: dict[UUID, set[Subscription]] = {}
        self._closed = False
        # How far the hub has read; None while nobody listens (then it reads nothing).
        self.head: Cursor | None = None
        self.delivered = 0
        self.cycles = 0  # wake-ups handled: observable in tests

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    def wake(self) -> None:
        self._wake.set()

    def queue_sizes(self) -> list[int]:
        """Events waiting in each subscriber's queue (bounded by the buffer size)."""
        return [sub.pending for subs in self._subscribers.values() for sub in subs]

    def overflowed_count(self) -> int:
        """Subscribers the hub no longer feeds (too slow): they catch up from the table."""
        return sum(sub.overflowed for subs in self._subscribers.values() for sub in subs)

    def subscribe(self, application_id: UUID) -> Subscription:
        if self._closed:
            raise ShuttingDown("this server is shutting down; resume on another replica")
        subscription = Subscription(application_id, self._queue_size)
        self._subscribers.setdefault(application_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.stop_timer()
        subs = self._subscribers.get(subscription.application_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscribers[subscription.application_id]

    def covers(self, subscription: Subscription, cursor: Cursor) -> bool:
        """Whether everything after `cursor` reaches `subscription` through its queue, with no
        catch-up read: the hub has read nothing past `cursor` and still feeds the subscription.
        (From its registration on, a subscription is offered everything the hub reads, and the
        hub reads only what lies after its head.) What the queue holds at or before `cursor`
        the reader skips."""
        head = self.head
        return not subscription.overflowed and head is not None and not cursor < head

    def close(self) -> None:
        """Ends every open stream at once (shutdown): they answer UNAVAILABLE."""
        self._closed = True
        for subs in self._subscribers.values():
            for subscription in subs:
                subscription.close()

    def seed(self, horizon: Cursor) -> None:
        """Gives an idle hub (head unknown) a place to start from: `horizon` must have been read
        (`EventStore.now()`) after the caller subscribed and before its first catch-up read, so
        that everything that catch-up misses lies after it. A hub that has a head keeps it: that
        head came from reads that ended before this call, so it is no later than `horizon`'s
        subscriber's catch-up either."""
        if self.head is None:
            self.head = horizon
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self._tail()
            except Exception as error:
                if not is_unavailable(error):
                    raise  # a bug: the supervisor logs it and starts the hub again
                log.warning("event hub read failed", error=repr(error))  # keep trying
            self.cycles += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def _tail(self) -> None:
        if not self._subscribers:
            # Nobody to feed: no query at all (a NOTIFY per committed payment would otherwise
            # cost one). The head is forgotten; the next subscriber seeds it (`seed`).
            self.head = None
            return
        if self.head is None:
            # Subscribed, not seeded yet: the subscriber's stream seeds it before catching up.
            # A horizon read here could lie past that catch-up's and skip what lies between.
            return
        while True:
            batch = await self._events.read_after(self.head, limit=_BATCH)
            for event in batch:
                for subscription in self._subscribers.get(event.application_id, ()):
                    subscription.offer(event)
                self.head = event.cursor
                self.delivered += 1
            if len(batch) < _BATCH:
                return


class EventStreamer:
    """StreamInvoiceEvents and ListEvents over the hub and the log."""

    def __init__(self, events: EventStore, hub: EventHub, *, heartbeat: float) -> None:
        self._events = events
        self._hub = hub
        self._heartbeat = heartbeat

    async def start_cursor(
        self, after_cursor: str, *, default_now: bool, field: str = "after_cursor"
    ) -> Cursor:
        """Where to start: right after `after_cursor` (refused, naming `field`, when malformed
        or pruned), else now or the start of retention."""
        if after_cursor:
            try:
                cursor = Cursor.decode(after_cursor)
            except MalformedCursor:
                raise InvalidArgument(
                    [FieldViolation(field, "not a cursor returned by this service")]
                ) from None
            pruned = await self._events.pruned_up_to()
            if pruned is not None and cursor <= pruned:
                raise CursorExpired(
                    "events after this cursor are past the retention period; "
                    "re-list with ListEvents from RETENTION_START",
                    metadata={"action": "relist"},
                )
            return cursor
        return await self._events.now() if default_now else START

    def subscribe(self, application_id: UUID) -> Subscription:
        """Registers for live events; from here on nothing is missed (pass it to `stream`)."""
        return self._hub.subscribe(application_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.stop_timer()
        self._hub.unsubscribe(subscription)

    async def stream(
        self, subscription: Subscription, event_filter: EventFilter, cursor: Cursor
    ) -> AsyncIterator[tuple[Cursor, Event | None]]:
        """Yields (cursor, event) in stream order, or (cursor, None) as a heartbeat; ends the
        subscription when it ends."""
        application_id = subscription.application_id
        everything = event_filter == EventFilter()  # the common case: no filter to apply
        if not everything:
            subscription.event_filter = event_filter
        # A first heartbeat at once: a client that started at NOW has a cursor to resume from
        # even if the connection breaks before any event arrives.
        yield cursor, None
        try:
            if self._hub.head is None:
                # The hub idles without a head while nobody listens: give it one, read now,
                # before the catch-up below (EventHub.seed says why that order matters).
                self._hub.seed(await self._events.now())
            while True:
                # Catch up from the table: everything up to the horizon, which is at least as
                # far as the hub had got when the queue was reset. Unless the hub covers the
                # cursor: a thousand NOW streams opening at once then cost no query each.
                if not self._hub.covers(subscription, cursor):
                    subscription.reset()
                    async for event in self._table_after(application_id, event_filter, cursor):
                        cursor = event.cursor
                        if event_filter.matches(event):
                            yield cursor, event
                # Live, until the queue overflows (then catch up again) or the server stops.
                while True:
                    item = await subscription.next(self._heartbeat)
                    if item is _CLOSED:
                        raise ShuttingDown(
                            "this server is shutting down; resume on another replica"
                        )
                    if item is None:
                        if subscription.overflowed:
                            break
                        # Idle, the queue empty: every event up to `passed` that this stream
                        # wants has been yielded; the heartbeat moves past the others.
                        passed = subscription.passed
                        if passed is not None and cursor < passed:
                            cursor = passed
                        yield cursor, None
                        continue
                    assert isinstance(item, Event)
                    if not cursor < item.cursor:
                        continue  # already caught up from the table
                    cursor = item.cursor
                    if everything or event_filter.matches(item):
                        yield cursor, item
        finally:
            self._hub.unsubscribe(subscription)

    async def page(
        self,
        application_id: UUID,
        event_filter: EventFilter,
        cursor: Cursor,
        page_size: int,
    ) -> tuple[list[Event], Cursor | None]:
        """One page after `cursor`, and where the next starts (None: nothing newer yet)."""
        found: list[Event] = []
        async for event in self._table_after(application_id, event_filter, cursor):
            if event_filter.matches(event):
                found.append(event)
                if len(found) == page_size:
                    return found, event.cursor
        return found, None

    async def _table_after(
        self, application_id: UUID, event_filter: EventFilter, cursor: Cursor
    ) -> AsyncIterator[Event]:
        """The application's events after `cursor` in the table (those of the filter's order
        only, when it names one), batch by batch until there are no more."""
        while True:
            batch = await self._events.read_after(
                cursor,
                limit=_BATCH,
                application_id=application_id,
                tg_payment_id=event_filter.tg_payment_id,
            )
            for event in batch:
                yield event
            if len(batch) < _BATCH:
                return
            cursor = batch[-1].cursor
