"""The event stream (service/stream.py: EventHub, EventStreamer) on the in-memory event log: a
stream resumes strictly after its cursor, catches up from the table and then goes live with no
gap and no duplicate, never passes an event that commits late, falls back to the table when it
reads too slowly, beats with its latest cursor when idle, and ends on shutdown. Time is driven by
a heartbeat of a few milliseconds and by waking the hub; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest

from portex_pay.domain.errors import CursorExpired, InvalidArgument, ShuttingDown
from portex_pay.domain.events import START, Cursor, Event, EventType
from portex_pay.service.stream import EventFilter, EventHub, EventStreamer, Subscription
from tests.unit.fakes import InMemoryEventLog, InMemoryPayments, MemoryDatabase

APP = uuid4()
OTHER_APP = uuid4()
HEARTBEAT = 0.01  # seconds: idle streams beat often, so no test waits long for one
WAIT = 5.0  # the longest any step may take before the test fails


class Reader:
    """Pulls a stream item by item: (cursor, event), or (cursor, None) for a heartbeat."""

    def __init__(self, stream: AsyncIterator[tuple[Cursor, Event | None]]) -> None:
        assert isinstance(stream, AsyncGenerator)
        self.stream = stream

    async def close(self) -> None:
        """The client goes away."""
        await self.stream.aclose()

    async def next(self) -> tuple[Cursor, Event | None]:
        async with asyncio.timeout(WAIT):
            return await anext(self.stream)

    async def heartbeat(self) -> Cursor:
        cursor, event = await self.next()
        assert event is None, f"an event where a heartbeat was due: {event}"
        return cursor

    async def events(self, count: int) -> list[Event]:
        """The next `count` events, heartbeats skipped."""
        found: list[Event] = []
        async with asyncio.timeout(WAIT):
            while len(found) < count:
                _, event = await anext(self.stream)
                if event is not None:
                    found.append(event)
        return found

    async def nothing_more(self, beats: int = 3) -> None:
        """The next few items are heartbeats: no event is pending."""
        for _ in range(beats):
            await self.heartbeat()


async def until(log: InMemoryEventLog, done: Callable[[], bool]) -> None:
    """Waits, step by step of whoever reads the log (the hub), until `done()` holds."""
    async with asyncio.timeout(WAIT):
        while not done():
            log.touched.clear()
            await log.touched.wait()


@dataclass
class World:
    db: MemoryDatabase
    log: InMemoryEventLog
    hub: EventHub
    streamer: EventStreamer

    def write(
        self,
        name: str,
        *,
        application_id: UUID = APP,
        event_type: EventType = EventType.PAYMENT_ANOMALY,
        order: int | None = None,
        user: int | None = None,
    ) -> None:
        """A committed event; `name` is its data's `name`."""
        data: dict[str, Any] = {"name": name}
        if user is not None:
            data["order"] = {"tg_use_id": user}
        self.db.record_event(application_id, event_type, data, tg_payment_id=order)

    async def publish(self) -> None:
        """Wakes the hub and waits until it has tailed every event readable now."""
        readable = await self.log.read_after(START, limit=10**6)
        target = max((event.cursor for event in readable), default=START)
        self.hub.wake()
        # With nobody listening the hub reads nothing, and until a stream has seeded it the hub
        # has no head: the streams catch up from the table instead.
        if self.hub.subscriber_count and self.hub.head is not None:
            await until(self.log, lambda: self.hub.head is not None and self.hub.head >= target)

    def open(
        self, event_filter: EventFilter | None = None, cursor: Cursor = START
    ) -> tuple[Subscription, Reader]:
        subscription = self.streamer.subscribe(APP)
        stream = self.streamer.stream(subscription, event_filter or EventFilter(), cursor)
        return subscription, Reader(stream)


@pytest.fixture
async def make_world() -> AsyncIterator[Callable[..., Awaitable[World]]]:
    tasks: list[asyncio.Task[None]] = []
    hubs: list[EventHub] = []

    async def make(queue_size: int = 100) -> World:
        db = MemoryDatabase()
        log = InMemoryEventLog(db)
        # The periodic poll is the hub's safety net; these tests wake it explicitly instead.
        hub = EventHub(log, queue_size=queue_size, poll_interval=3600.0)
        tasks.append(asyncio.create_task(hub.run(), name="event-hub"))
        hubs.append(hub)
        return World(db, log, hub, EventStreamer(log, hub, heartbeat=HEARTBEAT))

    yield make
    for hub in hubs:
        hub.close()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def names(events: list[Event]) -> list[str]:
    return [event.data["name"] for event in events]


async def test_a_stream_opens_with_a_heartbeat_at_its_cursor(make_world) -> None:
    """A client that started at NOW has a cursor to resume from before any event arrives."""
    world = await make_world()
    now = await world.log.now()
    _, reader = world.open(cursor=now)
    assert await reader.heartbeat() == now


async def test_a_stream_resumes_strictly_after_its_cursor(make_world) -> None:
    world = await make_world()
    for n in range(5):
        world.write(f"e{n}")
    all_events = await world.log.read_after(START, limit=10)
    _, reader = world.open(cursor=all_events[1].cursor)
    await reader.heartbeat()
    assert names(await reader.events(3)) == ["e2", "e3", "e4"]
    await reader.nothing_more()


async def test_it_catches_up_then_goes_live_with_no_gap_and_no_duplicate(make_world) -> None:
    world = await make_world()
    world.write("before")
    _, reader = world.open()
    await reader.heartbeat()
    # Caught up from the table, and offered live as well: the hub tails it only now.
    (caught_up,) = await reader.events(1)
    await world.publish()
    world.write("after")
    await world.publish()
    (live,) = await reader.events(1)
    assert (names([caught_up]), names([live])) == (["before"], ["after"])
    assert caught_up.cursor < live.cursor
    await reader.nothing_more()


async def test_events_come_in_stream_order_across_catch_up_and_live(make_world) -> None:
    world = await make_world()
    for n in range(3):
        world.write(f"e{n}")
    _, reader = world.open()
    first = await reader.events(2)
    for n in range(3, 6):
        world.write(f"e{n}")
    await world.publish()
    rest = await reader.events(4)
    assert names(first + rest) == [f"e{n}" for n in range(6)]
    cursors = [event.cursor for event in first + rest]
    assert cursors == sorted(set(cursors))


async def test_an_event_that_commits_late_is_not_passed_over(make_world) -> None:
    world = await make_world()
    payments = InMemoryPayments(db=world.db)
    _, reader = world.open()
    await reader.heartbeat()
    async with payments.transaction() as slow:
        await slow.events.add(APP, None, EventType.PAYMENT_ANOMALY, {"name": "slow"})
        world.write("quick")
        world.hub.wake()
        # Neither is readable while the unit of work that wrote first is open.
        assert await reader.heartbeat() == START
        assert await reader.heartbeat() == START
    await world.publish()
    assert names(await reader.events(2)) == ["slow", "quick"]


async def test_a_slow_reader_falls_back_to_the_table_and_misses_nothing(make_world) -> None:
    world = await make_world(queue_size=2)
    subscription, reader = world.open()
    await reader.heartbeat()
    await reader.heartbeat()  # caught up (nothing yet), live, and now not reading
    for n in range(10):
        world.write(f"e{n}")
    await world.publish()  # nobody waited for the slow reader
    assert subscription.overflowed
    assert world.hub.queue_sizes() == [2]
    reads = world.log.reads
    assert names(await reader.events(10)) == [f"e{n}" for n in range(10)]
    assert world.log.reads > reads  # the rest came from the table
    await reader.nothing_more()


async def test_an_idle_stream_beats_with_its_latest_cursor(make_world) -> None:
    world = await make_world()
    _, reader = world.open(EventFilter(types=frozenset({"order.paid"})))
    await reader.heartbeat()
    world.write("not wanted", event_type=EventType.ORDER_CREATED, order=1)
    world.write("not wanted either", event_type=EventType.ORDER_CREATED, order=1)
    await world.publish()
    (*_, last) = await world.log.read_after(START, limit=10)
    # Skipped events still move the position: a resumed stream does not read them again.
    async with asyncio.timeout(WAIT):
        while (beat := await reader.heartbeat()) != last.cursor:
            assert beat < last.cursor


async def test_a_stream_yields_only_what_its_filter_asks_for(make_world) -> None:
    world = await make_world()
    wanted = EventFilter.of(tg_payment_id=None, tg_use_id=42, types=["order.paid"])

    def write_some(phase: str) -> None:
        world.write(f"{phase}-paid-42", event_type=EventType.ORDER_PAID, order=1, user=42)
        world.write(f"{phase}-created-42", event_type=EventType.ORDER_CREATED, order=1, user=42)
        world.write(f"{phase}-paid-43", event_type=EventType.ORDER_PAID, order=2, user=43)
        world.write(
            f"{phase}-other-app", event_type=EventType.ORDER_PAID, user=42, application_id=OTHER_APP
        )

    write_some("table")
    _, reader = world.open(wanted)
    assert names(await reader.events(1)) == ["table-paid-42"]
    write_some("live")
    await world.publish()
    assert names(await reader.events(1)) == ["live-paid-42"]
    await reader.nothing_more()


async def test_an_order_filter_reads_only_that_orders_events(make_world) -> None:
    world = await make_world()
    world.write("one", order=1)
    world.write("two", order=2)
    _, reader = world.open(EventFilter(tg_payment_id=2))
    assert names(await reader.events(1)) == ["two"]
    world.write("two again", order=2)
    world.write("one again", order=1)
    await world.publish()
    assert names(await reader.events(1)) == ["two again"]
    await reader.nothing_more()


async def test_shutdown_ends_every_stream_and_refuses_new_ones(make_world) -> None:
    world = await make_world()
    _, reader = world.open()
    await reader.heartbeat()
    await reader.heartbeat()  # live
    world.hub.close()
    with pytest.raises(ShuttingDown):
        await reader.next()
    assert world.hub.subscriber_count == 0
    with pytest.raises(ShuttingDown):
        world.streamer.subscribe(APP)


async def test_a_stream_the_client_leaves_is_unsubscribed(make_world) -> None:
    world = await make_world()
    _, reader = world.open()
    await reader.heartbeat()
    await reader.heartbeat()
    assert world.hub.subscriber_count == 1
    await reader.close()
    assert world.hub.subscriber_count == 0


async def test_the_hub_outlives_a_failed_read(make_world) -> None:
    world = await make_world()
    _, reader = world.open()
    await reader.heartbeat()
    await reader.heartbeat()  # live: only the hub reads from here on
    world.log.read_errors.append(ConnectionError("the database is away"))
    world.write("e0")
    world.hub.wake()
    await until(world.log, lambda: not world.log.read_errors)
    await world.publish()  # woken again, it reads on
    assert names(await reader.events(1)) == ["e0"]


async def cycled(hub: EventHub) -> None:
    """Wakes the hub and waits until it has handled that wake-up."""
    cycles = hub.cycles
    hub.wake()
    async with asyncio.timeout(WAIT):
        while hub.cycles <= cycles:  # noqa: ASYNC110 - nothing but the count marks a cycle
            await asyncio.sleep(0)


async def test_a_hub_with_no_subscriber_asks_the_database_nothing(make_world) -> None:
    world = await make_world()
    for n in range(3):
        world.write(f"e{n}")
        await cycled(world.hub)  # a NOTIFY per commit
    assert (world.log.reads, world.log.nows) == (0, 0)
    assert world.hub.head is None


async def test_events_committed_while_nobody_listened_reach_later_streams(make_world) -> None:
    """A stream resuming from a cursor before them gets them in order; one started at NOW gets
    everything after it; and so do both once live, with nothing lost, doubled or reordered."""
    world = await make_world()
    world.write("e0")
    earlier = await world.streamer.start_cursor("", default_now=True)
    for n in (1, 2):
        world.write(f"e{n}")
        await cycled(world.hub)  # nobody listens: the hub forgets its head
    assert world.hub.head is None
    _, resumed = world.open(cursor=earlier)
    await resumed.heartbeat()  # its start
    assert names(await resumed.events(2)) == ["e1", "e2"]
    now = await world.streamer.start_cursor("", default_now=True)
    _, fresh = world.open(cursor=now)
    await fresh.heartbeat()
    await fresh.heartbeat()  # caught up (nothing after NOW yet): live
    for n in (3, 4, 5):
        world.write(f"e{n}")
    await world.publish()
    assert names(await fresh.events(3)) == ["e3", "e4", "e5"]
    assert names(await resumed.events(3)) == ["e3", "e4", "e5"]
    await fresh.nothing_more()
    await resumed.nothing_more()


async def test_where_a_stream_starts(make_world) -> None:
    world = await make_world()
    world.write("e0")
    streamer = world.streamer
    assert await streamer.start_cursor("", default_now=False) == START
    assert await streamer.start_cursor("", default_now=True) == await world.log.now()
    cursor = Cursor(7, 9)
    assert await streamer.start_cursor(cursor.encode(), default_now=True) == cursor
    with pytest.raises(InvalidArgument) as invalid:
        await streamer.start_cursor("not-a-cursor", default_now=True, field="page_token")
    assert [violation.field for violation in invalid.value.violations] == ["page_token"]
    await world.log.prune(-1.0)
    pruned = await world.log.pruned_up_to()
    assert pruned is not None
    for gone in (pruned, START):
        with pytest.raises(CursorExpired):
            await streamer.start_cursor(gone.encode(), default_now=True)


async def test_list_events_pages_through_what_matches(make_world) -> None:
    world = await make_world()
    for n in range(7):
        event_type = EventType.ORDER_PAID if n % 3 else EventType.ORDER_CREATED
        world.write(f"e{n}", event_type=event_type, order=1)
    wanted = EventFilter(types=frozenset({"order.paid"}))
    pages: list[list[str]] = []
    cursor: Cursor | None = START
    while cursor is not None:
        found, cursor = await world.streamer.page(APP, wanted, cursor, 2)
        pages.append(names(found))
    assert pages == [["e1", "e2"], ["e4", "e5"], []]
    assert await world.streamer.page(OTHER_APP, EventFilter(), START, 10) == ([], None)


async def test_a_stream_the_hub_already_covers_opens_without_a_query(make_world) -> None:
    """A NOW stream that opens while the hub has read nothing past NOW needs no catch-up read
    (a thousand of them opening at once would cost a thousand queries), and misses nothing."""
    world = await make_world()
    _, first = world.open()
    await first.heartbeat()
    world.write("e0")
    await world.publish()
    assert names(await first.events(1)) == ["e0"]
    now = await world.streamer.start_cursor("", default_now=True)
    assert world.hub.head is not None and not now < world.hub.head
    reads = world.log.application_reads
    _, fresh = world.open(cursor=now)
    await fresh.heartbeat()  # its start
    await fresh.heartbeat()  # live
    assert world.log.application_reads == reads
    for n in (1, 2):
        world.write(f"e{n}")
    await world.publish()
    assert names(await fresh.events(2)) == ["e1", "e2"]
    assert names(await first.events(2)) == ["e1", "e2"]
    await fresh.nothing_more()


async def test_a_stream_behind_the_hub_still_catches_up_from_the_table(make_world) -> None:
    world = await make_world()
    _, first = world.open()
    await first.heartbeat()
    before = await world.log.now()
    world.write("e0")
    await world.publish()  # the hub has read e0: a stream from `before` must read it itself
    reads = world.log.application_reads
    _, late = world.open(cursor=before)
    await late.heartbeat()
    assert names(await late.events(1)) == ["e0"]
    assert world.log.application_reads == reads + 1
    await late.nothing_more()


async def test_events_a_stream_filters_out_are_not_queued(make_world) -> None:
    """A stream per order does not wake, nor fill its queue, for the application's other
    events: the hub applies its filter; its heartbeats still move past them."""
    world = await make_world(queue_size=2)
    subscription, reader = world.open(EventFilter(types=frozenset({"order.paid"})))
    await reader.heartbeat()
    await reader.heartbeat()  # caught up, live, and now not reading
    reads = world.log.application_reads
    for n in range(10):
        world.write(f"unwanted{n}", event_type=EventType.ORDER_CREATED, order=1)
    world.write("paid", event_type=EventType.ORDER_PAID, order=1)
    world.write("unwanted too", event_type=EventType.ORDER_CREATED, order=1)
    await world.publish()
    assert world.hub.queue_sizes() == [1]
    assert not subscription.overflowed  # eleven unwanted events took none of its two places
    assert names(await reader.events(1)) == ["paid"]
    (*_, last) = await world.log.read_after(START, limit=20)
    assert await reader.heartbeat() == last.cursor
    assert world.log.application_reads == reads  # all of it live, no catch-up
